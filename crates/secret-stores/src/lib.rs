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

use key_rotation::secrets::ApiKeySecret;

/// Why a request to a store failed, without the request: its URL or
/// headers may carry a token.
fn transport_cause(err: reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "unreachable (connection refused or no route)".to_string()
    } else {
        format!("request failed: {}", err.without_url())
    }
}

/// A key's secret as a store holds it: trimmed, and absent when blank.
fn secret(value: Option<&str>) -> Option<ApiKeySecret> {
    value.map(str::trim).filter(|s| !s.is_empty()).map(ApiKeySecret::new)
}
