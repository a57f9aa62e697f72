//! What the Redis scripts leave behind: every key they write expires, a
//! bucket's day counters do not pile up, and no walk is unbounded.

use std::sync::Arc;
use std::time::Duration;

use key_rotation::limiter::redis::RedisLimiter;
use key_rotation::limiter::Limiter;
use key_rotation::redis_conn::RedisHandle;

use crate::{admit, admitted, candidate, limits, refused, request, uuid_like, WINDOW_MS};

fn redis() -> Option<(Arc<RedisHandle>, String, RedisLimiter)> {
    let url = std::env::var("TEST_REDIS_URL").ok().filter(|u| !u.is_empty())?;
    let handle = Arc::new(RedisHandle::new(&url, Duration::from_secs(2)).unwrap());
    let prefix = format!("scripts-{}", uuid_like());
    let limiter = RedisLimiter::new(handle.clone(), &prefix);
    Some((handle, prefix, limiter))
}

async fn keys_of(handle: &RedisHandle, prefix: &str) -> Vec<String> {
    handle.query(redis::cmd("KEYS").arg(format!("{prefix}*"))).await.unwrap()
}

/// The review's finding: `ticket.lua` re-added a reconciled entry after
/// removing it, and when it was the window's last entry the key came back
/// with no TTL and stayed for ever.
#[tokio::test]
async fn every_key_the_limiter_writes_expires() {
    let Some((handle, prefix, limiter)) = redis() else {
        eprintln!("skipped: Redis scripts need TEST_REDIS_URL");
        return;
    };
    let key = candidate("k", "p", limits(100, 1_000));
    let other = admitted(admit(&limiter, &request(vec![key.clone()], 50)).await, "redis");
    limiter.refund(&other).await.unwrap();
    // The window's only entry, reconciled last: nothing re-arms its expiry after.
    let ticket = admitted(admit(&limiter, &request(vec![key], 50)).await, "redis");
    limiter.reconcile(&ticket, 20, WINDOW_MS).await.unwrap();
    limiter.cool_down("gemini-test", "p", 5_000, "test").await.unwrap();
    let keys = keys_of(&handle, &prefix).await;
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = handle.query(redis::cmd("PTTL").arg(&key)).await.unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
}

/// The review's finding: each Pacific day left its request counter in the
/// bucket's hash, which lives as long as the bucket is used.
#[tokio::test]
async fn a_new_days_counter_clears_the_days_before() {
    let Some((handle, prefix, limiter)) = redis() else {
        eprintln!("skipped: Redis scripts need TEST_REDIS_URL");
        return;
    };
    let key = candidate("k", "p", limits(100, 1_000));
    admitted(admit(&limiter, &request(vec![key.clone()], 1)).await, "redis");
    let state = keys_of(&handle, &prefix).await.into_iter().find(|k| k.contains(":st:")).expect("the state hash");
    let fields: Vec<String> = handle.query(redis::cmd("HKEYS").arg(&state)).await.unwrap();
    let today = fields.iter().find(|f| f.starts_with("d:")).expect("today's counter").clone();
    // Yesterday's counter, as it was left; and today's about to start.
    let _: i64 = handle.query(redis::cmd("HSET").arg(&state).arg("d:1700000000000").arg(7)).await.unwrap();
    let _: i64 = handle.query(redis::cmd("HDEL").arg(&state).arg(&today)).await.unwrap();
    admitted(admit(&limiter, &request(vec![key], 1)).await, "redis");
    let fields: Vec<String> = handle.query(redis::cmd("HKEYS").arg(&state)).await.unwrap();
    let days: Vec<&String> = fields.iter().filter(|f| f.starts_with("d:")).collect();
    assert_eq!(days, [&today], "only today's counter remains");
}

/// A full window of small entries: a large request still gets an honest,
/// positive wait, from a walk that stops early.
#[tokio::test]
async fn the_token_wait_walk_is_bounded_and_still_honest() {
    let Some((_, _, limiter)) = redis() else {
        eprintln!("skipped: Redis scripts need TEST_REDIS_URL");
        return;
    };
    let key = candidate("k", "p", limits(5_000, 2_000));
    for _ in 0..2_000 {
        admitted(admit(&limiter, &request(vec![key.clone()], 1)).await, "redis");
    }
    // 1,900 entries must leave the window first: far more than the walk reads.
    let wait = refused(admit(&limiter, &request(vec![key], 1_900)).await, "redis").expect("a wait");
    assert!(wait > 0 && wait <= WINDOW_MS, "wait {wait}");
}
