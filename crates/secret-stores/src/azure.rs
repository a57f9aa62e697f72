//! Azure Key Vault's secrets API, with a token from Microsoft Entra.
//!
//! Layout (the old deployment's): one secret per key, named
//! `<prefix><key_id>` with `_` mapped to `-` (Key Vault names allow only
//! letters, digits and `-`); the prefix is empty by default.
//!
//! Credentials:
//! - client credentials (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!   `AZURE_CLIENT_SECRET`) at `<authority>/<tenant>/oauth2/v2.0/token`;
//! - a managed identity, only when asked for: the instance metadata
//!   service (or App Service's `IDENTITY_ENDPOINT` with its header).
//!   Nothing here probes a metadata address on its own.
//!
//! The token's scope comes from the vault's own host (`<name>.vault.azure.net`
//! → `https://vault.azure.net/.default`, and likewise in the national
//! clouds) rather than from the 401 challenge a server sends: a mistyped
//! vault URL must not be able to choose which resource we get a token for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use key_rotation::secrets::{SecretSnapshot, SecretStore, StoreFailure};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Key Vault's REST API version used for reads.
const API_VERSION: &str = "7.5";
/// Public cloud's resource, for vault URLs that name none (a proxy).
const DEFAULT_RESOURCE: &str = "https://vault.azure.net";
/// A token is replaced when less than this is left of it.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

pub enum AzureCredential {
    ClientSecret {
        tenant_id: String,
        client_id: String,
        client_secret: SecretString,
        /// `AZURE_AUTHORITY_HOST`, default `https://login.microsoftonline.com`.
        authority_host: String,
    },
    ManagedIdentity {
        /// The token endpoint: the instance metadata service's by default.
        endpoint: String,
        /// App Service's `IDENTITY_HEADER`; set, the endpoint is App
        /// Service's and speaks its API version.
        identity_header: Option<SecretString>,
        /// A user-assigned identity's client id.
        client_id: Option<String>,
    },
}

pub struct AzureSettings {
    pub vault_url: String,
    pub credential: AzureCredential,
    pub prefix: String,
    /// PEM of a private CA to trust (`AZURE_CA_CERT`).
    pub ca_cert: Option<Vec<u8>>,
}

struct AccessToken {
    token: SecretString,
    expires: Instant,
}

pub struct AzureStore {
    http: reqwest::Client,
    settings: AzureSettings,
    resource: String,
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

impl AzureStore {
    pub fn new(settings: AzureSettings) -> Result<Self, StoreFailure> {
        let http = crate::http_client(settings.ca_cert.as_deref(), "AZURE_CA_CERT").map_err(|cause| StoreFailure {
            store: describe(&settings),
            cause,
            denied: false,
        })?;
        let resource = resource_of(&settings.vault_url);
        Ok(Self { http, settings, resource, token: tokio::sync::Mutex::new(None) })
    }

    fn failure(&self, cause: impl Into<String>, denied: bool) -> StoreFailure {
        StoreFailure { store: self.describe(), cause: cause.into(), denied }
    }

    /// The cached token, or a new one when it is near its end.
    async fn token(&self, renew: bool) -> Result<SecretString, StoreFailure> {
        let mut cached = self.token.lock().await;
        if let Some(current) = cached.as_ref().filter(|_| !renew) {
            if current.expires.saturating_duration_since(Instant::now()) > TOKEN_MARGIN {
                return Ok(current.token.clone());
            }
        }
        let fresh = self.new_token().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn new_token(&self) -> Result<AccessToken, StoreFailure> {
        let request = match &self.settings.credential {
            AzureCredential::ClientSecret { tenant_id, client_id, client_secret, authority_host } => {
                let url = format!("{}/{tenant_id}/oauth2/v2.0/token", authority_host.trim_end_matches('/'));
                let scope = format!("{}/.default", self.resource);
                self.http.post(url).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose_secret()),
                    ("scope", scope.as_str()),
                ])
            }
            AzureCredential::ManagedIdentity { endpoint, identity_header, client_id } => {
                let mut query = vec![("resource", self.resource.as_str())];
                if let Some(client_id) = client_id {
                    query.push(("client_id", client_id.as_str()));
                }
                let request = self.http.get(endpoint);
                match identity_header {
                    Some(header) => {
                        query.push(("api-version", "2019-08-01"));
                        request.header("X-IDENTITY-HEADER", header.expose_secret()).query(&query)
                    }
                    None => {
                        query.push(("api-version", "2018-02-01"));
                        request.header("Metadata", "true").query(&query)
                    }
                }
            }
        };
        let response = request.send().await.map_err(|err| self.failure(crate::transport_cause(err), false))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // Entra's `error` and its AADSTS number say what is wrong; the
            // description may quote the request, so it is not repeated.
            let error = answer["error"].as_str().unwrap_or("no error code");
            let code = answer["error_codes"][0].as_u64().map(|code| format!(" AADSTS{code}")).unwrap_or_default();
            let denied = matches!(status.as_u16(), 400 | 401 | 403);
            return Err(self.failure(format!("the token request was refused ({status} {error}{code})"), denied));
        }
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| self.failure("the token endpoint answered without access_token", false))?;
        // Entra writes a number; the metadata service writes a string.
        let lifetime = match &answer["expires_in"] {
            Value::Number(n) => n.as_u64(),
            Value::String(text) => text.parse().ok(),
            _ => None,
        }
        .unwrap_or(300);
        Ok(AccessToken {
            token: SecretString::from(token.to_string()),
            expires: Instant::now() + Duration::from_secs(lifetime),
        })
    }

    /// One secret's current value; `None` when it is not there or disabled.
    async fn get(&self, name: &str) -> Result<Option<String>, StoreFailure> {
        let url = format!("{}/secrets/{name}", self.settings.vault_url.trim_end_matches('/'));
        let mut renewed = false;
        loop {
            let token = self.token(renewed).await?;
            let response = self
                .http
                .get(&url)
                .query(&[("api-version", API_VERSION)])
                .bearer_auth(token.expose_secret())
                .send()
                .await
                .map_err(|err| self.failure(crate::transport_cause(err), false))?;
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            let inner = answer["error"]["innererror"]["code"].as_str().unwrap_or_default();
            match status.as_u16() {
                200 => return Ok(answer["value"].as_str().map(str::to_string)),
                404 if code == "SecretNotFound" => return Ok(None),
                // A disabled secret no longer holds the key's secret.
                403 if inner == "SecretDisabled" => return Ok(None),
                // The token may have been revoked or have run out early: one new one.
                401 if !renewed => renewed = true,
                401 | 403 => {
                    return Err(self.failure(format!("permission denied reading {name} ({status} {code})"), true))
                }
                _ => return Err(self.failure(format!("reading {name} answered {status} {code}"), false)),
            }
        }
    }

    fn secret_name(&self, key_id: &str) -> String {
        format!("{}{}", self.settings.prefix, key_id.replace('_', "-"))
    }
}

/// The resource a vault's token is for: `https://vault.azure.net` for
/// `https://<name>.vault.azure.net`, `https://vault.azure.cn` for China's.
fn resource_of(vault_url: &str) -> String {
    let host = vault_url.split("://").nth(1).unwrap_or_default().split(['/', ':']).next().unwrap_or_default();
    match host.find(".vault.") {
        Some(at) => format!("https://{}", &host[at + 1..]),
        None => DEFAULT_RESOURCE.to_string(),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn describe(settings: &AzureSettings) -> String {
    format!("azure key vault at {}", settings.vault_url)
}

#[async_trait::async_trait]
impl SecretStore for AzureStore {
    fn describe(&self) -> String {
        describe(&self.settings)
    }

    async fn fetch(&self, key_ids: Option<&[String]>) -> Result<SecretSnapshot, StoreFailure> {
        let Some(ids) = key_ids else {
            return Err(self.failure("the per-key layout needs KEYS_FILE to name the keys", false));
        };
        if let Some(id) = ids.iter().find(|id| !valid_name(&self.secret_name(id))) {
            return Err(self.failure(
                format!(
                    "key id {id:?} maps to the secret name {:?}, which Key Vault does not allow (letters, digits and -, at most 127)",
                    self.secret_name(id)
                ),
                false,
            ));
        }
        let mut names = BTreeMap::new();
        for id in ids {
            if let Some(other) = names.insert(self.secret_name(id), id) {
                return Err(self.failure(
                    format!("key ids {other:?} and {id:?} both map to the secret name {:?}", self.secret_name(id)),
                    false,
                ));
            }
        }
        // The token first, once, so that parallel reads share it.
        self.token(false).await?;
        let reads = ids.iter().map(|id| async move { (id, self.get(&self.secret_name(id)).await) });
        let mut found = BTreeMap::new();
        for (id, read) in futures::future::join_all(reads).await {
            // A failed read fails the whole fetch: a half-read store must
            // not retire the keys it could not read.
            if let Some(secret) = crate::secret(read?.as_deref()) {
                found.insert(id.clone(), secret);
            }
        }
        let places = ids.iter().map(|id| (id.clone(), format!("Key Vault secret {}", self.secret_name(id)))).collect();
        Ok(SecretSnapshot::new(found, places))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_for_the_vaults_own_cloud() {
        assert_eq!(resource_of("https://algo.vault.azure.net"), "https://vault.azure.net");
        assert_eq!(resource_of("https://algo.vault.azure.net:443/"), "https://vault.azure.net");
        assert_eq!(resource_of("https://algo.vault.azure.cn"), "https://vault.azure.cn");
        assert_eq!(resource_of("https://algo.vault.usgovcloudapi.net"), "https://vault.usgovcloudapi.net");
        assert_eq!(resource_of("https://127.0.0.1:8443"), "https://vault.azure.net");
    }

    #[tokio::test]
    async fn two_key_ids_that_name_one_secret_are_refused_before_any_request() {
        let store = AzureStore::new(AzureSettings {
            vault_url: "https://algo.vault.azure.net".into(),
            credential: AzureCredential::ManagedIdentity {
                endpoint: "http://127.0.0.1:9/token".into(),
                identity_header: None,
                client_id: None,
            },
            prefix: String::new(),
            ca_cert: None,
        })
        .unwrap();
        let ids = ["flash_01".to_string(), "flash-01".to_string()];
        let Err(failure) = store.fetch(Some(&ids)).await else { panic!("two keys shared one secret") };
        assert!(failure.cause.contains("both map to the secret name \"flash-01\""), "{failure}");
    }

    #[test]
    fn key_ids_map_to_names_key_vault_allows() {
        assert!(valid_name("gemini-key-1"));
        assert!(!valid_name("gemini_key_1"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(128)));
    }
}
