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
use crate::replicas::ReplicaId;

/// Refused: the bucket is full until `retry_after` from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// Of two refusals, the one that asks to wait longer.
    pub fn max_wait(self, other: Throttled) -> Throttled {
        if other.retry_after > self.retry_after {
            other
        } else {
            self
        }
    }
}

/// One recorded event, which [`Throttle::refund`] can take back: callers
/// reserve before the costly check (so concurrent attempts cannot all slip
/// under the limit) and refund when the attempt turns out to be innocent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    member: String,
}

#[async_trait]
pub trait Throttle: Send + Sync {
    /// Refuses if `bucket` already holds `limit` events in the trailing
    /// `window`, without recording anything.
    async fn check(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled>;

    /// Records one event unless the bucket is full, atomically: of many
    /// concurrent hits at most `limit` are recorded, the rest refused.
    async fn hit(&self, bucket: &str, limit: u32, window: Duration) -> Result<Reservation, Throttled>;

    /// Takes a recorded event back. Refunding one that aged out, or
    /// twice, does nothing.
    async fn refund(&self, bucket: &str, reservation: &Reservation);
}

/// One process's throttle: a log of event times per bucket.
#[derive(Debug, Default)]
pub struct MemoryThrottle {
    buckets: Mutex<Buckets>,
    sequence: AtomicU64,
}

#[derive(Debug, Default)]
struct Buckets {
    logs: HashMap<String, Log>,
    calls_since_sweep: u32,
}

/// A bucket's events and the window they count in.
#[derive(Debug)]
struct Log {
    window: Duration,
    events: VecDeque<(Instant, String)>,
}

/// How many calls pass between sweeps of idle buckets, which bounds memory
/// under a flood of distinct usernames or addresses.
const SWEEP_EVERY: u32 = 1024;

impl MemoryThrottle {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many buckets this process keeps.
    pub fn tracked_buckets(&self) -> usize {
        self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).logs.len()
    }

    fn decide(&self, bucket: &str, limit: u32, window: Duration, record: Option<&str>) -> Result<(), Throttled> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        buckets.calls_since_sweep += 1;
        if buckets.calls_since_sweep >= SWEEP_EVERY {
            buckets.calls_since_sweep = 0;
            // A bucket whose newest event left its own window holds nothing.
            buckets
                .logs
                .retain(|_, log| log.events.back().is_some_and(|(last, _)| now.duration_since(*last) < log.window));
        }
        let log = buckets.logs.entry(bucket.to_string()).or_insert_with(|| Log { window, events: VecDeque::new() });
        log.window = window;
        let log = &mut log.events;
        while log.front().is_some_and(|(first, _)| now.duration_since(*first) >= window) {
            log.pop_front();
        }
        if log.len() >= limit as usize {
            // The bucket frees a slot when the oldest event that keeps it full ages out.
            let (blocking, _) = log[log.len() - limit as usize];
            let retry_after = window.saturating_sub(now.duration_since(blocking));
            return Err(Throttled { retry_after });
        }
        if let Some(member) = record {
            log.push_back((now, member.to_string()));
        }
        Ok(())
    }

    fn reserve(&self, bucket: &str, limit: u32, window: Duration, member: String) -> Result<Reservation, Throttled> {
        self.decide(bucket, limit, window, Some(&member)).map(|()| Reservation { member })
    }

    fn take_back(&self, bucket: &str, reservation: &Reservation) {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(log) = buckets.logs.get_mut(bucket) {
            log.events.retain(|(_, member)| *member != reservation.member);
        }
    }
}

#[async_trait]
impl Throttle for MemoryThrottle {
    async fn check(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled> {
        self.decide(bucket, limit, window, None)
    }

    async fn hit(&self, bucket: &str, limit: u32, window: Duration) -> Result<Reservation, Throttled> {
        let member = self.sequence.fetch_add(1, Ordering::Relaxed).to_string();
        self.reserve(bucket, limit, window, member)
    }

    async fn refund(&self, bucket: &str, reservation: &Reservation) {
        self.take_back(bucket, reservation);
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
    replica: ReplicaId,
}

impl RedisThrottle {
    pub fn new(redis: Arc<RedisHandle>, prefix: &str, replica: ReplicaId) -> Self {
        Self {
            redis,
            prefix: prefix.to_string(),
            fallback: MemoryThrottle::new(),
            sequence: AtomicU64::new(0),
            replica,
        }
    }

    fn key(&self, bucket: &str) -> String {
        format!("{}:throttle:{bucket}", self.prefix)
    }

    async fn run(&self, op: &str, bucket: &str, limit: u32, window: Duration, member: &str) -> Result<(), Throttled> {
        let mut invocation = THROTTLE.prepare_invoke();
        invocation
            .key(self.key(bucket))
            .arg(op)
            .arg(limit)
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
            .arg(member);
        match self.redis.invoke::<u64>(&invocation).await {
            Ok(0) => Ok(()),
            Ok(wait_ms) => Err(Throttled { retry_after: Duration::from_millis(wait_ms) }),
            Err(err) => {
                tracing::warn!(error = %err, "throttle: Redis unreachable, counting on this replica");
                self.fallback.decide(bucket, limit, window, (op == "hit").then_some(member))
            }
        }
    }
}

#[async_trait]
impl Throttle for RedisThrottle {
    async fn check(&self, bucket: &str, limit: u32, window: Duration) -> Result<(), Throttled> {
        self.run("check", bucket, limit, window, "").await
    }

    async fn hit(&self, bucket: &str, limit: u32, window: Duration) -> Result<Reservation, Throttled> {
        let member = format!("{}-{}", self.replica, self.sequence.fetch_add(1, Ordering::Relaxed));
        self.run("hit", bucket, limit, window, &member).await.map(|()| Reservation { member })
    }

    async fn refund(&self, bucket: &str, reservation: &Reservation) {
        // The event may have been recorded in Redis or, while it was out
        // of reach, on this replica: take it back from both.
        self.fallback.take_back(bucket, reservation);
        let removed = self.redis.query::<u64>(redis::cmd("ZREM").arg(self.key(bucket)).arg(&reservation.member)).await;
        if let Err(err) = removed {
            tracing::warn!(error = %err, "throttle: could not refund an event in Redis");
        }
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
            all.push(Box::new(RedisThrottle::new(handle, &prefix, ReplicaId::random())));
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
    async fn concurrent_hits_record_at_most_the_limit_and_a_refund_frees_a_slot() {
        for (i, throttle) in throttles().into_iter().enumerate() {
            let throttle: Arc<dyn Throttle> = throttle.into();
            let window = Duration::from_secs(60);
            let bucket = format!("race:{i}:{:?}", Instant::now());
            let attempts = (0..40).map(|_| {
                let (throttle, bucket) = (throttle.clone(), bucket.clone());
                tokio::spawn(async move { throttle.hit(&bucket, 5, window).await })
            });
            let mut reserved = Vec::new();
            for attempt in attempts.collect::<Vec<_>>() {
                if let Ok(reservation) = attempt.await.unwrap() {
                    reserved.push(reservation);
                }
            }
            assert_eq!(reserved.len(), 5, "throttle {i}");
            assert!(throttle.hit(&bucket, 5, window).await.is_err());
            throttle.refund(&bucket, &reserved[0]).await;
            throttle.refund(&bucket, &reserved[0]).await;
            throttle.hit(&bucket, 5, window).await.expect("the refunded slot is free");
            assert!(throttle.hit(&bucket, 5, window).await.is_err(), "a second refund of one event frees nothing");
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
    async fn idle_buckets_are_swept_after_their_own_window() {
        let throttle = MemoryThrottle::new();
        let short = Duration::from_millis(20);
        for n in 0..(SWEEP_EVERY - 2) {
            throttle.hit(&format!("flood:{n}"), 5, short).await.unwrap();
        }
        throttle.hit("long", 5, Duration::from_secs(3600)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The next call sweeps: every short bucket is idle past its window.
        throttle.check("another", 5, short).await.unwrap();
        assert_eq!(throttle.tracked_buckets(), 2, "the hour-long bucket and the one just checked remain");
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
