//! Sliding-window throttles for abuse control (failed logins, registrations).
//!
//! A bucket admits at most `limit` events in any trailing `window`. The
//! memory implementation serves one process; a shared implementation lets
//! every replica count together.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Script;

use crate::redis_conn::RedisHandle;

/// Refused: the bucket is full until `retry_after` from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

#[async_trait]
pub trait Throttle: Send + Sync {
    /// Refuses if `bucket` already holds `limit` events in the trailing
    /// `window`, without recording anything.
    async fn check(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled>;

    /// Records one event unless the bucket is full, in which case it refuses
    /// as [`Throttle::check`] would.
    async fn hit(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled>;
}

/// One process's throttle: a log of event times per bucket.
#[derive(Debug, Default)]
pub struct MemoryThrottle {
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    logs: HashMap<String, VecDeque<Instant>>,
    calls_since_sweep: u32,
}

/// How many calls pass between sweeps of idle buckets, which bounds memory
/// under a flood of distinct usernames or addresses.
const SWEEP_EVERY: u32 = 1024;
/// Longest window any caller uses; a bucket idle this long is empty.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl MemoryThrottle {
    pub fn new() -> Self {
        Self::default()
    }

    fn decide(&self, bucket: &str, limit: u32, window: Duration, record: bool) -> Result<(), Throttled> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        buckets.calls_since_sweep += 1;
        if buckets.calls_since_sweep >= SWEEP_EVERY {
            buckets.calls_since_sweep = 0;
            buckets.logs.retain(|_, log| log.back().is_some_and(|last| now.duration_since(*last) < MAX_WINDOW));
        }
        let log = buckets.logs.entry(bucket.to_string()).or_default();
        while log.front().is_some_and(|first| now.duration_since(*first) >= window) {
            log.pop_front();
        }
        if log.len() >= limit as usize {
            // The bucket frees a slot when the oldest event that keeps it full ages out.
            let blocking = log[log.len() - limit as usize];
            let retry_after = window.saturating_sub(now.duration_since(blocking));
            return Err(Throttled { retry_after });
        }
        if record {
            log.push_back(now);
        }
        Ok(())
    }
}

#[async_trait]
impl Throttle for MemoryThrottle {
    async fn check(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled> {
        self.decide(bucket, limit, window, false)
    }

    async fn hit(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled> {
        self.decide(bucket, limit, window, true)
    }
}

static THROTTLE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("throttle.lua")));

/// The throttle shared by every replica. While Redis is unreachable each
/// replica counts on its own: looser across replicas, never unlimited.
pub struct RedisThrottle {
    redis: Arc<RedisHandle>,
    prefix: String,
    fallback: MemoryThrottle,
    sequence: AtomicU64,
    replica: u64,
}

impl RedisThrottle {
    pub fn new(redis: Arc<RedisHandle>, prefix: &str) -> Self {
        let replica = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()) ^ u64::from(std::process::id()))
            .unwrap_or_default();
        Self {
            redis,
            prefix: prefix.to_string(),
            fallback: MemoryThrottle::new(),
            sequence: AtomicU64::new(0),
            replica,
        }
    }

    async fn run(&self, op: &str, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled> {
        let member = format!("{:x}-{}", self.replica, self.sequence.fetch_add(1, Ordering::Relaxed));
        let mut invocation = THROTTLE.prepare_invoke();
        invocation
            .key(format!("{}:throttle:{bucket}", self.prefix))
            .arg(op)
            .arg(limit)
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
            .arg(member);
        match self.redis.invoke::<u64>(&invocation).await {
            Ok(0) => Ok(()),
            Ok(wait_ms) => Err(Throttled { retry_after: Duration::from_millis(wait_ms) }),
            Err(err) => {
                tracing::warn!(error = %err, "throttle: Redis unreachable, counting on this replica");
                self.fallback.decide(bucket, limit, window, op == "hit")
            }
        }
    }
}

#[async_trait]
impl Throttle for RedisThrottle {
    async fn check(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled> {
        self.run("check", bucket, limit, window).await
    }

    async fn hit(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled> {
        self.run("hit", bucket, limit, window).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttles() -> Vec<Box<dyn Throttle>> {
        let mut all: Vec<Box<dyn Throttle>> = vec![Box::new(MemoryThrottle::new())];
        if let Some(url) = std::env::var("TEST_REDIS_URL").ok().filter(|u| !u.is_empty()) {
            let handle = Arc::new(RedisHandle::new(&url, Duration::from_secs(2)).unwrap());
            let prefix = format!("throttle-test-{}", std::process::id());
            all.push(Box::new(RedisThrottle::new(handle, &prefix)));
        }
        all
    }

    #[tokio::test]
    async fn every_throttle_admits_its_limit_then_refuses_with_the_wait() {
        for (i, throttle) in throttles().into_iter().enumerate() {
            let window = Duration::from_secs(60);
            let bucket = format!("login:carol:{i}:{:?}", Instant::now());
            for _ in 0..3 {
                throttle.hit(&bucket, 3, window).await.unwrap();
            }
            let refused = throttle.hit(&bucket, 3, window).await.unwrap_err();
            assert!(refused.retry_after > Duration::from_secs(59) && refused.retry_after <= window);
            assert!(throttle.check(&bucket, 3, window).await.is_err());
            throttle.check(&format!("{bucket}-other"), 3, window).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_bucket_admits_its_limit_then_refuses_with_the_wait() {
        let throttle = MemoryThrottle::new();
        let window = Duration::from_secs(60);
        for _ in 0..3 {
            throttle.hit("login:alice", 3, window).await.unwrap();
        }
        let refused = throttle.hit("login:alice", 3, window).await.unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(59) && refused.retry_after <= window);
        assert!(throttle.check("login:alice", 3, window).await.is_err());
        // Buckets are independent.
        throttle.hit("login:bob", 3, window).await.unwrap();
    }

    #[tokio::test]
    async fn check_records_nothing() {
        let throttle = MemoryThrottle::new();
        for _ in 0..10 {
            throttle.check("b", 1, Duration::from_secs(60)).await.unwrap();
        }
        throttle.hit("b", 1, Duration::from_secs(60)).await.unwrap();
    }

    #[tokio::test]
    async fn events_age_out_of_the_window() {
        let throttle = MemoryThrottle::new();
        let window = Duration::from_millis(50);
        throttle.hit("b", 1, window).await.unwrap();
        assert!(throttle.hit("b", 1, window).await.is_err());
        tokio::time::sleep(Duration::from_millis(60)).await;
        throttle.hit("b", 1, window).await.unwrap();
    }
}
