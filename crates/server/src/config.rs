//! Configuration, in layers: built-in defaults → optional `algoagent.toml`
//! → environment → command-line flags. Every setting is declared once in
//! [`SETTINGS`]; the README's table lists the same names.
//!
//! The whole configuration is validated before anything starts. An error
//! names the setting, where its value came from and, unless it is a secret,
//! the value itself.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

/// One configurable setting.
pub struct Setting {
    /// The environment name; the config file uses it in lower case.
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub secret: bool,
    pub doc: &'static str,
}

const fn setting(name: &'static str, default: Option<&'static str>, doc: &'static str) -> Setting {
    Setting { name, default, secret: false, doc }
}

const fn secret(name: &'static str, doc: &'static str) -> Setting {
    Setting { name, default: None, secret: true, doc }
}

pub const SETTINGS: &[Setting] = &[
    setting("CONFIG_FILE", Some("algoagent.toml"), "Optional TOML file of settings (lower-case names). Also `--config`."),
    setting("BIND_ADDR", Some("127.0.0.1:8000"), "Address to listen on. Also `--bind`."),
    secret("DATABASE_URL", "`sqlite://…` or `postgres://…`. Default `sqlite://data/algoagent.db` (created if missing, WAL)."),
    setting("DB_MAX_CONNECTIONS", Some("10"), "Connection pool size."),
    setting("RUN_MIGRATIONS", Some("true"), "Apply migrations at start-up. `--no-migrate` turns it off."),
    setting("DATA_DIR", Some("data"), "Where the embedded deployment keeps its files (the generated JWT secret)."),
    secret("REDIS_URL", "`redis://…`. Optional; when set, `/readyz` checks it. The key pool's shared quotas use it (issue 3)."),
    setting("REDIS_KEY_PREFIX", Some("algoagent"), "Prefix of every Redis key this service writes."),
    setting("REDIS_TIMEOUT_MS", Some("50"), "Deadline of each Redis call, in milliseconds."),
    secret("JWT_SECRET", "HS256 signing secret, at least 32 bytes. Falls back to `SECRET_KEY`. Required with Postgres; the SQLite default generates one in `DATA_DIR`."),
    secret("ALERT_WEBHOOK_URL", "Where alerts on the key pool are posted as JSON (Slack-compatible `text` included). Unset: no webhook."),
    secret("ALERT_WEBHOOK_SECRET", "Signs each alert: `X-AlgoAgent-Signature: sha256=<hex HMAC-SHA256 of the body>`."),
    setting("ALERT_REPEAT_SECS", Some("900"), "An alert condition is posted at most once per this many seconds, across all replicas."),
    setting("ALERT_CHECK_SECS", Some("30"), "How often each replica checks the alert conditions."),
    setting("ADMIN_DASHBOARD", Some("true"), "`false` turns the operators' pages under `/admin` off entirely (`/api/admin/` and `/metrics` are governed on their own)."),
    setting("HISTORY_RETENTION_DAYS", Some("30"), "Days the key pool's rotation history is kept in the database."),
    secret("METRICS_TOKEN", "Bearer token `GET /metrics` requires. Without one, `/metrics` answers only clients on loopback."),
    secret("SECRET_KEY", "The old Django `.env`'s key, used when `JWT_SECRET` is unset: our signing secret is derived from it (HMAC-SHA256 with a label), so the old app's tokens never verify here. A `django-insecure-…` key is refused with Postgres."),
    setting("ACCESS_TOKEN_TTL_SECS", Some("3600"), "Access token lifetime."),
    setting("REFRESH_TOKEN_TTL_SECS", Some("604800"), "Refresh token lifetime (7 days)."),
    setting("CORS_ALLOWED_ORIGINS", Some(""), "Comma-separated origins allowed by CORS (`https://app.example.com`), or `*`. Empty: no CORS."),
    setting("TRUSTED_PROXIES", Some(""), "Comma-separated IPs or CIDRs whose `X-Forwarded-For` is believed."),
    setting("MAX_BODY_BYTES", Some("1048576"), "Largest accepted request body; larger ones get 413."),
    setting("REQUEST_TIMEOUT_SECS", Some("60"), "Whole-request timeout. Must exceed `AI_DEADLINE_SECS` so the honest 429 is never pre-empted."),
    setting("AI_DEADLINE_SECS", Some("25"), "Deadline of one AI call, retries and waiting included."),
    setting("USER_RPM_DEFAULT", Some("10"), "Per-user AI requests per minute."),
    setting("USER_BURST_DEFAULT", Some("20"), "Per-user AI burst."),
    setting("USER_TPM_DEFAULT", Some("10000"), "Per-user AI input tokens per minute."),
    setting("CHAT_HISTORY_TOKENS", Some("4000"), "Input tokens of earlier turns sent with each chat message (the most recent that fit)."),
    setting("CHAT_MAX_MESSAGE_CHARS", Some("8000"), "Longest chat message accepted, in characters; longer ones get a 400."),
    setting("CHAT_MAX_SESSION_MESSAGES", Some("500"), "Messages (both roles) one chat session may hold; then a 400 asks for a new session."),
    setting("USER_MAX_STREAMS", Some("4"), "Event streams one user may hold open at once on a replica; the next gets a 429."),
    setting("STREAM_IDLE_TIMEOUT_SECS", Some("30"), "A streamed answer ends with an `error` event when upstream sends nothing for this long. Streams are exempt from `REQUEST_TIMEOUT_SECS` once their first event is out."),
    setting("GEMINI_BASE_URL", Some("https://generativelanguage.googleapis.com"), "Gemini API base URL."),
    setting("KEYS_FILE", Some("keys.json"), "Key pool metadata file (limits, models, projects)."),
    setting("SECRET_STORE_TYPE", Some("env"), "Where key secrets come from: `env`, `file`, `vault` (HashiCorp Vault or OpenBao), `aws` (Secrets Manager) or `azure` (Key Vault)."),
    setting("SECRET_REFRESH_SECS", Some("300"), "How often key secrets (and keys.json) are read again, so a rotated secret is used without a restart. `algoagent keys reload` and the dashboard's reload do it at once."),
    setting("VAULT_ADDR", None, "With `SECRET_STORE_TYPE=vault`: the server, e.g. `https://vault.example.com:8200`."),
    secret("VAULT_TOKEN", "Vault auth by token."),
    setting("VAULT_TOKEN_FILE", None, "Vault auth by a token file, read again at every refresh (a Vault agent may rotate it)."),
    setting("VAULT_ROLE_ID", None, "Vault AppRole auth: the role id (with `VAULT_SECRET_ID`); the token is renewed before it expires."),
    secret("VAULT_SECRET_ID", "Vault AppRole auth: the secret id."),
    setting("VAULT_MOUNT", Some("secret"), "The KV version 2 mount."),
    setting("VAULT_SECRET_PATH", Some("secret/algoagent"), "Where the secrets are under the mount: one secret per key at `<path>/<key_id>`, field `value` (the old app's layout, so the API path is `secret/data/secret/algoagent/<key_id>`)."),
    setting("VAULT_SECRET_LAYOUT", Some("per_key"), "`per_key`, or `single`: one secret at `VAULT_SECRET_PATH` whose fields are key ids."),
    setting("VAULT_CACERT", None, "A PEM file of a private CA that signed Vault's certificate."),
    setting("AWS_REGION", Some("us-east-1"), "With `SECRET_STORE_TYPE=aws`: the Secrets Manager region (`AWS_DEFAULT_REGION` also read)."),
    setting("AWS_ENDPOINT_URL", None, "An endpoint instead of the region's public one (`AWS_ENDPOINT_URL_SECRETS_MANAGER` wins over it), as the AWS SDKs read it."),
    setting("AWS_SECRET_PREFIX", Some("algoagent/"), "The old app's layout: one secret per key named `<prefix><key_id>`, its `SecretString` the secret."),
    setting("AWS_SECRET_ID", None, "Instead: one secret whose `SecretString` is a JSON object of key id to secret."),
    setting("AWS_ACCESS_KEY_ID", None, "AWS credentials from the environment (with `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`); else the shared credentials profile."),
    secret("AWS_SECRET_ACCESS_KEY", "AWS credentials from the environment."),
    secret("AWS_SESSION_TOKEN", "AWS credentials from the environment: a session token."),
    setting("AWS_PROFILE", Some("default"), "The shared credentials file's profile."),
    setting("AWS_SHARED_CREDENTIALS_FILE", None, "The shared credentials file; default `~/.aws/credentials`, read again at every refresh."),
    setting("AWS_WEB_IDENTITY_TOKEN_FILE", None, "Web identity (EKS and the like): the token file, read at every renewal, exchanged with STS for the role `AWS_ROLE_ARN` (`AWS_ROLE_SESSION_NAME`, default `algoagent`; STS at `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else the region's)."),
    setting("AWS_ROLE_ARN", None, "Web identity: the role to assume."),
    setting("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", None, "The container credentials endpoint (ECS) under `http://169.254.170.2`; or `AWS_CONTAINER_CREDENTIALS_FULL_URI` (with `AWS_CONTAINER_AUTHORIZATION_TOKEN`)."),
    setting("AWS_EC2_METADATA_DISABLED", Some("false"), "`true`: never ask the EC2 instance metadata service for credentials (the chain's last resort; `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it)."),
    setting("AZURE_VAULT_URL", None, "With `SECRET_STORE_TYPE=azure`: the vault, e.g. `https://algoagent.vault.azure.net`. One secret per key named `<AZURE_SECRET_PREFIX><key_id>` with `_` mapped to `-`."),
    setting("AZURE_SECRET_PREFIX", Some(""), "Put before each key id to name its secret (the old app used none)."),
    setting("AZURE_TENANT_ID", None, "Key Vault auth by client credentials: the Entra tenant (with `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`)."),
    setting("AZURE_CLIENT_ID", None, "The application's client id; with a managed identity, a user-assigned identity's client id."),
    secret("AZURE_CLIENT_SECRET", "Key Vault auth by client credentials: the application's secret."),
    setting("AZURE_AUTHORITY_HOST", Some("https://login.microsoftonline.com"), "The Entra authority (another cloud's, e.g. `https://login.chinacloudapi.cn`)."),
    setting("AZURE_USE_MANAGED_IDENTITY", Some("false"), "`true`: Key Vault auth by the machine's managed identity instead of client credentials. Never tried unless asked for."),
    setting("AZURE_MANAGED_IDENTITY_ENDPOINT", None, "The managed-identity token endpoint; default App Service's `IDENTITY_ENDPOINT` (with `IDENTITY_HEADER`) when set, else the instance metadata service's."),
    setting("AZURE_CA_CERT", None, "A PEM file of a private CA to trust for Key Vault and the authority (a TLS-inspecting proxy)."),
    setting("KEY_SECRETS_FILE", Some("keys.secrets.json"), "With `SECRET_STORE_TYPE=file`: a JSON object of key id to secret (mode 0600)."),
    setting("LOG_FORMAT", Some("text"), "`text` or `json` (one JSON object per line). Filter with `RUST_LOG`."),
    setting("LOG_LEVEL", None, "The old `.env`'s level (`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`): the log filter when `RUST_LOG` is unset. Default `INFO`."),
    setting("LOG_FILE", None, "Append the log to this file (its folder is created) instead of standard error."),
    setting("REDIS_TIMEOUT", None, "The old `.env`'s Redis connect timeout, in seconds: at start-up the server waits up to this long for Redis to answer before it serves (degraded if Redis is still away). Never changes the per-call deadline `REDIS_TIMEOUT_MS`."),
    setting("ENABLE_KEY_ROTATION", None, "Accepted from the old `.env` (`true` or `false`); it never shrinks the pool: rotation and exact limits are always on."),
    setting("BACKTEST_CASH", Some("10000"), "Starting cash of a backtest that names none."),
    setting("BACKTEST_COMMISSION", Some("0.002"), "Commission of a backtest that names none, as a fraction (0.002 = 0.2%)."),
    setting("SANDBOX_ENV_DIR", None, "The backtest sandbox's Python environment (`algoagent sandbox setup` makes it). Default `<DATA_DIR>/sandbox-env`."),
    setting("SANDBOX_USER", Some("algoagent-sandbox"), "The unprivileged account sandboxed runs drop to when the server runs as root."),
    setting("SANDBOX_WORKERS", None, "Backtests this process runs at once. Default: the number of cores. `0`: none here (an HTTP-only replica beside `algoagent worker` machines)."),
    setting("SANDBOX_TIME_LIMIT_SECS", Some("120"), "A backtest's wall-clock and CPU-time limit, in seconds."),
    setting("SANDBOX_MEMORY_MB", Some("2048"), "A backtest's address-space limit, in MiB (numpy needs about 1 GB)."),
    setting("MARKET_DATA_SOURCE", Some("bundled"), "Where `/api/data/api/fetch_data/` gets bars: `bundled` (backtesting.py's samples, offline), `csv` (the `<SYMBOL>.csv` files in `MARKET_DATA_DIR`) or `yahoo` (Yahoo Finance's chart API; needs internet)."),
    setting("MARKET_DATA_DIR", None, "The directory of OHLCV files for `MARKET_DATA_SOURCE=csv`."),
    setting("YAHOO_BASE_URL", Some("https://query1.finance.yahoo.com"), "Yahoo Finance's chart API, for `MARKET_DATA_SOURCE=yahoo`."),
    setting("MARKET_FETCHES_PER_HOUR", Some("60"), "Market data fetches one user may start in an hour (they cost the upstream)."),
    setting("STREAM_BAR_MS", Some("20"), "The pause between a live backtest's candles (`/ws/backtest/stream/` and its SSE twin), in milliseconds; `0` sends them as fast as the client reads."),
];

/// Variables of the old Django app's `.env` that have no meaning here: each
/// present one is named in a warning at start-up, with the reason.
pub const IGNORED_LEGACY: &[(&str, &str)] = &[
    ("DEBUG", "there is no debug mode; errors never show internals to clients"),
    ("ALLOWED_HOSTS", "the server answers on BIND_ADDR; filter host names at your proxy"),
    ("DATA_SOURCE", "market data is not part of this server yet"),
    ("ENABLE_CONVERSATION_MEMORY", "conversations always carry their history (CHAT_HISTORY_TOKENS)"),
    ("ENABLE_STRATEGY_VALIDATION", "strategy validation is always on"),
    ("ENABLE_LIVE_TRADING", "there is no live trading"),
];

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Environment,
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Environment => f.write_str("environment"),
            Origin::Flag => f.write_str("command line"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {setting} = {value} (from {origin}): {reason}")]
    Invalid {
        setting: &'static str,
        /// The value as given, or `<redacted>` for a secret.
        value: String,
        origin: Origin,
        reason: String,
    },
    #[error("{setting} is required: {reason}")]
    Missing { setting: &'static str, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Which config file to read.
#[derive(Debug, Clone)]
pub enum ConfigFile {
    /// `CONFIG_FILE` or `algoagent.toml`, skipped when the default is absent.
    Discover,
    /// A file named on the command line; it must exist.
    Explicit(PathBuf),
    /// No file at all (tests).
    Skip,
}

/// The raw inputs of [`load`]: kept explicit so tests build a configuration
/// through the same path as `main` without touching the process environment.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    pub file: ConfigFile,
    pub env: Vec<(String, String)>,
    pub flags: Vec<(&'static str, String)>,
}

impl ConfigSources {
    pub fn from_process(file: ConfigFile, flags: Vec<(&'static str, String)>) -> Self {
        Self { file, env: std::env::vars().collect(), flags }
    }

    /// A variable the SDKs read from the process environment only (not the
    /// config file): its trimmed value, when set and not blank.
    fn process_env(&self, name: &str) -> Option<String> {
        self.env.iter().find(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim().to_string())
    }
}

/// A connection URL whose `Debug` hides any password in it.
#[derive(Clone)]
pub struct ConnectionUrl(SecretString);

impl ConnectionUrl {
    pub fn new(url: &str) -> Self {
        Self(SecretString::from(url.to_string()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with its password (if any) replaced, safe to log: the one
    /// in the user info (which may itself hold `@`, so the host starts
    /// after the last one) and any `password=` in the query.
    pub fn redacted(&self) -> String {
        let url = self.expose();
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_string();
        };
        let (location, query) = rest.split_once('?').map_or((rest, None), |(l, q)| (l, Some(q)));
        let location = match location.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => location.to_string(),
        };
        let Some(query) = query else {
            return format!("{scheme}://{location}");
        };
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if ["password", "pass", "pwd"].contains(&name.to_ascii_lowercase().as_str()) => {
                    format!("{name}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        format!("{scheme}://{location}?{}", query.join("&"))
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// The environment variables that can carry Gemini key secrets
/// (`GEMINI_KEY_*`, `API_KEY_*`, `GEMINI_API_KEYS`, `GEMINI_API_KEY`),
/// captured with the rest of the configuration. `Debug` shows names only.
#[derive(Clone, Default)]
pub struct KeyEnv(Vec<(String, SecretString)>);

impl KeyEnv {
    fn capture(env: &[(String, String)]) -> Self {
        let is_key_var = |name: &str| {
            name.starts_with("GEMINI_KEY_")
                || name.starts_with("API_KEY_")
                || name == "GEMINI_API_KEYS"
                || name == "GEMINI_API_KEY"
        };
        Self(
            env.iter()
                .filter(|(name, _)| is_key_var(name))
                .map(|(name, value)| (name.clone(), SecretString::from(value.clone())))
                .collect(),
        )
    }

    /// The variables with their values, for the key pool's secret source.
    pub fn vars(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.0.iter().map(|(name, value)| (name.clone(), value.expose_secret().to_string()))
    }
}

impl fmt::Debug for KeyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretStoreType {
    Env,
    File,
    Vault,
    Aws,
    Azure,
}

impl SecretStoreType {
    /// A store reached over the network, whose reads can fail after
    /// start-up (the environment and a file are read locally).
    pub fn is_remote(self) -> bool {
        !matches!(self, SecretStoreType::Env | SecretStoreType::File)
    }
}

/// How to reach AWS Secrets Manager (`AWS_*`). `Debug` never shows a credential.
#[derive(Clone)]
pub struct AwsConfig {
    pub region: String,
    pub endpoint: Option<String>,
    pub prefix: String,
    pub secret_id: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub session_token: Option<SecretString>,
    pub profile: String,
    pub shared_credentials_file: Option<PathBuf>,
    pub web_identity: Option<AwsWebIdentity>,
    /// The container credentials URL and its authorization token.
    pub container: Option<(String, Option<SecretString>)>,
    /// The EC2 instance metadata service; `None` when disabled.
    pub instance_metadata: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AwsWebIdentity {
    pub token_file: PathBuf,
    pub role_arn: String,
    pub session_name: String,
    pub sts_endpoint: Option<String>,
}

impl fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("secret_id", &self.secret_id)
            .field("access_key_id", &self.access_key_id)
            .field("profile", &self.profile)
            .field("web_identity", &self.web_identity)
            .field("container", &self.container.as_ref().map(|(url, _)| url))
            .field("instance_metadata", &self.instance_metadata)
            .finish_non_exhaustive()
    }
}

/// How Key Vault is authenticated to.
#[derive(Clone)]
pub enum AzureAuth {
    ClientSecret { tenant_id: String, client_id: String, client_secret: SecretString, authority_host: String },
    ManagedIdentity { endpoint: String, identity_header: Option<SecretString>, client_id: Option<String> },
}

/// How to reach Azure Key Vault (`AZURE_*`). `Debug` never shows a credential.
#[derive(Clone)]
pub struct AzureConfig {
    pub vault_url: String,
    pub prefix: String,
    pub auth: AzureAuth,
    pub ca_cert: Option<PathBuf>,
}

impl fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            AzureAuth::ClientSecret { tenant_id, client_id, .. } => {
                format!("client credentials of {client_id} in tenant {tenant_id}")
            }
            AzureAuth::ManagedIdentity { endpoint, .. } => format!("managed identity at {endpoint}"),
        };
        f.debug_struct("AzureConfig")
            .field("vault_url", &self.vault_url)
            .field("prefix", &self.prefix)
            .field("auth", &auth)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// How to reach Vault (`VAULT_*`). `Debug` never shows a credential.
#[derive(Clone)]
pub struct VaultConfig {
    pub addr: String,
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    pub role_id: Option<String>,
    pub secret_id: Option<SecretString>,
    pub mount: String,
    pub path: String,
    pub single_layout: bool,
    pub ca_cert: Option<PathBuf>,
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("role_id", &self.role_id)
            .field("mount", &self.mount)
            .field("path", &self.path)
            .field("single_layout", &self.single_layout)
            .finish_non_exhaustive()
    }
}

/// CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    None,
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind_addr: SocketAddr,
    pub database_url: ConnectionUrl,
    pub db_max_connections: u32,
    pub run_migrations: bool,
    pub data_dir: PathBuf,
    pub redis_url: Option<ConnectionUrl>,
    pub redis_key_prefix: String,
    pub redis_timeout: Duration,
    pub jwt_secret: Option<SecretString>,
    pub metrics_token: Option<SecretString>,
    /// `ADMIN_DASHBOARD`: whether the `/admin` pages are served.
    pub admin_dashboard: bool,
    /// `HISTORY_RETENTION_DAYS`: how long rotation events are kept.
    pub history_retention: Duration,
    /// `ALERT_WEBHOOK_URL`: a secret, since such URLs (Slack's) carry their token.
    pub alert_webhook_url: Option<SecretString>,
    pub alert_webhook_secret: Option<SecretString>,
    pub alert_repeat: Duration,
    pub alert_check: Duration,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub cors_allowed_origins: CorsOrigins,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub ai_deadline: Duration,
    pub user_rpm_default: u32,
    pub user_burst_default: u32,
    pub user_tpm_default: u32,
    pub chat_history_tokens: u32,
    pub chat_max_message_chars: u32,
    pub chat_max_session_messages: u32,
    pub user_max_streams: u32,
    pub stream_idle_timeout: Duration,
    pub gemini_base_url: String,
    pub keys_file: PathBuf,
    pub secret_store_type: SecretStoreType,
    pub key_secrets_file: PathBuf,
    /// `SECRET_STORE_TYPE=vault`: how to reach it.
    pub vault: Option<VaultConfig>,
    /// `SECRET_STORE_TYPE=aws`: how to reach it.
    pub aws: Option<AwsConfig>,
    /// `SECRET_STORE_TYPE=azure`: how to reach it.
    pub azure: Option<AzureConfig>,
    /// `SECRET_REFRESH_SECS`.
    pub secret_refresh: Duration,
    pub key_env: KeyEnv,
    pub log_format: LogFormat,
    /// `LOG_LEVEL`, as a `RUST_LOG`-style directive (`debug`, `info`, …).
    pub log_level: Option<String>,
    pub log_file: Option<PathBuf>,
    /// `REDIS_TIMEOUT`: how long start-up waits for Redis.
    pub redis_connect_timeout: Option<Duration>,
    pub backtest_cash: f64,
    pub backtest_commission: f64,
    /// Where and how backtests run.
    pub sandbox: SandboxConfig,
    /// Where `/api/data/` fetches bars.
    pub market_source: MarketSourceConfig,
    pub market_fetches_per_hour: u32,
    /// `STREAM_BAR_MS`.
    pub stream_bar: Duration,
    /// What the operator is told at start-up about the old `.env`'s
    /// variables: accepted without effect, or ignored, and why.
    pub legacy_notices: Vec<String>,
}

/// `MARKET_DATA_SOURCE` and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketSourceConfig {
    Bundled,
    Csv { dir: PathBuf },
    Yahoo { base_url: String },
}

/// The backtest sandbox's settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub env_dir: PathBuf,
    pub user: String,
    pub workers: usize,
    pub time_limit: Duration,
    pub memory_bytes: u64,
}

impl SandboxConfig {
    pub fn settings(&self) -> sandbox::SandboxSettings {
        let limits = sandbox::Limits {
            cpu_seconds: self.time_limit.as_secs().max(1),
            wall: self.time_limit,
            memory_bytes: self.memory_bytes,
            ..sandbox::Limits::default()
        };
        sandbox::SandboxSettings::new(self.env_dir.clone(), self.user.clone(), limits)
    }
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/algoagent.db";

struct RawValue {
    value: String,
    origin: Origin,
}

struct Layers {
    values: BTreeMap<&'static str, RawValue>,
}

fn find_setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

impl Layers {
    fn set(&mut self, setting: &'static Setting, value: String, origin: Origin) {
        self.values.insert(setting.name, RawValue { value, origin });
    }

    fn raw(&self, name: &'static str) -> Option<&RawValue> {
        self.values.get(name).filter(|raw| !raw.value.trim().is_empty())
    }

    fn invalid(&self, name: &'static str, reason: impl Into<String>) -> ConfigError {
        let raw = self.values.get(name);
        let secret = find_setting(name).is_some_and(|s| s.secret);
        ConfigError::Invalid {
            setting: name,
            value: match raw {
                Some(_) if secret => "<redacted>".into(),
                Some(raw) => format!("{:?}", raw.value),
                None => "\"\"".into(),
            },
            origin: raw.map_or(Origin::Default, |raw| raw.origin.clone()),
            reason: reason.into(),
        }
    }

    fn string(&self, name: &'static str) -> Option<String> {
        self.raw(name).map(|raw| raw.value.trim().to_string())
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str, expected: &str) -> Result<T, ConfigError> {
        let text = self.string(name).unwrap_or_default();
        text.parse().map_err(|_| self.invalid(name, format!("expected {expected}")))
    }

    fn positive(&self, name: &'static str) -> Result<u64, ConfigError> {
        let value: u64 = self.parse(name, "a positive whole number")?;
        if value == 0 {
            return Err(self.invalid(name, "must be greater than zero"));
        }
        Ok(value)
    }

    fn positive_u32(&self, name: &'static str) -> Result<u32, ConfigError> {
        let value = self.positive(name)?;
        u32::try_from(value).map_err(|_| self.invalid(name, "is too large"))
    }

    fn bool(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.string(name).unwrap_or_default().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(name, "expected true or false")),
        }
    }

    fn list(&self, name: &'static str) -> Vec<String> {
        self.string(name)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Reads every layer and validates the result.
pub fn load(sources: &ConfigSources) -> Result<Config, ConfigError> {
    let mut layers = Layers { values: BTreeMap::new() };
    for setting in SETTINGS {
        if let Some(default) = setting.default {
            layers.set(setting, default.to_string(), Origin::Default);
        }
    }
    let env: BTreeMap<&str, &str> = sources.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let file = match &sources.file {
        ConfigFile::Skip => None,
        ConfigFile::Explicit(path) => Some((path.clone(), true)),
        ConfigFile::Discover => match env.get("CONFIG_FILE").filter(|v| !v.trim().is_empty()) {
            Some(path) => Some((PathBuf::from(path.trim()), true)),
            None => Some((PathBuf::from("algoagent.toml"), false)),
        },
    };
    if let Some((path, required)) = file {
        read_file(&mut layers, &path, required)?;
    }
    for setting in SETTINGS {
        if let Some(value) = env.get(setting.name) {
            layers.set(setting, (*value).to_string(), Origin::Environment);
        }
    }
    for (name, value) in &sources.flags {
        if let Some(setting) = find_setting(name) {
            layers.set(setting, value.clone(), Origin::Flag);
        }
    }
    build(&layers, sources)
}

fn read_file(layers: &mut Layers, path: &Path, required: bool) -> Result<(), ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => return Ok(()),
        Err(err) => return Err(ConfigError::File { path: path.to_path_buf(), reason: err.to_string() }),
    };
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| ConfigError::File {
        path: path.to_path_buf(),
        reason: err.message().to_string(),
    })?;
    for (key, value) in table {
        let setting = find_setting(&key).filter(|s| s.name != "CONFIG_FILE").ok_or_else(|| ConfigError::File {
            path: path.to_path_buf(),
            reason: format!("unknown setting `{key}`"),
        })?;
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(ConfigError::File {
                    path: path.to_path_buf(),
                    reason: format!("`{key}` must be a string, number, boolean or list, not {}", other.type_str()),
                })
            }
        };
        layers.set(setting, text, Origin::File(path.to_path_buf()));
    }
    Ok(())
}

fn aws_config(layers: &Layers, sources: &ConfigSources) -> Result<AwsConfig, ConfigError> {
    let env = |name: &str| sources.process_env(name);
    let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).or_else(|| layers.string("AWS_REGION"));
    let metadata_disabled = layers.bool("AWS_EC2_METADATA_DISABLED")?;
    Ok(AwsConfig {
        region: region.unwrap_or_else(|| "us-east-1".to_string()),
        endpoint: env("AWS_ENDPOINT_URL_SECRETS_MANAGER").or_else(|| layers.string("AWS_ENDPOINT_URL")),
        prefix: layers.string("AWS_SECRET_PREFIX").unwrap_or_default(),
        secret_id: layers.string("AWS_SECRET_ID"),
        access_key_id: layers.string("AWS_ACCESS_KEY_ID"),
        secret_access_key: layers.string("AWS_SECRET_ACCESS_KEY").map(SecretString::from),
        session_token: layers.string("AWS_SESSION_TOKEN").map(SecretString::from),
        profile: layers.string("AWS_PROFILE").unwrap_or_else(|| "default".to_string()),
        shared_credentials_file: layers.string("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from),
        web_identity: layers.string("AWS_WEB_IDENTITY_TOKEN_FILE").zip(layers.string("AWS_ROLE_ARN")).map(
            |(token_file, role_arn)| AwsWebIdentity {
                token_file: PathBuf::from(token_file),
                role_arn,
                session_name: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "algoagent".to_string()),
                sts_endpoint: env("AWS_ENDPOINT_URL_STS").or_else(|| layers.string("AWS_ENDPOINT_URL")),
            },
        ),
        container: match (
            env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            layers.string("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        ) {
            (Some(url), _) => Some((url, env("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(SecretString::from))),
            (None, Some(path)) => Some((format!("http://169.254.170.2{path}"), None)),
            (None, None) => None,
        },
        instance_metadata: (!metadata_disabled)
            .then(|| env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".to_string())),
    })
}

/// The instance metadata service's managed-identity endpoint.
const IMDS_TOKEN_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

fn azure_config(layers: &Layers, sources: &ConfigSources) -> Result<AzureConfig, ConfigError> {
    let env = |name: &str| sources.process_env(name);
    let https = |name: &'static str, url: &str| {
        if url.starts_with("https://") {
            Ok(())
        } else {
            Err(layers.invalid(name, "expected an https:// URL (the token it is sent is a bearer credential)"))
        }
    };
    let vault_url = layers.string("AZURE_VAULT_URL").ok_or_else(|| ConfigError::Missing {
        setting: "AZURE_VAULT_URL",
        reason: "SECRET_STORE_TYPE=azure needs the vault's URL".into(),
    })?;
    https("AZURE_VAULT_URL", &vault_url)?;
    let client_id = layers.string("AZURE_CLIENT_ID");
    let auth = if layers.bool("AZURE_USE_MANAGED_IDENTITY")? {
        // App Service (and Functions) say where their endpoint is, and its header.
        let app_service = env("IDENTITY_ENDPOINT").zip(env("IDENTITY_HEADER"));
        let endpoint = layers
            .string("AZURE_MANAGED_IDENTITY_ENDPOINT")
            .or_else(|| app_service.as_ref().map(|(endpoint, _)| endpoint.clone()))
            .unwrap_or_else(|| IMDS_TOKEN_ENDPOINT.to_string());
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(layers.invalid("AZURE_MANAGED_IDENTITY_ENDPOINT", "expected an http:// or https:// URL"));
        }
        let identity_header = app_service
            .filter(|(app_endpoint, _)| *app_endpoint == endpoint)
            .map(|(_, header)| SecretString::from(header));
        AzureAuth::ManagedIdentity { endpoint, identity_header, client_id }
    } else {
        let tenant_id = layers.string("AZURE_TENANT_ID");
        let client_secret = layers.string("AZURE_CLIENT_SECRET").map(SecretString::from);
        let (Some(tenant_id), Some(client_id), Some(client_secret)) = (tenant_id, client_id, client_secret) else {
            return Err(ConfigError::Missing {
                setting: "AZURE_CLIENT_SECRET",
                reason: "Key Vault needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or AZURE_USE_MANAGED_IDENTITY=true".into(),
            });
        };
        let authority_host = layers.string("AZURE_AUTHORITY_HOST").unwrap_or_default();
        https("AZURE_AUTHORITY_HOST", &authority_host)?;
        AzureAuth::ClientSecret { tenant_id, client_id, client_secret, authority_host }
    };
    Ok(AzureConfig {
        vault_url,
        prefix: layers.string("AZURE_SECRET_PREFIX").unwrap_or_default(),
        auth,
        ca_cert: layers.string("AZURE_CA_CERT").map(PathBuf::from),
    })
}

fn vault_config(layers: &Layers) -> Result<VaultConfig, ConfigError> {
    let addr = layers.string("VAULT_ADDR").ok_or_else(|| ConfigError::Missing {
        setting: "VAULT_ADDR",
        reason: "SECRET_STORE_TYPE=vault needs the server's address".into(),
    })?;
    if !(addr.starts_with("http://") || addr.starts_with("https://")) {
        return Err(layers.invalid("VAULT_ADDR", "expected an http:// or https:// URL"));
    }
    let token = layers.string("VAULT_TOKEN").map(SecretString::from);
    let token_file = layers.string("VAULT_TOKEN_FILE").map(PathBuf::from);
    let role_id = layers.string("VAULT_ROLE_ID");
    let secret_id = layers.string("VAULT_SECRET_ID").map(SecretString::from);
    let ways = [token.is_some(), token_file.is_some(), role_id.is_some() || secret_id.is_some()];
    match ways.iter().filter(|given| **given).count() {
        0 => {
            return Err(ConfigError::Missing {
                setting: "VAULT_TOKEN",
                reason: "Vault needs VAULT_TOKEN, VAULT_TOKEN_FILE, or VAULT_ROLE_ID with VAULT_SECRET_ID".into(),
            })
        }
        1 => {}
        _ => {
            return Err(layers.invalid(
                "VAULT_TOKEN",
                "give one way to authenticate: VAULT_TOKEN, VAULT_TOKEN_FILE, or VAULT_ROLE_ID with VAULT_SECRET_ID",
            ))
        }
    }
    if role_id.is_some() != secret_id.is_some() {
        return Err(layers.invalid("VAULT_ROLE_ID", "AppRole needs both VAULT_ROLE_ID and VAULT_SECRET_ID"));
    }
    let single_layout = match layers.string("VAULT_SECRET_LAYOUT").unwrap_or_default().to_ascii_lowercase().as_str() {
        "per_key" | "per-key" => false,
        "single" => true,
        _ => return Err(layers.invalid("VAULT_SECRET_LAYOUT", "expected per_key or single")),
    };
    Ok(VaultConfig {
        addr,
        token,
        token_file,
        role_id,
        secret_id,
        mount: layers.string("VAULT_MOUNT").unwrap_or_default(),
        path: layers.string("VAULT_SECRET_PATH").unwrap_or_default(),
        single_layout,
        ca_cert: layers.string("VAULT_CACERT").map(PathBuf::from),
    })
}

fn build(layers: &Layers, sources: &ConfigSources) -> Result<Config, ConfigError> {
    let bind_addr = layers.parse("BIND_ADDR", "host:port, e.g. 127.0.0.1:8000")?;

    let database_url = layers.string("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    let backend = store::Backend::from_url(&database_url)
        .ok_or_else(|| layers.invalid("DATABASE_URL", "expected a postgres:// or sqlite:// URL"))?;

    let redis_url = match layers.string("REDIS_URL") {
        Some(url) if url.starts_with("redis://") || url.starts_with("unix://") => Some(ConnectionUrl::new(&url)),
        Some(url) if url.starts_with("rediss://") => {
            return Err(layers.invalid("REDIS_URL", "TLS (rediss://) is not supported by this build"))
        }
        Some(_) => return Err(layers.invalid("REDIS_URL", "expected a redis:// URL")),
        None => None,
    };

    let (jwt_name, jwt_secret) = match layers.string("JWT_SECRET") {
        Some(secret) => ("JWT_SECRET", Some(secret)),
        None => ("SECRET_KEY", layers.string("SECRET_KEY")),
    };
    if let Some(secret) = &jwt_secret {
        if secret.len() < api_core::jwt::MIN_SECRET_BYTES {
            return Err(layers.invalid(jwt_name, format!("must be at least {} bytes", api_core::jwt::MIN_SECRET_BYTES)));
        }
        if jwt_name == "SECRET_KEY" && secret.starts_with("django-insecure-") && backend == store::Backend::Postgres {
            return Err(layers.invalid(
                "SECRET_KEY",
                "is Django's development key (django-insecure-…); set JWT_SECRET to a secret of your own",
            ));
        }
    } else if backend == store::Backend::Postgres {
        return Err(ConfigError::Missing {
            setting: "JWT_SECRET",
            reason: "a Postgres deployment runs several replicas that must share one signing secret".into(),
        });
    }

    let cors_allowed_origins = parse_cors(layers)?;
    let trusted_proxies = layers
        .list("TRUSTED_PROXIES")
        .iter()
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| layers.invalid("TRUSTED_PROXIES", format!("`{entry}` is not an IP address or CIDR")))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let request_timeout = Duration::from_secs(layers.positive("REQUEST_TIMEOUT_SECS")?);
    let ai_deadline = Duration::from_secs(layers.positive("AI_DEADLINE_SECS")?);
    if request_timeout <= ai_deadline {
        return Err(layers.invalid(
            "REQUEST_TIMEOUT_SECS",
            format!(
                "must be longer than AI_DEADLINE_SECS ({}s), or the request times out before an AI call can answer 429",
                ai_deadline.as_secs()
            ),
        ));
    }

    let gemini_base_url = layers.string("GEMINI_BASE_URL").unwrap_or_default();
    if !(gemini_base_url.starts_with("http://") || gemini_base_url.starts_with("https://")) {
        return Err(layers.invalid("GEMINI_BASE_URL", "expected an http:// or https:// URL"));
    }

    let secret_store_type = match layers.string("SECRET_STORE_TYPE").unwrap_or_default().to_ascii_lowercase().as_str() {
        "env" => SecretStoreType::Env,
        "file" => SecretStoreType::File,
        "vault" => SecretStoreType::Vault,
        "aws" => SecretStoreType::Aws,
        "azure" => SecretStoreType::Azure,
        _ => return Err(layers.invalid("SECRET_STORE_TYPE", "expected env, file, vault, aws or azure")),
    };
    let vault = match secret_store_type {
        SecretStoreType::Vault => Some(vault_config(layers)?),
        _ => None,
    };
    let aws = match secret_store_type {
        SecretStoreType::Aws => Some(aws_config(layers, sources)?),
        _ => None,
    };
    let azure = match secret_store_type {
        SecretStoreType::Azure => Some(azure_config(layers, sources)?),
        _ => None,
    };
    let log_format = match layers.string("LOG_FORMAT").unwrap_or_default().to_ascii_lowercase().as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => return Err(layers.invalid("LOG_FORMAT", "expected text or json")),
    };
    let alert_webhook_url = match layers.string("ALERT_WEBHOOK_URL") {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Some(SecretString::from(url)),
        // The value is not shown: a webhook URL carries its token.
        Some(_) => return Err(layers.invalid("ALERT_WEBHOOK_URL", "expected an http:// or https:// URL")),
        None => None,
    };
    let log_level = match layers.string("LOG_LEVEL").map(|level| level.to_ascii_uppercase()) {
        None => None,
        Some(level) => Some(
            match level.as_str() {
                "DEBUG" => "debug",
                "INFO" => "info",
                "WARNING" | "WARN" => "warn",
                "ERROR" | "CRITICAL" => "error",
                _ => return Err(layers.invalid("LOG_LEVEL", "expected DEBUG, INFO, WARNING, ERROR or CRITICAL")),
            }
            .to_string(),
        ),
    };
    let redis_connect_timeout = match layers.string("REDIS_TIMEOUT") {
        None => None,
        Some(text) => Some(
            text.parse::<f64>()
                .ok()
                .filter(|secs| secs.is_finite() && *secs > 0.0 && *secs <= 600.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| layers.invalid("REDIS_TIMEOUT", "expected seconds, more than 0 and at most 600"))?,
        ),
    };
    let backtest_cash: f64 = layers.parse("BACKTEST_CASH", "a number")?;
    if !(backtest_cash.is_finite() && backtest_cash > 0.0) {
        return Err(layers.invalid("BACKTEST_CASH", "must be more than zero"));
    }
    let backtest_commission: f64 = layers.parse("BACKTEST_COMMISSION", "a fraction, e.g. 0.002")?;
    if !(backtest_commission.is_finite() && (0.0..1.0).contains(&backtest_commission)) {
        return Err(layers.invalid("BACKTEST_COMMISSION", "must be a fraction from 0 up to 1"));
    }
    let data_dir =
        PathBuf::from(layers.string("DATA_DIR").ok_or_else(|| layers.invalid("DATA_DIR", "must not be empty"))?);
    let sandbox = SandboxConfig {
        env_dir: layers.string("SANDBOX_ENV_DIR").map_or_else(|| data_dir.join("sandbox-env"), PathBuf::from),
        user: layers.string("SANDBOX_USER").ok_or_else(|| layers.invalid("SANDBOX_USER", "must not be empty"))?,
        // 0: this replica serves HTTP only and `algoagent worker` machines run the backtests.
        workers: match layers.string("SANDBOX_WORKERS") {
            Some(_) => layers.parse::<usize>("SANDBOX_WORKERS", "a whole number (0: no backtests on this replica)")?,
            None => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        },
        time_limit: Duration::from_secs(layers.positive("SANDBOX_TIME_LIMIT_SECS")?),
        memory_bytes: layers.positive("SANDBOX_MEMORY_MB")?.saturating_mul(1 << 20),
    };
    let market_source = match layers.string("MARKET_DATA_SOURCE").unwrap_or_default().to_ascii_lowercase().as_str() {
        "bundled" => MarketSourceConfig::Bundled,
        "csv" => MarketSourceConfig::Csv {
            dir: layers.string("MARKET_DATA_DIR").map(PathBuf::from).ok_or_else(|| {
                layers.invalid("MARKET_DATA_DIR", "MARKET_DATA_SOURCE=csv needs the directory of files")
            })?,
        },
        "yahoo" => MarketSourceConfig::Yahoo {
            base_url: layers
                .string("YAHOO_BASE_URL")
                .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
                .ok_or_else(|| layers.invalid("YAHOO_BASE_URL", "expected an http(s) URL"))?,
        },
        _ => return Err(layers.invalid("MARKET_DATA_SOURCE", "expected bundled, csv or yahoo")),
    };
    let market_fetches_per_hour = layers.positive_u32("MARKET_FETCHES_PER_HOUR")?;
    let stream_bar = Duration::from_millis(layers.parse("STREAM_BAR_MS", "a whole number of milliseconds")?);
    let mut legacy_notices = Vec::new();
    if layers.string("ENABLE_KEY_ROTATION").is_some() {
        let enabled = layers.bool("ENABLE_KEY_ROTATION")?;
        legacy_notices.push(format!(
            "ENABLE_KEY_ROTATION={enabled} is accepted: rotation and exact limits are always on, and every configured \
             key is used"
        ));
    }
    let given = |name: &str| sources.env.iter().any(|(k, v)| k == name && !v.trim().is_empty());
    for (name, reason) in IGNORED_LEGACY.iter().filter(|(name, _)| given(name)) {
        legacy_notices.push(format!("{name} is ignored: {reason}"));
    }
    let redis_key_prefix = layers.string("REDIS_KEY_PREFIX").unwrap_or_default();
    if redis_key_prefix.is_empty() || redis_key_prefix.contains(['{', '}', ' ']) {
        return Err(layers.invalid("REDIS_KEY_PREFIX", "must be non-empty, without spaces or braces"));
    }

    Ok(Config {
        bind_addr,
        database_url: ConnectionUrl::new(&database_url),
        db_max_connections: layers.positive_u32("DB_MAX_CONNECTIONS")?,
        run_migrations: layers.bool("RUN_MIGRATIONS")?,
        data_dir,
        redis_url,
        redis_key_prefix,
        redis_timeout: Duration::from_millis(layers.positive("REDIS_TIMEOUT_MS")?),
        // The legacy key only seeds ours: tokens the old app signed with it
        // never verify here.
        metrics_token: layers.string("METRICS_TOKEN").map(SecretString::from),
        admin_dashboard: layers.bool("ADMIN_DASHBOARD")?,
        history_retention: Duration::from_secs(layers.positive("HISTORY_RETENTION_DAYS")?.saturating_mul(86_400)),
        alert_webhook_url,
        alert_webhook_secret: layers.string("ALERT_WEBHOOK_SECRET").map(SecretString::from),
        alert_repeat: Duration::from_secs(layers.positive("ALERT_REPEAT_SECS")?),
        alert_check: Duration::from_secs(layers.positive("ALERT_CHECK_SECS")?),
        jwt_secret: jwt_secret
            .map(
                |secret| {
                    if jwt_name == "SECRET_KEY" {
                        api_core::jwt::secret_from_legacy_key(&secret)
                    } else {
                        secret
                    }
                },
            )
            .map(SecretString::from),
        access_token_ttl: Duration::from_secs(layers.positive("ACCESS_TOKEN_TTL_SECS")?),
        refresh_token_ttl: Duration::from_secs(layers.positive("REFRESH_TOKEN_TTL_SECS")?),
        cors_allowed_origins,
        trusted_proxies,
        max_body_bytes: usize::try_from(layers.positive("MAX_BODY_BYTES")?)
            .map_err(|_| layers.invalid("MAX_BODY_BYTES", "is too large"))?,
        request_timeout,
        ai_deadline,
        user_rpm_default: layers.positive_u32("USER_RPM_DEFAULT")?,
        user_burst_default: layers.positive_u32("USER_BURST_DEFAULT")?,
        user_tpm_default: layers.positive_u32("USER_TPM_DEFAULT")?,
        chat_history_tokens: layers.positive_u32("CHAT_HISTORY_TOKENS")?,
        chat_max_message_chars: layers.positive_u32("CHAT_MAX_MESSAGE_CHARS")?,
        chat_max_session_messages: layers.positive_u32("CHAT_MAX_SESSION_MESSAGES")?,
        user_max_streams: layers.positive_u32("USER_MAX_STREAMS")?,
        stream_idle_timeout: Duration::from_secs(layers.positive("STREAM_IDLE_TIMEOUT_SECS")?),
        gemini_base_url: gemini_base_url.trim_end_matches('/').to_string(),
        keys_file: PathBuf::from(layers.string("KEYS_FILE").unwrap_or_default()),
        key_secrets_file: PathBuf::from(layers.string("KEY_SECRETS_FILE").unwrap_or_default()),
        vault,
        aws,
        azure,
        secret_refresh: Duration::from_secs(layers.positive("SECRET_REFRESH_SECS")?),
        key_env: KeyEnv::capture(&sources.env),
        secret_store_type,
        log_format,
        log_level,
        log_file: layers.string("LOG_FILE").map(PathBuf::from),
        redis_connect_timeout,
        backtest_cash,
        sandbox,
        market_source,
        market_fetches_per_hour,
        stream_bar,
        backtest_commission,
        legacy_notices,
    })
}

fn parse_cors(layers: &Layers) -> Result<CorsOrigins, ConfigError> {
    let origins = layers.list("CORS_ALLOWED_ORIGINS");
    if origins.is_empty() {
        return Ok(CorsOrigins::None);
    }
    if origins == ["*"] {
        return Ok(CorsOrigins::Any);
    }
    for origin in &origins {
        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
        });
        if !valid || axum::http::HeaderValue::from_str(origin).is_err() {
            return Err(layers.invalid(
                "CORS_ALLOWED_ORIGINS",
                format!("`{origin}` is not an origin like https://app.example.com (or use * alone)"),
            ));
        }
    }
    Ok(CorsOrigins::List(origins))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load(&ConfigSources {
            file: ConfigFile::Skip,
            env: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            flags: vec![],
        })
    }

    fn error_text(pairs: &[(&str, &str)]) -> String {
        load_env(pairs).expect_err("expected a config error").to_string()
    }

    #[test]
    fn defaults_describe_the_embedded_deployment() {
        let config = load_env(&[]).unwrap();
        assert_eq!(config.bind_addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(config.database_url.expose(), "sqlite://data/algoagent.db");
        assert!(config.redis_url.is_none() && config.jwt_secret.is_none());
        assert_eq!(config.ai_deadline, Duration::from_secs(25));
        assert_eq!(config.request_timeout, Duration::from_secs(60));
        assert_eq!((config.user_rpm_default, config.user_burst_default, config.user_tpm_default), (10, 20, 10_000));
        assert_eq!(config.cors_allowed_origins, CorsOrigins::None);
    }

    #[test]
    fn each_bad_value_is_reported_by_name() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("BIND_ADDR", "nowhere")], "BIND_ADDR"),
            (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (&[("REDIS_URL", "http://x")], "REDIS_URL"),
            (&[("JWT_SECRET", "short")], "JWT_SECRET"),
            (&[("SECRET_KEY", "short")], "SECRET_KEY"),
            (&[("CORS_ALLOWED_ORIGINS", "app.example.com")], "CORS_ALLOWED_ORIGINS"),
            (&[("TRUSTED_PROXIES", "10.0.0.0/99")], "TRUSTED_PROXIES"),
            (&[("MAX_BODY_BYTES", "0")], "MAX_BODY_BYTES"),
            (&[("USER_RPM_DEFAULT", "-3")], "USER_RPM_DEFAULT"),
            (&[("AI_DEADLINE_SECS", "90")], "REQUEST_TIMEOUT_SECS"),
            (&[("SECRET_STORE_TYPE", "floppy")], "SECRET_STORE_TYPE"),
            (&[("SECRET_STORE_TYPE", "vault")], "VAULT_ADDR"),
            (&[("SECRET_STORE_TYPE", "vault"), ("VAULT_ADDR", "vault:8200")], "VAULT_ADDR"),
            (&[("SECRET_STORE_TYPE", "vault"), ("VAULT_ADDR", "http://v:8200")], "VAULT_TOKEN"),
            (
                &[("SECRET_STORE_TYPE", "vault"), ("VAULT_ADDR", "http://v:8200"), ("VAULT_ROLE_ID", "r")],
                "VAULT_ROLE_ID",
            ),
            (
                &[
                    ("SECRET_STORE_TYPE", "vault"),
                    ("VAULT_ADDR", "http://v:8200"),
                    ("VAULT_TOKEN", "t"),
                    ("VAULT_SECRET_LAYOUT", "flat"),
                ],
                "VAULT_SECRET_LAYOUT",
            ),
            (&[("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (&[("GEMINI_BASE_URL", "ftp://x")], "GEMINI_BASE_URL"),
            (&[("RUN_MIGRATIONS", "maybe")], "RUN_MIGRATIONS"),
            (&[("REDIS_TIMEOUT_MS", "soon")], "REDIS_TIMEOUT_MS"),
            (&[("DB_MAX_CONNECTIONS", "0")], "DB_MAX_CONNECTIONS"),
        ];
        for (env, name) in cases {
            let text = error_text(env);
            assert!(text.contains(name), "error for {env:?} should name {name}: {text}");
        }
    }

    #[test]
    fn azure_needs_a_vault_and_one_way_to_authenticate() {
        let text = error_text(&[("SECRET_STORE_TYPE", "azure")]);
        assert!(text.contains("AZURE_VAULT_URL"), "{text}");
        let vault = ("AZURE_VAULT_URL", "https://algo.vault.azure.net");
        let text = error_text(&[("SECRET_STORE_TYPE", "azure"), vault, ("AZURE_TENANT_ID", "t")]);
        assert!(text.contains("AZURE_CLIENT_SECRET") && text.contains("AZURE_USE_MANAGED_IDENTITY"), "{text}");
        let text = error_text(&[("SECRET_STORE_TYPE", "azure"), ("AZURE_VAULT_URL", "http://algo.vault.azure.net")]);
        assert!(text.contains("https://"), "{text}");

        let config = load_env(&[
            ("SECRET_STORE_TYPE", "azure"),
            vault,
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "client-secret-value"),
        ])
        .unwrap();
        let azure = config.azure.as_ref().unwrap();
        assert!(matches!(&azure.auth, AzureAuth::ClientSecret { authority_host, .. }
            if authority_host == "https://login.microsoftonline.com"));
        assert_eq!(azure.prefix, "");
        assert!(!format!("{config:?}").contains("client-secret-value"));

        // A managed identity is used only when asked for, and then needs no secret.
        let config =
            load_env(&[("SECRET_STORE_TYPE", "azure"), vault, ("AZURE_USE_MANAGED_IDENTITY", "true")]).unwrap();
        assert!(
            matches!(&config.azure.as_ref().unwrap().auth, AzureAuth::ManagedIdentity { endpoint, identity_header: None, .. }
            if endpoint == IMDS_TOKEN_ENDPOINT)
        );
        let config = load_env(&[
            ("SECRET_STORE_TYPE", "azure"),
            vault,
            ("AZURE_USE_MANAGED_IDENTITY", "true"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41234/msi/token"),
            ("IDENTITY_HEADER", "app-service-header"),
        ])
        .unwrap();
        assert!(
            matches!(&config.azure.as_ref().unwrap().auth, AzureAuth::ManagedIdentity { endpoint, identity_header: Some(_), .. }
            if endpoint == "http://127.0.0.1:41234/msi/token")
        );
        assert!(!format!("{config:?}").contains("app-service-header"));
    }

    #[test]
    fn a_secret_value_never_appears_in_an_error() {
        let text = error_text(&[("JWT_SECRET", "hunter2-is-short")]);
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let text = error_text(&[("REDIS_URL", "http://user:pa55word@host")]);
        assert!(!text.contains("pa55word"), "{text}");
    }

    #[test]
    fn connection_urls_hide_every_password() {
        let redacted = |url: &str| ConnectionUrl::new(url).redacted();
        assert_eq!(redacted("postgres://app:s3cr@t@db:5432/algo"), "postgres://app:***@db:5432/algo");
        assert_eq!(
            redacted("postgres://app@db/algo?sslmode=require&password=hunter2"),
            "postgres://app@db/algo?sslmode=require&password=***"
        );
        assert_eq!(redacted("redis://:p@ss@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redacted("sqlite://data/algoagent.db"), "sqlite://data/algoagent.db");
    }

    #[test]
    fn postgres_requires_a_jwt_secret_and_accepts_the_legacy_name() {
        let text = error_text(&[("DATABASE_URL", "postgres://u:p@localhost/db")]);
        assert!(text.contains("JWT_SECRET"), "{text}");
        let secret = "s".repeat(32);
        let config = load_env(&[("DATABASE_URL", "postgres://u:p@localhost/db"), ("SECRET_KEY", &secret)]).unwrap();
        let derived = config.jwt_secret.expect("a secret");
        assert_eq!(
            derived.expose_secret(),
            api_core::jwt::secret_from_legacy_key(&secret),
            "derived, not used as it is"
        );
        let insecure = format!("django-insecure-{}", "x".repeat(40));
        let text = error_text(&[("DATABASE_URL", "postgres://u:p@localhost/db"), ("SECRET_KEY", &insecure)]);
        assert!(text.contains("SECRET_KEY") && text.contains("django-insecure"), "{text}");
        assert!(!text.contains(&"x".repeat(40)), "the key itself is never shown: {text}");
        // The embedded default may keep a development key.
        assert!(load_env(&[("SECRET_KEY", &insecure)]).unwrap().jwt_secret.is_some());
    }

    #[test]
    fn layers_apply_in_order_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("algoagent.toml");
        std::fs::write(
            &path,
            "bind_addr = \"0.0.0.0:1\"\nuser_rpm_default = 3\nai_deadline_secs = 5\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
        )
        .unwrap();
        let config = load(&ConfigSources {
            file: ConfigFile::Explicit(path.clone()),
            env: vec![("USER_RPM_DEFAULT".into(), "4".into()), ("BIND_ADDR".into(), "0.0.0.0:2".into())],
            flags: vec![("BIND_ADDR", "0.0.0.0:3".into())],
        })
        .unwrap();
        assert_eq!(config.bind_addr, "0.0.0.0:3".parse().unwrap());
        assert_eq!(config.user_rpm_default, 4);
        assert_eq!(config.ai_deadline, Duration::from_secs(5));
        assert_eq!(config.trusted_proxies.len(), 2);
    }

    #[test]
    fn an_unknown_file_key_or_a_missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("algoagent.toml");
        std::fs::write(&path, "bind_adress = \"0.0.0.0:1\"\n").unwrap();
        let sources = |file| ConfigSources { file, env: vec![], flags: vec![] };
        let text = load(&sources(ConfigFile::Explicit(path))).unwrap_err().to_string();
        assert!(text.contains("bind_adress"), "{text}");
        let missing = dir.path().join("absent.toml");
        assert!(load(&sources(ConfigFile::Explicit(missing))).is_err());
    }

    #[test]
    fn the_readme_table_lists_every_setting() {
        let readme = include_str!("../../../README.md");
        for setting in SETTINGS {
            let row = format!("| `{}`", setting.name);
            assert!(readme.contains(&row), "README.md has no table row for {}", setting.name);
        }
    }

    #[test]
    fn debug_output_redacts_passwords_and_secrets() {
        let secret = "k".repeat(40);
        let config = load_env(&[
            ("DATABASE_URL", "postgres://app:topsecretpw@db:5432/algo"),
            ("REDIS_URL", "redis://:redispw@cache:6379"),
            ("JWT_SECRET", &secret),
            ("GEMINI_KEY_FLASH_01", "AIzaSyTHISISAKEY"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("AIzaSyTHISISAKEY") && debug.contains("GEMINI_KEY_FLASH_01"), "{debug}");
        assert!(!debug.contains("topsecretpw") && !debug.contains("redispw") && !debug.contains(&secret), "{debug}");
        assert!(debug.contains("postgres://app:***@db:5432/algo"), "{debug}");
    }

    /// Issue 13: every variable of the old app's env.example, commented-out
    /// ones included, is a setting here, a key secret, or named as ignored.
    #[test]
    fn every_variable_of_the_old_env_example_is_honoured_or_named() {
        let example = include_str!("../../../fixtures/legacy-config/env.example");
        let names = example.lines().filter_map(|line| {
            let line = line.trim_start_matches('#').trim();
            let (name, _) = line.split_once('=')?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
        });
        for name in names {
            let known = find_setting(name).is_some()
                || IGNORED_LEGACY.iter().any(|(ignored, _)| *ignored == name)
                || name.starts_with("GEMINI_KEY_")
                || name == "GEMINI_API_KEY";
            assert!(known, "{name} from env.example is neither honoured nor named as ignored");
        }
    }

    #[test]
    fn the_old_logging_and_backtest_settings_are_read() {
        let config = load_env(&[
            ("LOG_LEVEL", "WARNING"),
            ("REDIS_TIMEOUT", "5"),
            ("BACKTEST_CASH", "25000"),
            ("BACKTEST_COMMISSION", "0.001"),
            ("ENABLE_KEY_ROTATION", "false"),
            ("DEBUG", "True"),
        ])
        .unwrap();
        assert_eq!(config.log_level.as_deref(), Some("warn"));
        assert_eq!(config.redis_connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.redis_timeout, Duration::from_millis(50), "the per-call deadline is untouched");
        assert_eq!((config.backtest_cash, config.backtest_commission), (25_000.0, 0.001));
        assert!(config.legacy_notices.iter().any(|n| n.starts_with("ENABLE_KEY_ROTATION=false is accepted")));
        assert!(config.legacy_notices.iter().any(|n| n.starts_with("DEBUG is ignored")));
        for (name, value) in [("LOG_LEVEL", "LOUD"), ("REDIS_TIMEOUT", "0"), ("BACKTEST_COMMISSION", "1.5")] {
            let message = load_env(&[(name, value)]).unwrap_err().to_string();
            assert!(message.contains(name), "{message}");
        }
    }
}
