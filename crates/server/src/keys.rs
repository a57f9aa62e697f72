//! Building the key pool and its companions from the configuration: the one
//! place `serve` and the `keys` commands get them from.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use key_rotation::clock::SystemClock;
use key_rotation::config::{load_pool, PoolConfig};
use key_rotation::events::{EventLog, MemoryEventLog, RedisEventLog};
use key_rotation::fair_use::{FairUse, MemoryFairUse, RedisFairUse, UserLimits};
use key_rotation::limiter::failover::FailoverLimiter;
use key_rotation::limiter::memory::MemoryLimiter;
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
        SecretStoreType::Env => Box::new(EnvSecrets::new(config.key_env.vars())),
        SecretStoreType::File => Box::new(FileSecrets::load(&config.key_secrets_file).context("KEY_SECRETS_FILE")?),
    })
}

/// Reads `KEYS_FILE` with the configured secrets. Errors name the key and field.
pub fn load_pool_config(config: &Config) -> anyhow::Result<PoolConfig> {
    let secrets = secret_source(config)?;
    load_pool(&config.keys_file, secrets.as_ref()).with_context(|| format!("KEYS_FILE {}", config.keys_file.display()))
}

/// The pool, fair use and throttles: shared through Redis when configured,
/// in this process otherwise.
pub fn build(config: &Config) -> anyhow::Result<KeyServices> {
    let pool_config = load_pool_config(config)?;
    describe(&pool_config);
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
        let pool = KeyPool::new(
            pool_config,
            Arc::new(MemoryLimiter::default()),
            Arc::new(MemoryEventLog::default()),
            clock,
            options,
        );
        return Ok(KeyServices {
            pool: Arc::new(pool),
            fair_use: Arc::new(MemoryFairUse::default()),
            throttle: Arc::new(MemoryThrottle::new()),
            redis: None,
            registry: None,
            failover: None,
        });
    };
    let replica_id = format!("{}-{}", hostname(), std::process::id());
    let registry = Arc::new(ReplicaRegistry::new(handle.clone(), prefix, &replica_id, REPLICA_TTL));
    let failover = Arc::new(FailoverLimiter::new(RedisLimiter::new(handle.clone(), prefix), registry.clone()));
    let limiter: Arc<dyn Limiter> = failover.clone();
    let events: Arc<dyn EventLog> = Arc::new(RedisEventLog::new(handle.clone(), prefix));
    let pool = KeyPool::new(pool_config, limiter, events, clock, options);
    Ok(KeyServices {
        pool: Arc::new(pool),
        fair_use: Arc::new(RedisFairUse::new(handle.clone(), prefix)),
        throttle: Arc::new(RedisThrottle::new(handle.clone(), prefix)),
        redis: Some(handle),
        registry: Some(registry),
        failover: Some(failover),
    })
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

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "replica".to_string())
}
