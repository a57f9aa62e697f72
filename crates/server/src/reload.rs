//! Asking every replica to re-read the key configuration: `algoagent keys
//! reload`, the operators' dashboard, and the secret stores next. One
//! broadcast, two transports:
//! - with `REDIS_URL`, a message on one Redis channel that every replica
//!   follows, so a reload reaches them all wherever the command runs;
//! - without, SIGHUP to the one local server named in the pid file, sent
//!   with a system call (the runtime image has no `kill` binary).
//!
//! A replica that receives the request re-reads `KEYS_FILE` and swaps the
//! pool without dropping calls in flight; a bad file is logged and the
//! running pool kept.

use std::sync::Arc;

use anyhow::Context;
use key_rotation::pool::KeyPool;
use key_rotation::redis_conn::RedisHandle;

use crate::config::Config;

pub const PID_FILE: &str = "algoagent.pid";

/// Whom a reload request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// This many replicas were listening on the channel.
    Replicas(u64),
    /// The local server with this process id was signalled.
    Process(i32),
}

fn channel(prefix: &str) -> String {
    format!("{prefix}:reload")
}

/// Asks every replica to reload.
pub async fn request(config: &Config) -> anyhow::Result<Delivered> {
    if let Some(url) = &config.redis_url {
        let redis = RedisHandle::new(url.expose(), config.redis_timeout).context("REDIS_URL")?;
        let replicas =
            redis.publish(&channel(&config.redis_key_prefix), "keys").await.context("publishing the reload")?;
        return Ok(Delivered::Replicas(replicas));
    }
    let pid_path = config.data_dir.join(PID_FILE);
    let text = std::fs::read_to_string(&pid_path)
        .with_context(|| format!("no running server found ({})", pid_path.display()))?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .with_context(|| format!("{} is corrupt", pid_path.display()))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .with_context(|| format!("could not signal process {}", pid.as_raw_nonzero()))?;
    Ok(Delivered::Process(pid.as_raw_nonzero().get()))
}

/// [`request`] for the operators' dashboard.
pub struct Broadcast {
    config: Config,
}

impl Broadcast {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl api_core::ReloadBroadcast for Broadcast {
    async fn request_reload(&self) -> anyhow::Result<String> {
        Ok(match request(&self.config).await? {
            Delivered::Replicas(count) => format!("asked {count} replica(s) to reload"),
            Delivered::Process(_) => "asked this server to reload".to_string(),
        })
    }
}

/// Reloads on SIGHUP, and on every broadcast request when Redis is configured.
pub async fn listen(
    pool: Arc<KeyPool>,
    config: Config,
    redis: Option<Arc<RedisHandle>>,
    secrets: Arc<dyn key_rotation::secrets::SecretStore>,
) {
    let by_signal = async {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; key reload by signal is unavailable");
            return std::future::pending().await;
        };
        while hangups.recv().await.is_some() {
            reload(&pool, &config, secrets.as_ref()).await;
        }
    };
    let by_broadcast = async {
        match &redis {
            Some(redis) => {
                redis.follow(&channel(&config.redis_key_prefix), |_| reload(&pool, &config, secrets.as_ref())).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::join!(by_signal, by_broadcast);
}

async fn reload(pool: &KeyPool, config: &Config, secrets: &dyn key_rotation::secrets::SecretStore) {
    match crate::keys::load_pool_config(config, secrets).await {
        Ok(new_config) => {
            crate::keys::describe(&new_config);
            pool.reload(new_config).await;
            tracing::info!("key pool reloaded");
        }
        Err(err) => tracing::error!(error = format!("{err:#}"), "key pool reload failed; keeping the running pool"),
    }
}

/// Names this process in the data directory, for a reload by signal.
pub fn write_pid_file(config: &Config) -> Option<std::path::PathBuf> {
    let path = config.data_dir.join(PID_FILE);
    let written =
        std::fs::create_dir_all(&config.data_dir).and_then(|()| std::fs::write(&path, std::process::id().to_string()));
    match written {
        Ok(()) => Some(path),
        Err(err) => {
            tracing::warn!(error = %err, path = %path.display(), "could not write the pid file");
            None
        }
    }
}
