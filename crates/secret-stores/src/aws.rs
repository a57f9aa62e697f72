//! AWS Secrets Manager over its JSON API (`GetSecretValue`), signed with
//! SigV4 by AWS's own `aws-sigv4` on our reqwest client.
//!
//! Layouts:
//! - per key (the old deployment's, the default): one secret per key named
//!   `<prefix><key_id>` (prefix `algoagent/`), its `SecretString` the secret;
//! - `AWS_SECRET_ID`: one secret whose `SecretString` is a JSON object of
//!   key id → secret.
//!
//! Credentials, in the SDKs' order: the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then the shared
//! credentials file's profile (`AWS_PROFILE`, default `default`), read
//! again at every fetch so a rotated file is seen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use key_rotation::secrets::{SecretSnapshot, SecretStore, StoreFailure};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Where credentials come from.
pub struct AwsCredentialsSource {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub session_token: Option<SecretString>,
    pub profile: String,
    /// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    pub shared_credentials_file: Option<PathBuf>,
}

pub struct AwsSettings {
    pub region: String,
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER` or `AWS_ENDPOINT_URL`; else the
    /// region's public endpoint.
    pub endpoint: Option<String>,
    pub prefix: String,
    /// The single-secret layout's secret.
    pub secret_id: Option<String>,
    pub credentials: AwsCredentialsSource,
}

pub struct AwsStore {
    http: reqwest::Client,
    settings: AwsSettings,
}

struct Keys {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

impl AwsStore {
    pub fn new(settings: AwsSettings) -> Result<Self, StoreFailure> {
        let http = crate::http_client(None, "").map_err(|cause| StoreFailure {
            store: describe(&settings),
            cause,
            denied: false,
        })?;
        Ok(Self { http, settings })
    }

    fn failure(&self, cause: impl Into<String>, denied: bool) -> StoreFailure {
        StoreFailure { store: self.describe(), cause: cause.into(), denied }
    }

    fn endpoint(&self) -> String {
        self.settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://secretsmanager.{}.amazonaws.com", self.settings.region))
    }

    fn keys(&self) -> Result<Keys, StoreFailure> {
        let source = &self.settings.credentials;
        if let (Some(id), Some(secret)) = (&source.access_key_id, &source.secret_access_key) {
            return Ok(Keys {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: source.session_token.clone(),
            });
        }
        let file = source
            .shared_credentials_file
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".aws").join("credentials")));
        if let Some(file) = file.filter(|file| file.is_file()) {
            let text = std::fs::read_to_string(&file)
                .map_err(|err| self.failure(format!("shared credentials file {}: {err}", file.display()), false))?;
            if let Some(keys) = profile_keys(&text, &source.profile) {
                return Ok(keys);
            }
            return Err(self.failure(
                format!("no keys for profile {:?} in the shared credentials file {}", source.profile, file.display()),
                true,
            ));
        }
        Err(self.failure(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a shared credentials profile",
            true,
        ))
    }

    /// One secret's `SecretString`; `None` when there is no such secret.
    async fn get(&self, keys: &Keys, secret_id: &str) -> Result<Option<String>, StoreFailure> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let url = format!("{}/", self.endpoint().trim_end_matches('/'));
        let body = serde_json::json!({ "SecretId": secret_id }).to_string();
        let identity = aws_credential_types::Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.expose_secret().to_string(),
            keys.session_token.as_ref().map(|token| token.expose_secret().to_string()),
            None,
            "algoagent",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.settings.region)
            .name("secretsmanager")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|err| self.failure(format!("cannot sign: {err}"), false))?
            .into();
        let headers =
            [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "secretsmanager.GetSecretValue")];
        let signable =
            SignableRequest::new("POST", url.clone(), headers.iter().copied(), SignableBody::Bytes(body.as_bytes()))
                .map_err(|err| self.failure(format!("cannot sign: {err}"), false))?;
        let (instructions, _) =
            sign(signable, &params).map_err(|err| self.failure(format!("cannot sign: {err}"), false))?.into_parts();
        let mut request = self.http.post(&url).body(body);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|err| self.failure(crate::transport_cause(err), false))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(answer["SecretString"].as_str().map(str::to_string));
        }
        let kind = answer["__type"].as_str().unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or(kind);
        let denied = matches!(
            kind,
            "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
        ) || matches!(status.as_u16(), 401 | 403);
        match kind {
            "ResourceNotFoundException" => Ok(None),
            _ if denied => Err(self.failure(format!("permission denied reading {secret_id} ({status} {kind})"), true)),
            _ => Err(self.failure(format!("reading {secret_id} answered {status} {kind}"), false)),
        }
    }

    fn place(&self, key_id: &str) -> String {
        match &self.settings.secret_id {
            Some(secret_id) => format!("AWS secret {secret_id} entry \"{key_id}\""),
            None => format!("AWS secret {}{key_id}", self.settings.prefix),
        }
    }
}

/// A profile's keys from the shared credentials file (INI).
fn profile_keys(text: &str, profile: &str) -> Option<Keys> {
    let mut in_profile = false;
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if in_profile {
            if let Some((key, value)) = line.split_once('=') {
                values.insert(key.trim().to_string(), value.trim().to_string());
            }
        }
    }
    Some(Keys {
        access_key_id: values.get("aws_access_key_id")?.clone(),
        secret_access_key: SecretString::from(values.get("aws_secret_access_key")?.clone()),
        session_token: values.get("aws_session_token").map(|token| SecretString::from(token.clone())),
    })
}

fn describe(settings: &AwsSettings) -> String {
    match &settings.endpoint {
        Some(endpoint) => format!("aws secrets manager at {endpoint} ({})", settings.region),
        None => format!("aws secrets manager in {}", settings.region),
    }
}

#[async_trait::async_trait]
impl SecretStore for AwsStore {
    fn describe(&self) -> String {
        describe(&self.settings)
    }

    async fn fetch(&self, key_ids: Option<&[String]>) -> Result<SecretSnapshot, StoreFailure> {
        let keys = self.keys()?;
        let mut found = BTreeMap::new();
        match &self.settings.secret_id {
            Some(secret_id) => {
                if let Some(text) = self.get(&keys, secret_id).await? {
                    // The parse error is not shown: it would quote the secret.
                    let entries: BTreeMap<String, Value> = serde_json::from_str(&text).map_err(|_| {
                        self.failure(format!("{secret_id} is not a JSON object of key id to secret"), false)
                    })?;
                    for (key_id, value) in entries {
                        let wanted = key_ids.is_none_or(|ids| ids.contains(&key_id));
                        if let (true, Some(secret)) = (wanted, crate::secret(value.as_str())) {
                            found.insert(key_id, secret);
                        }
                    }
                }
            }
            None => {
                let Some(ids) = key_ids else {
                    return Err(self.failure("the per-key layout needs KEYS_FILE to name the keys", false));
                };
                let reads = ids.iter().map(|id| {
                    let name = format!("{}{id}", self.settings.prefix);
                    let keys = &keys;
                    async move { (id, self.get(keys, &name).await) }
                });
                for (id, read) in futures::future::join_all(reads).await {
                    if let Some(secret) = crate::secret(read?.as_deref()) {
                        found.insert(id.clone(), secret);
                    }
                }
            }
        }
        let places = key_ids.unwrap_or_default().iter().map(|id| (id.clone(), self.place(id))).collect();
        Ok(SecretSnapshot::new(found, places))
    }
}
