//! Secret stores a key pool's secrets may live in besides the environment
//! and a file (those are in `key_rotation::secrets`): HashiCorp Vault or
//! OpenBao ([`vault`]), AWS Secrets Manager ([`aws`]) and Azure Key Vault
//! ([`azure`]). Each implements `key_rotation::secrets::SecretStore`,
//! read at start-up and at every refresh.
//!
//! These are thin clients over each store's documented HTTP API on the
//! reqwest (rustls) client the server already has: a store's own SDK would
//! add a second HTTP stack to the build for the two or three calls made.

pub mod aws;
pub mod azure;
pub mod vault;

use std::time::Duration;

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

/// How long one call to a store may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client of one store, trusting a private CA besides the public
/// roots when one is given (`ca_setting` names where it came from).
fn http_client(ca_pem: Option<&[u8]>, ca_setting: &str) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(CALL_TIMEOUT);
    if let Some(pem) = ca_pem {
        let certificate = reqwest::Certificate::from_pem(pem)
            .map_err(|err| format!("{ca_setting} is not a PEM certificate: {err}"))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|err| format!("cannot build an HTTP client: {err}"))
}
