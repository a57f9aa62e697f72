//! Secret stores a key pool's secrets may live in besides the environment
//! and a file (those are in `key_rotation::secrets`): HashiCorp Vault or
//! OpenBao ([`vault`]). Each implements `key_rotation::secrets::SecretStore`,
//! read at start-up and at every refresh.
//!
//! These are thin clients over each store's documented HTTP API on the
//! reqwest (rustls) client the server already has: a store's own SDK would
//! add a second HTTP stack to the build for the two or three calls made.

pub mod aws;
pub mod vault;
