//! The key pool's tests. The limiter conformance suite (`limits`,
//! `selection`) runs against every backend: the in-memory limiter always, and
//! the Redis limiter when TEST_REDIS_URL is set (CI sets it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fair_use;
mod limits;
mod multi_process;
mod pool;
mod private_redis;
mod redis_faults;
mod scripts;
mod selection;

use std::sync::Arc;
use std::time::Duration;

use key_rotation::config::BucketLimits;
use key_rotation::limiter::memory::MemoryLimiter;
use key_rotation::limiter::redis::RedisLimiter;
use key_rotation::limiter::{AdmitRequest, Candidate, Decision, Limiter, Pick, Ticket};
use key_rotation::redis_conn::RedisHandle;

pub const WINDOW_MS: u64 = 1_000;

/// Every backend under test, each with fresh state.
pub async fn backends() -> Vec<(&'static str, Arc<dyn Limiter>)> {
    let mut backends: Vec<(&'static str, Arc<dyn Limiter>)> = vec![("memory", Arc::new(MemoryLimiter::default()))];
    if let Some(url) = std::env::var("TEST_REDIS_URL").ok().filter(|u| !u.is_empty()) {
        let handle = Arc::new(RedisHandle::new(&url, Duration::from_secs(2)).unwrap());
        handle.ping().await.unwrap_or_else(|err| panic!("TEST_REDIS_URL is set but Redis is unreachable: {err}"));
        let prefix = format!("conformance-{}", uuid_like());
        backends.push(("redis", Arc::new(RedisLimiter::new(handle, &prefix))));
    }
    backends
}

pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

pub fn limits(rpm: u32, tpm: u64) -> BucketLimits {
    BucketLimits { rpm, tpm, rpd: None, burst: rpm }
}

pub fn candidate(key_id: &str, project: &str, limits: BucketLimits) -> Candidate {
    Candidate {
        key_id: key_id.to_string(),
        model: "gemini-test".to_string(),
        project: project.to_string(),
        limits,
        max_in_flight: None,
    }
}

pub fn request(candidates: Vec<Candidate>, tokens: u64) -> AdmitRequest {
    AdmitRequest {
        candidates,
        tokens,
        pick: Pick::FirstFit,
        rotate: false,
        window_ms: WINDOW_MS,
        lease_ttl_ms: 30_000,
        entry_id: uuid_like(),
    }
}

/// Admits with a fresh entry id each time.
pub async fn admit(limiter: &dyn Limiter, template: &AdmitRequest) -> Decision {
    let mut request = template.clone();
    request.entry_id = uuid_like();
    limiter.admit(&request).await.unwrap()
}

pub fn admitted(decision: Decision, backend: &str) -> Ticket {
    match decision {
        Decision::Admitted(ticket) => ticket,
        other => panic!("{backend}: expected an admission, got {other:?}"),
    }
}

pub fn refused(decision: Decision, backend: &str) -> Option<u64> {
    match decision {
        Decision::NoRoom { retry_after_ms } => retry_after_ms,
        other => panic!("{backend}: expected a refusal, got {other:?}"),
    }
}
