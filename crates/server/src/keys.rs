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
use key_rotation::secrets::{EnvSecrets, FileSecrets, SecretSource};
use key_rotation::throttle::{MemoryThrottle, RedisThrottle, Throttle};

use crate::config::{Config, SecretStoreType};

/// How long a replica counts as live after its last heartbeat.
pub const REPLICA_TTL: Duration = Duration::from_secs(10);
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

pub struct KeyServices {
    pub pool: Arc<KeyPool>,
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

fn secret_source(config: &Config) -> anyhow::Result<Box<dyn SecretSource>> {
    Ok(match config.secret_store_type {
        SecretStoreType::Env => Box::new(EnvSecrets::new(config.key_env.vars()).context("key secrets")?),
        SecretStoreType::File => Box::new(FileSecrets::load(&config.key_secrets_file).context("KEY_SECRETS_FILE")?),
    })
}

/// Reads `KEYS_FILE` with the configured secrets. Errors name the key and field.
pub fn load_pool_config(config: &Config) -> anyhow::Result<PoolConfig> {
    let secrets = secret_source(config)?;
    load_pool(&config.keys_file, secrets.as_ref()).with_context(|| format!("KEYS_FILE {}", config.keys_file.display()))
}

/// The pool, fair use and throttles (shared through Redis when configured,
/// in this process otherwise) and the executor over them, from `KEYS_FILE`;
/// the pool's history goes to `events`.
pub fn build(config: &Config, events: Arc<dyn EventLog>) -> anyhow::Result<KeyServices> {
    build_with(config, load_pool_config(config)?, &config.gemini_base_url, events)
}

/// As [`build`], with a given pool and Gemini base URL (the demo's).
pub fn build_with(
    config: &Config,
    pool_config: PoolConfig,
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
