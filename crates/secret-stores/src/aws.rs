//! AWS Secrets Manager over its JSON API (`GetSecretValue`), signed with
//! SigV4 by AWS's own `aws-sigv4` on our reqwest client.
//!
//! Layouts:
//! - per key (the old deployment's, the default): one secret per key named
//!   `<prefix><key_id>` (prefix `algoagent/`), its `SecretString` the secret;
//! - `AWS_SECRET_ID`: one secret whose `SecretString` is a JSON object of
//!   key id → secret.
//!
//! Credentials, in the SDKs' order:
//! 1. the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!    `AWS_SESSION_TOKEN`);
//! 2. the shared credentials file's profile (`AWS_PROFILE`, default
//!    `default`), read again at every fetch so a rotated file is seen;
//! 3. web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, as on
//!    EKS): STS `AssumeRoleWithWebIdentity` with the file's token;
//! 4. the container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_*`,
//!    as on ECS);
//! 5. the EC2 instance metadata service (IMDSv2), unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! The temporary credentials of 3–5 are kept until five minutes before
//! they expire.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

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
    pub web_identity: Option<WebIdentity>,
    pub container: Option<ContainerCredentials>,
    /// The instance metadata service's base URL; `None` when disabled.
    pub instance_metadata: Option<String>,
}

/// `AssumeRoleWithWebIdentity` with the token a platform writes to a file.
pub struct WebIdentity {
    pub token_file: PathBuf,
    pub role_arn: String,
    pub session_name: String,
    /// STS: `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL`, else the region's.
    pub sts_endpoint: Option<String>,
}

/// The container credentials endpoint and its authorization token.
pub struct ContainerCredentials {
    pub url: String,
    pub authorization: Option<SecretString>,
}

/// Temporary credentials are replaced when less than this is left.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// The metadata endpoints answer at once where they exist; elsewhere they
/// must not hold a refresh up.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Temporary credentials (web identity, container, instance) and when
    /// they expire.
    temporary: tokio::sync::Mutex<Option<(Keys, Option<SystemTime>)>>,
}

#[derive(Clone)]
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
        Ok(Self { http, settings, temporary: tokio::sync::Mutex::new(None) })
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

    async fn keys(&self) -> Result<Keys, StoreFailure> {
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
            if source.web_identity.is_none() && source.container.is_none() && source.instance_metadata.is_none() {
                return Err(self.failure(
                    format!(
                        "no keys for profile {:?} in the shared credentials file {}",
                        source.profile,
                        file.display()
                    ),
                    true,
                ));
            }
        }
        let mut temporary = self.temporary.lock().await;
        if let Some((keys, expires)) = temporary.as_ref() {
            let fresh =
                expires.is_none_or(|at| at.duration_since(SystemTime::now()).is_ok_and(|left| left > EXPIRY_MARGIN));
            if fresh {
                return Ok(keys.clone());
            }
        }
        let fetched = if let Some(identity) = &source.web_identity {
            self.assume_role_with_web_identity(identity).await?
        } else if let Some(container) = &source.container {
            let mut request = self.http.get(&container.url).timeout(METADATA_TIMEOUT);
            if let Some(token) = &container.authorization {
                request = request.header("Authorization", token.expose_secret());
            }
            let answer = self.metadata_json(request, "the container credentials endpoint").await?;
            self.metadata_keys(&answer, "the container credentials endpoint")?
        } else if let Some(base) = &source.instance_metadata {
            self.instance_keys(base.trim_end_matches('/')).await?
        } else {
            return Err(self.failure(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a shared credentials profile, or web identity",
                true,
            ));
        };
        *temporary = Some(fetched.clone());
        Ok(fetched.0)
    }

    /// STS `AssumeRoleWithWebIdentity`: an unsigned call, the platform's
    /// token proving who we are. The token file is read at every call: the
    /// platform rotates it.
    async fn assume_role_with_web_identity(
        &self,
        identity: &WebIdentity,
    ) -> Result<(Keys, Option<SystemTime>), StoreFailure> {
        let token = std::fs::read_to_string(&identity.token_file).map_err(|err| {
            self.failure(format!("AWS_WEB_IDENTITY_TOKEN_FILE {}: {err}", identity.token_file.display()), false)
        })?;
        let endpoint = identity
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", self.settings.region));
        let response = self
            .http
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .form(&[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", "2011-06-15"),
                ("RoleArn", identity.role_arn.as_str()),
                ("RoleSessionName", identity.session_name.as_str()),
                ("WebIdentityToken", token.trim()),
            ])
            .send()
            .await
            .map_err(|err| self.failure(crate::transport_cause(err), false))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let code = xml_text(&body, "Code").unwrap_or("no error code");
            return Err(self.failure(
                format!("STS refused to assume {} with the web identity token ({status} {code})", identity.role_arn),
                status.is_client_error(),
            ));
        }
        let field = |name: &str| {
            xml_text(&body, name)
                .map(str::to_string)
                .ok_or_else(|| self.failure(format!("STS answered without {name}"), false))
        };
        let keys = Keys {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: SecretString::from(field("SecretAccessKey")?),
            session_token: Some(SecretString::from(field("SessionToken")?)),
        };
        Ok((keys, xml_text(&body, "Expiration").and_then(parse_time)))
    }

    /// IMDSv2: a session token, the instance role's name, then its keys.
    async fn instance_keys(&self, base: &str) -> Result<(Keys, Option<SystemTime>), StoreFailure> {
        let place = format!("the instance metadata service at {base}");
        let unreachable =
            |err: reqwest::Error| self.failure(format!("{place}: {}", crate::transport_cause(err)), false);
        let token = self
            .http
            .put(format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(METADATA_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unreachable)?
            .text()
            .await
            .map_err(unreachable)?;
        let roles_url = format!("{base}/latest/meta-data/iam/security-credentials/");
        let roles = self
            .http
            .get(&roles_url)
            .header("X-aws-ec2-metadata-token", token.trim())
            .timeout(METADATA_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| match err.status() {
                Some(status) if status.as_u16() == 404 => {
                    self.failure(format!("{place}: this instance has no IAM role"), true)
                }
                _ => unreachable(err),
            })?
            .text()
            .await
            .map_err(unreachable)?;
        let role = roles.lines().next().map(str::trim).filter(|role| !role.is_empty());
        let role = role.ok_or_else(|| self.failure(format!("{place}: this instance has no IAM role"), true))?;
        let request = self
            .http
            .get(format!("{roles_url}{role}"))
            .header("X-aws-ec2-metadata-token", token.trim())
            .timeout(METADATA_TIMEOUT);
        let answer = self.metadata_json(request, &place).await?;
        self.metadata_keys(&answer, &place)
    }

    async fn metadata_json(&self, request: reqwest::RequestBuilder, place: &str) -> Result<Value, StoreFailure> {
        let response = request
            .send()
            .await
            .map_err(|err| self.failure(format!("{place}: {}", crate::transport_cause(err)), false))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.failure(format!("{place} answered {status}"), status.is_client_error()));
        }
        response.json().await.map_err(|_| self.failure(format!("{place} answered something other than JSON"), false))
    }

    /// The JSON the container and instance endpoints share.
    fn metadata_keys(&self, answer: &Value, place: &str) -> Result<(Keys, Option<SystemTime>), StoreFailure> {
        let field = |name: &str| {
            answer[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.failure(format!("{place} answered without {name}"), false))
        };
        let keys = Keys {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: SecretString::from(field("SecretAccessKey")?),
            session_token: answer["Token"].as_str().map(|token| SecretString::from(token.to_string())),
        };
        Ok((keys, answer["Expiration"].as_str().and_then(parse_time)))
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

/// The text of the first `<name>` element of a small, known XML answer.
fn xml_text<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].trim())
}

fn parse_time(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(SystemTime::from)
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
        let keys = self.keys().await?;
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
