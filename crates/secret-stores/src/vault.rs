//! HashiCorp Vault or OpenBao, KV version 2, over its documented HTTP API.
//!
//! Layouts:
//! - per key (the old deployment's, the default): one secret per key at
//!   `<mount>/data/<path>/<key_id>`, field `value`;
//! - single: one secret at `<mount>/data/<path>` whose fields are key ids.
//!
//! Auth: a token (`VAULT_TOKEN`), a token file re-read at every fetch (an
//! agent may rotate it), or AppRole (`VAULT_ROLE_ID` + `VAULT_SECRET_ID`),
//! whose token is renewed before it expires and replaced by a new login
//! when renewal is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use key_rotation::secrets::{SecretSnapshot, SecretStore, StoreFailure};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    PerKey,
    Single,
}

pub enum VaultAuth {
    Token(SecretString),
    TokenFile(PathBuf),
    AppRole { role_id: String, secret_id: SecretString },
}

pub struct VaultSettings {
    pub addr: String,
    pub auth: VaultAuth,
    pub mount: String,
    pub path: String,
    pub layout: Layout,
    /// PEM of a private CA to trust.
    pub ca_cert: Option<Vec<u8>>,
}

/// A token from a login, and when to renew it.
struct Lease {
    token: SecretString,
    renewable: bool,
    /// When it expires; `None` for a token that does not.
    expires: Option<Instant>,
    ttl: Duration,
}

pub struct VaultStore {
    http: reqwest::Client,
    settings: VaultSettings,
    lease: tokio::sync::Mutex<Option<Lease>>,
}

impl VaultStore {
    pub fn new(settings: VaultSettings) -> Result<Self, StoreFailure> {
        let http = crate::http_client(settings.ca_cert.as_deref(), "VAULT_CACERT").map_err(|cause| StoreFailure {
            store: describe(&settings),
            cause,
            denied: false,
        })?;
        Ok(Self { http, settings, lease: tokio::sync::Mutex::new(None) })
    }

    fn failure(&self, cause: impl Into<String>, denied: bool) -> StoreFailure {
        StoreFailure { store: self.describe(), cause: cause.into(), denied }
    }

    fn url(&self, api_path: &str) -> String {
        format!("{}/v1/{api_path}", self.settings.addr.trim_end_matches('/'))
    }

    /// Why a request failed, never with the request (it carries the token).
    fn transport(&self, err: reqwest::Error) -> StoreFailure {
        self.failure(crate::transport_cause(err), false)
    }

    /// The token to use now: the configured one, the file's, or AppRole's
    /// (logging in, or renewing a lease near its end).
    async fn token(&self) -> Result<SecretString, StoreFailure> {
        match &self.settings.auth {
            VaultAuth::Token(token) => Ok(token.clone()),
            VaultAuth::TokenFile(path) => std::fs::read_to_string(path)
                .map(|text| SecretString::from(text.trim().to_string()))
                .map_err(|err| self.failure(format!("VAULT_TOKEN_FILE {}: {err}", path.display()), false)),
            VaultAuth::AppRole { role_id, secret_id } => {
                let mut lease = self.lease.lock().await;
                if let Some(current) = lease.as_ref() {
                    let left = current.expires.map(|at| at.saturating_duration_since(Instant::now()));
                    match left {
                        None => return Ok(current.token.clone()),
                        // More than a third of its life left: use it as it is.
                        Some(left) if left > current.ttl / 3 => return Ok(current.token.clone()),
                        Some(left) if current.renewable && !left.is_zero() => {
                            if let Ok(renewed) = self.renew(&current.token).await {
                                let token = renewed.token.clone();
                                *lease = Some(renewed);
                                return Ok(token);
                            }
                        }
                        Some(_) => {}
                    }
                }
                let fresh = self.login(role_id, secret_id).await?;
                let token = fresh.token.clone();
                *lease = Some(fresh);
                Ok(token)
            }
        }
    }

    async fn login(&self, role_id: &str, secret_id: &SecretString) -> Result<Lease, StoreFailure> {
        let body = serde_json::json!({ "role_id": role_id, "secret_id": secret_id.expose_secret() });
        let response = self
            .http
            .post(self.url("auth/approle/login"))
            .json(&body)
            .send()
            .await
            .map_err(|err| self.transport(err))?;
        let status = response.status();
        if status.as_u16() == 400 || status.as_u16() == 403 {
            return Err(self.failure(format!("AppRole login refused ({status})"), true));
        }
        if !status.is_success() {
            return Err(self.failure(format!("AppRole login answered {status}"), false));
        }
        let answer: Value = response.json().await.map_err(|err| self.transport(err))?;
        lease_from(&answer["auth"]).ok_or_else(|| self.failure("AppRole login answered without a token", false))
    }

    async fn renew(&self, token: &SecretString) -> Result<Lease, StoreFailure> {
        let response = self
            .http
            .post(self.url("auth/token/renew-self"))
            .header("X-Vault-Token", token.expose_secret())
            .json(&serde_json::json!({}))
            .send()
            .await
            .map_err(|err| self.transport(err))?;
        if !response.status().is_success() {
            return Err(self.failure(format!("token renewal answered {}", response.status()), false));
        }
        let answer: Value = response.json().await.map_err(|err| self.transport(err))?;
        lease_from(&answer["auth"]).ok_or_else(|| self.failure("token renewal answered without a token", false))
    }

    /// One KV v2 secret's fields; `None` when there is no such secret.
    async fn read(
        &self,
        token: &SecretString,
        secret_path: &str,
    ) -> Result<Option<serde_json::Map<String, Value>>, StoreFailure> {
        let api_path = format!("{}/data/{}", self.settings.mount.trim_matches('/'), secret_path.trim_matches('/'));
        let response = self
            .http
            .get(self.url(&api_path))
            .header("X-Vault-Token", token.expose_secret())
            .send()
            .await
            .map_err(|err| self.transport(err))?;
        match response.status().as_u16() {
            200 => {
                let answer: Value = response.json().await.map_err(|err| self.transport(err))?;
                Ok(answer["data"]["data"].as_object().cloned())
            }
            404 => Ok(None),
            401 | 403 => Err(self.failure(format!("permission denied reading {api_path}"), true)),
            status => Err(self.failure(format!("reading {api_path} answered {status}"), false)),
        }
    }

    fn place(&self, key_id: &str) -> String {
        match self.settings.layout {
            Layout::PerKey => format!(
                "Vault {}/data/{}/{key_id} field \"value\"",
                self.settings.mount,
                self.settings.path.trim_matches('/')
            ),
            Layout::Single => format!("Vault {}/data/{} field \"{key_id}\"", self.settings.mount, self.settings.path),
        }
    }
}

fn lease_from(auth: &Value) -> Option<Lease> {
    let token = auth["client_token"].as_str()?.to_string();
    let ttl = Duration::from_secs(auth["lease_duration"].as_u64().unwrap_or(0));
    Some(Lease {
        token: SecretString::from(token),
        renewable: auth["renewable"].as_bool().unwrap_or(false),
        expires: (!ttl.is_zero()).then(|| Instant::now() + ttl),
        ttl,
    })
}

fn describe(settings: &VaultSettings) -> String {
    format!("vault at {}", settings.addr)
}

#[async_trait::async_trait]
impl SecretStore for VaultStore {
    fn describe(&self) -> String {
        describe(&self.settings)
    }

    async fn fetch(&self, key_ids: Option<&[String]>) -> Result<SecretSnapshot, StoreFailure> {
        let token = self.token().await?;
        let mut found = BTreeMap::new();
        match self.settings.layout {
            Layout::Single => {
                let fields = self.read(&token, &self.settings.path).await?.unwrap_or_default();
                for (key_id, value) in &fields {
                    let wanted = key_ids.is_none_or(|ids| ids.contains(key_id));
                    if let (true, Some(secret)) = (wanted, crate::secret(value.as_str())) {
                        found.insert(key_id.clone(), secret);
                    }
                }
            }
            Layout::PerKey => {
                let Some(ids) = key_ids else {
                    return Err(self.failure("the per-key layout needs KEYS_FILE to name the keys", false));
                };
                let base = self.settings.path.trim_matches('/').to_string();
                let reads = ids.iter().map(|id| {
                    let token = token.clone();
                    let path = format!("{base}/{id}");
                    async move { (id, self.read(&token, &path).await) }
                });
                for (id, read) in futures::future::join_all(reads).await {
                    // A failed read fails the whole fetch: a half-read store
                    // must not retire the keys it could not read.
                    if let Some(secret) =
                        read?.and_then(|fields| crate::secret(fields.get("value").and_then(Value::as_str)))
                    {
                        found.insert(id.clone(), secret);
                    }
                }
            }
        }
        let places = key_ids.unwrap_or_default().iter().map(|id| (id.clone(), self.place(id))).collect();
        Ok(SecretSnapshot::new(found, places))
    }
}
