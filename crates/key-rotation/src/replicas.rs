//! How a replica names itself, and a heartbeat registry of live replicas in
//! Redis. The registry's count sizes each replica's share of the limits
//! while Redis is unreachable.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use crate::redis_conn::{RedisError, RedisHandle};

static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('ZADD', KEYS[1], now, ARGV[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return redis.call('ZCARD', KEYS[1])
",
    )
});

/// The one name a replica goes by wherever replicas share state: fair-use
/// entries, throttle events, admission markers, the heartbeat registry.
/// Random at start, because nothing else is unique: every container of a
/// compose file is PID 1, and a restarted replica keeps its hostname.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaId(Arc<str>);

impl ReplicaId {
    pub fn random() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()).into())
    }

    /// A chosen name, for tests that play several replicas in one process.
    pub fn named(name: &str) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct ReplicaRegistry {
    redis: Arc<RedisHandle>,
    key: String,
    id: String,
    /// How long a replica counts as live after its last heartbeat.
    ttl: Duration,
    live: AtomicU32,
}

impl ReplicaRegistry {
    pub fn new(redis: Arc<RedisHandle>, prefix: &str, id: &ReplicaId, ttl: Duration) -> Self {
        Self { redis, key: format!("{prefix}:replicas"), id: id.to_string(), ttl, live: AtomicU32::new(1) }
    }

    async fn send(&self, op: &str) -> Result<u32, RedisError> {
        let mut invocation = HEARTBEAT.prepare_invoke();
        invocation.key(&self.key).arg(op).arg(&self.id).arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
        let live: u32 = self.redis.invoke(&invocation).await?;
        Ok(live)
    }

    /// Announces this replica and refreshes the live count.
    pub async fn heartbeat(&self) -> Result<u32, RedisError> {
        let live = self.send("beat").await?.max(1);
        self.live.store(live, Ordering::Relaxed);
        Ok(live)
    }

    /// Leaves the registry (at shutdown), so the others' shares grow at once.
    pub async fn leave(&self) -> Result<(), RedisError> {
        self.send("leave").await.map(|_| ())
    }

    /// The last known number of live replicas (at least 1). While Redis is
    /// down this is the count from before the outage.
    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// Beats every `every` until the task is dropped.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            if let Err(err) = self.heartbeat().await {
                tracing::debug!(error = %err, "replica heartbeat failed");
            }
        }
    }
}
