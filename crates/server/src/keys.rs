//! Building the key pool and its companions from the configuration: the one
//! place `serve` and the `keys` commands get them from.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gemini_client::{Executor, ExecutorSettings, GeminiClient, ModelProbe};
use key_rotation::activity::{Activity, RedisActivity};
use key_rotation::clock::SystemClock;
use key_rotation::config::{load_pool, PoolConfig};
use key_rotation::events::EventLog;
use key_rotation::fair_use::{FairUse, MemoryFairUse, RedisFairUse, UserLimits};
use key_rotation::limiter::failover::FailoverLimiter;
use key_rotation::limiter::redis::RedisLimiter;
use key_rotation::limiter::Limiter;
use key_rotation::pool::{KeyPool, PoolOptions};
use key_rotation::redis_conn::RedisHandle;
use key_rotation::replicas::ReplicaRegistry;
use key_rotation::secrets::{EnvSecrets, FileSecrets, SecretStore};
use key_rotation::throttle::{MemoryThrottle, RedisThrottle, Throttle};
use secret_stores::aws::{AwsCredentialsSource, AwsSettings, AwsStore, ContainerCredentials, WebIdentity};
use secret_stores::azure::{AzureCredential, AzureSettings, AzureStore};
use secret_stores::vault::{Layout, VaultAuth, VaultSettings, VaultStore};

use crate::config::{AzureAuth, Config, SecretStoreType};

/// How long a replica counts as live after its last heartbeat.
pub const REPLICA_TTL: Duration = Duration::from_secs(10);
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

pub struct KeyServices {
    pub pool: Arc<KeyPool>,
    /// Where the keys' secrets are read from, at start-up and every refresh.
    pub secrets: Arc<dyn SecretStore>,
    pub executor: Arc<Executor>,
    pub probe: Arc<ModelProbe>,
    pub fair_use: Arc<dyn FairUse>,
    pub throttle: Arc<dyn Throttle>,
    pub redis: Option<Arc<RedisHandle>>,
    pub registry: Option<Arc<ReplicaRegistry>>,
    pub failover: Option<Arc<FailoverLimiter>>,
}

pub fn user_limits(config: &Config) -> UserLimits {
    UserLimits {
        rpm: config.user_rpm_default,
        burst: config.user_burst_default,
        tpm: u64::from(config.user_tpm_default),
    }
}

/// The secret store `SECRET_STORE_TYPE` names.
pub fn secret_store(config: &Config) -> anyhow::Result<Arc<dyn SecretStore>> {
    Ok(match config.secret_store_type {
        SecretStoreType::Env => Arc::new(EnvSecrets::new(config.key_env.vars()).context("key secrets")?),
        SecretStoreType::File => Arc::new(FileSecrets::load(&config.key_secrets_file).context("KEY_SECRETS_FILE")?),
        SecretStoreType::Vault => {
            let vault = config.vault.as_ref().context("SECRET_STORE_TYPE=vault without its settings")?;
            let auth = match (&vault.token, &vault.token_file, &vault.role_id, &vault.secret_id) {
                (Some(token), _, _, _) => VaultAuth::Token(token.clone()),
                (None, Some(file), _, _) => VaultAuth::TokenFile(file.clone()),
                (None, None, Some(role_id), Some(secret_id)) => {
                    VaultAuth::AppRole { role_id: role_id.clone(), secret_id: secret_id.clone() }
                }
                _ => anyhow::bail!("Vault needs VAULT_TOKEN, VAULT_TOKEN_FILE, or VAULT_ROLE_ID with VAULT_SECRET_ID"),
            };
            let ca_cert = read_ca_cert(vault.ca_cert.as_deref(), "VAULT_CACERT")?;
            let settings = VaultSettings {
                addr: vault.addr.clone(),
                auth,
                mount: vault.mount.clone(),
                path: vault.path.clone(),
                layout: if vault.single_layout { Layout::Single } else { Layout::PerKey },
                ca_cert,
            };
            Arc::new(VaultStore::new(settings)?)
        }
        SecretStoreType::Aws => {
            let aws = config.aws.as_ref().context("SECRET_STORE_TYPE=aws without its settings")?;
            Arc::new(AwsStore::new(AwsSettings {
                region: aws.region.clone(),
                endpoint: aws.endpoint.clone(),
                prefix: aws.prefix.clone(),
                secret_id: aws.secret_id.clone(),
                credentials: AwsCredentialsSource {
                    access_key_id: aws.access_key_id.clone(),
                    secret_access_key: aws.secret_access_key.clone(),
                    session_token: aws.session_token.clone(),
                    profile: aws.profile.clone(),
                    shared_credentials_file: aws.shared_credentials_file.clone(),
                    web_identity: aws.web_identity.as_ref().map(|identity| WebIdentity {
                        token_file: identity.token_file.clone(),
                        role_arn: identity.role_arn.clone(),
                        session_name: identity.session_name.clone(),
                        sts_endpoint: identity.sts_endpoint.clone(),
                    }),
                    container: aws.container.as_ref().map(|(url, authorization)| ContainerCredentials {
                        url: url.clone(),
                        authorization: authorization.clone(),
                    }),
                    instance_metadata: aws.instance_metadata.clone(),
                },
            })?)
        }
        SecretStoreType::Azure => {
            let azure = config.azure.as_ref().context("SECRET_STORE_TYPE=azure without its settings")?;
            let credential = match &azure.auth {
                AzureAuth::ClientSecret { tenant_id, client_id, client_secret, authority_host } => {
                    AzureCredential::ClientSecret {
                        tenant_id: tenant_id.clone(),
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                        authority_host: authority_host.clone(),
                    }
                }
                AzureAuth::ManagedIdentity { endpoint, identity_header, client_id } => {
                    AzureCredential::ManagedIdentity {
                        endpoint: endpoint.clone(),
                        identity_header: identity_header.clone(),
                        client_id: client_id.clone(),
                    }
                }
            };
            Arc::new(AzureStore::new(AzureSettings {
                vault_url: azure.vault_url.clone(),
                credential,
                prefix: azure.prefix.clone(),
                ca_cert: read_ca_cert(azure.ca_cert.as_deref(), "AZURE_CA_CERT")?,
            })?)
        }
    })
}

/// A private CA's PEM, named by `setting`.
fn read_ca_cert(path: Option<&std::path::Path>, setting: &str) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|path| std::fs::read(path).with_context(|| format!("{setting} {}", path.display()))).transpose()
}

/// Reads `KEYS_FILE` and the secrets of the keys it names from `store`.
/// Errors name the key and field, or the store, its address and the cause.
pub async fn load_pool_config(config: &Config, store: &dyn SecretStore) -> anyhow::Result<PoolConfig> {
    let path = &config.keys_file;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(anyhow::anyhow!("KEYS_FILE {}: {err}", path.display())),
    };
    let ids = text
        .as_deref()
        .map(key_rotation::config::key_ids)
        .transpose()
        .with_context(|| format!("KEYS_FILE {}", path.display()))?;
    let snapshot = store.fetch(ids.as_deref()).await.context("reading the key secrets")?;
    load_pool(path, &snapshot).with_context(|| format!("KEYS_FILE {}", path.display()))
}

/// keys.json's keys without their secrets, each shown as `…????`: what
/// `keys status` reads when the store does not answer it, so the shared
/// quota state stays visible in the outage it helps diagnose. Never served.
pub fn load_pool_config_unread(config: &Config) -> anyhow::Result<PoolConfig> {
    struct Unread;
    impl key_rotation::secrets::SecretSource for Unread {
        fn secret_for(&self, _key_id: &str) -> Option<key_rotation::secrets::ApiKeySecret> {
            Some(key_rotation::secrets::ApiKeySecret::new("????"))
        }
        fn discover(&self) -> Vec<(String, key_rotation::secrets::ApiKeySecret)> {
            Vec::new()
        }
        fn looked_in(&self, _key_id: &str) -> String {
            "nowhere (the store did not answer)".to_string()
        }
    }
    let path = &config.keys_file;
    load_pool(path, &Unread).with_context(|| format!("KEYS_FILE {}", path.display()))
}

/// The pool, fair use and throttles (shared through Redis when configured,
/// in this process otherwise) and the executor over them, from `KEYS_FILE`
/// and the secret store; the pool's history goes to `events`.
pub async fn build(config: &Config, events: Arc<dyn EventLog>) -> anyhow::Result<KeyServices> {
    let secrets = secret_store(config)?;
    let pool = load_pool_config(config, secrets.as_ref()).await?;
    build_with(config, pool, secrets, &config.gemini_base_url, events)
}

/// As [`build`], with a given pool and Gemini base URL (the demo's).
pub fn build_with(
    config: &Config,
    pool_config: PoolConfig,
    secrets: Arc<dyn SecretStore>,
    gemini_base_url: &str,
    events: Arc<dyn EventLog>,
) -> anyhow::Result<KeyServices> {
    describe(&pool_config);
    let client = GeminiClient::new(gemini_base_url, gemini_client::DEFAULT_VERSION, Duration::from_secs(5))
        .context("GEMINI_BASE_URL")?;
    let redis = config
        .redis_url
        .as_ref()
        .map(|url| RedisHandle::new(url.expose(), config.redis_timeout).map(Arc::new))
        .transpose()
        .context("REDIS_URL")?;
    let prefix = &config.redis_key_prefix;
    let options = PoolOptions::default();
    let clock = Arc::new(SystemClock);
    let Some(handle) = redis else {
        let limiter = Arc::new(key_rotation::limiter::memory::MemoryLimiter::default());
        let pool = KeyPool::new(pool_config, limiter, events, clock, options);
        let fair_use: Arc<dyn FairUse> = Arc::new(MemoryFairUse::default());
        let pool = Arc::new(pool);
        return Ok(KeyServices {
            secrets,
            executor: executor(config, &client, &pool, &fair_use),
            probe: Arc::new(ModelProbe::new(client)),
            pool,
            fair_use,
            throttle: Arc::new(MemoryThrottle::new()),
            redis: None,
            registry: None,
            failover: None,
        });
    };
    let replica = options.replica.clone();
    let registry = Arc::new(ReplicaRegistry::new(handle.clone(), prefix, &replica, REPLICA_TTL));
    let failover = Arc::new(FailoverLimiter::new(RedisLimiter::new(handle.clone(), prefix), registry.clone()));
    let limiter: Arc<dyn Limiter> = failover.clone();
    let activity = Arc::new(Activity::new(Box::new(RedisActivity::new(handle.clone(), prefix)), clock.clone()));
    let pool = Arc::new(KeyPool::new(pool_config, limiter, events, clock, options).with_activity(activity));
    let fair_use: Arc<dyn FairUse> = Arc::new(RedisFairUse::new(handle.clone(), prefix));
    Ok(KeyServices {
        secrets,
        executor: executor(config, &client, &pool, &fair_use),
        probe: Arc::new(ModelProbe::new(client)),
        pool,
        fair_use,
        throttle: Arc::new(RedisThrottle::new(handle.clone(), prefix, replica)),
        redis: Some(handle),
        registry: Some(registry),
        failover: Some(failover),
    })
}

fn executor(config: &Config, client: &GeminiClient, pool: &Arc<KeyPool>, fair_use: &Arc<dyn FairUse>) -> Arc<Executor> {
    let settings = ExecutorSettings { deadline: config.ai_deadline, ..ExecutorSettings::default() };
    Arc::new(Executor::new(client.clone(), pool.clone(), fair_use.clone(), user_limits(config), settings))
}

/// Re-checks disabled keys every health-check interval (`GET models/{m}`).
pub async fn probe_disabled_keys(pool: Arc<KeyPool>, probe: Arc<ModelProbe>) {
    loop {
        tokio::time::sleep(pool.config().health_check_interval).await;
        if let Err(err) = pool.probe_disabled(probe.as_ref()).await {
            tracing::warn!(error = %err, "probing disabled keys failed");
        }
    }
}

/// Reads keys.json and the secrets again every `SECRET_REFRESH_SECS` and
/// swaps the pool when they changed: a rotated secret is used by new calls
/// after the next refresh (calls in flight keep the one they were given), a
/// key whose secret left the store is retired, a key added to both joins.
/// A store that fails changes nothing: the last secrets stay in use, the
/// read is retried with backoff (from 5 s, doubling, never longer apart
/// than the refresh interval), and the failure is logged once per spell.
/// Each attempt's outcome is shared through Redis for `keys status`.
pub async fn refresh_secrets(
    pool: Arc<KeyPool>,
    config: Config,
    store: Arc<dyn SecretStore>,
    status: Arc<api_core::counters::SecretStoreStatus>,
    redis: Option<Arc<RedisHandle>>,
) {
    const FIRST_RETRY: Duration = Duration::from_secs(5);
    let shared = redis.map(|redis| SharedStoreStatus::new(redis, &config));
    let mut retry: Option<Duration> = None;
    loop {
        tokio::time::sleep(retry.unwrap_or(config.secret_refresh)).await;
        let outcome = load_pool_config(&config, store.as_ref()).await;
        let cause = outcome.as_ref().err().map(|err| format!("{err:#}"));
        match outcome {
            Ok(fresh) => {
                status.answered();
                if retry.take().is_some() {
                    tracing::info!(store = %store.describe(), "the secret store answers again");
                }
                if fingerprint(&fresh) != fingerprint(&pool.config()) {
                    describe(&fresh);
                    pool.reload(fresh).await;
                    tracing::info!("key secrets or keys.json changed; the pool now uses them");
                }
            }
            Err(_) => {
                status.failed(u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default());
                if retry.is_none() {
                    tracing::warn!(
                        error = cause.as_deref().unwrap_or_default(),
                        "refreshing the key secrets failed; the last ones stay in use until the store answers"
                    );
                }
                let next = retry.map_or(FIRST_RETRY, |last| last * 2);
                retry = Some(next.min(config.secret_refresh));
            }
        }
        if let Some(shared) = &shared {
            shared.publish(pool.replica().as_str(), &status, cause.as_deref()).await;
        }
    }
}

/// One replica's last word on the secret store, kept in Redis.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStoreStatus {
    #[serde(skip)]
    pub replica: String,
    pub at_ms: u64,
    pub failing_since_ms: Option<u64>,
    pub failures: u64,
    /// Why the last read failed: the store, its address and the cause,
    /// never a credential (a `StoreFailure` has none to give).
    pub cause: Option<String>,
}

/// What every replica last saw of the secret store: one Redis hash, a
/// field per replica, so `algoagent keys status` on any machine shows a
/// store that stopped answering the servers.
pub struct SharedStoreStatus {
    redis: Arc<RedisHandle>,
    key: String,
    /// Older reports are from replicas that have gone.
    stale_after: Duration,
}

impl SharedStoreStatus {
    pub fn new(redis: Arc<RedisHandle>, config: &Config) -> Self {
        Self {
            redis,
            key: format!("{}:secret_store", config.redis_key_prefix),
            stale_after: (config.secret_refresh * 3).max(Duration::from_secs(60)),
        }
    }

    async fn publish(&self, replica: &str, status: &api_core::counters::SecretStoreStatus, cause: Option<&str>) {
        let report = ReplicaStoreStatus {
            replica: replica.to_string(),
            at_ms: u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default(),
            failing_since_ms: status.failing_since_ms(),
            failures: status.failures(),
            cause: cause.map(str::to_string),
        };
        let Ok(json) = serde_json::to_string(&report) else { return };
        let mut pipe = redis::pipe();
        pipe.hset(&self.key, replica, json).ignore();
        pipe.pexpire(&self.key, i64::try_from(self.stale_after.as_millis()).unwrap_or(i64::MAX)).ignore();
        if let Err(err) = self.redis.pipeline::<()>(&pipe).await {
            tracing::debug!(%err, "could not share the secret store's status");
        }
    }

    /// The live replicas' reports.
    pub async fn read(&self) -> anyhow::Result<Vec<ReplicaStoreStatus>> {
        let fields: std::collections::HashMap<String, String> =
            self.redis.query(redis::cmd("HGETALL").arg(&self.key)).await?;
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
        let stale_ms = u64::try_from(self.stale_after.as_millis()).unwrap_or(u64::MAX);
        let mut reports: Vec<ReplicaStoreStatus> = fields
            .into_iter()
            .filter_map(|(replica, json)| {
                let report: ReplicaStoreStatus = serde_json::from_str(&json).ok()?;
                Some(ReplicaStoreStatus { replica, ..report })
            })
            .filter(|report| now.saturating_sub(report.at_ms) <= stale_ms)
            .collect();
        reports.sort_by(|a, b| a.replica.cmp(&b.replica));
        Ok(reports)
    }
}

/// What a refresh compares: each key's id, secret and settings. Only this
/// process ever sees it.
fn fingerprint(pool: &PoolConfig) -> Vec<String> {
    pool.keys
        .iter()
        .map(|k| {
            format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}",
                k.key_id,
                k.secret.expose(),
                k.model,
                k.project,
                k.limits,
                k.active
            )
        })
        .collect()
}

/// Logs the pool's shape (never a secret).
pub fn describe(pool: &PoolConfig) {
    if pool.keys.is_empty() {
        tracing::warn!("no API keys configured: AI endpoints will answer 503 until keys are added");
        return;
    }
    let buckets: std::collections::BTreeSet<_> = pool.keys.iter().map(|k| k.bucket()).collect();
    tracing::info!(
        keys = pool.keys.len(),
        buckets = buckets.len(),
        strategy = pool.strategy.as_str(),
        window_secs = pool.window.as_secs_f64(),
        "key pool loaded"
    );
}
