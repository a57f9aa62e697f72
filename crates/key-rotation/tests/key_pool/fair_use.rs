use std::sync::Arc;
use std::time::Duration;

use key_rotation::fair_use::{FairUse, MemoryFairUse, RedisFairUse, UserDecision, UserLimits};
use key_rotation::redis_conn::RedisHandle;

fn fair_uses() -> Vec<(&'static str, Arc<dyn FairUse>)> {
    let mut all: Vec<(&'static str, Arc<dyn FairUse>)> = vec![("memory", Arc::new(MemoryFairUse::default()))];
    if let Some(url) = std::env::var("TEST_REDIS_URL").ok().filter(|u| !u.is_empty()) {
        let handle = Arc::new(RedisHandle::new(&url, Duration::from_secs(2)).unwrap());
        let prefix = format!("fair-{}-{:?}", std::process::id(), std::time::SystemTime::now());
        all.push(("redis", Arc::new(RedisFairUse::new(handle, &prefix))));
    }
    all
}

const LIMITS: UserLimits = UserLimits { rpm: 10, burst: 3, tpm: 1_000 };

#[tokio::test]
async fn a_user_gets_the_burst_then_the_rate() {
    for (backend, fair) in fair_uses() {
        for i in 0..3 {
            let decision = fair.admit("u1", 10, LIMITS, &format!("e{i}")).await.unwrap();
            assert!(matches!(decision, UserDecision::Allowed(_)), "{backend}: {decision:?}");
        }
        match fair.admit("u1", 10, LIMITS, "e3").await.unwrap() {
            // 10 per minute: the next slot is at most one 6 s interval away.
            UserDecision::Limited { retry_after } => {
                assert!(
                    retry_after > Duration::ZERO && retry_after <= Duration::from_secs(6),
                    "{backend}: {retry_after:?}"
                );
            }
            other => panic!("{backend}: expected a limit, got {other:?}"),
        }
        // Users are independent.
        assert!(matches!(fair.admit("u2", 10, LIMITS, "x").await.unwrap(), UserDecision::Allowed(_)));
    }
}

#[tokio::test]
async fn a_user_token_window_and_refunds() {
    for (backend, fair) in fair_uses() {
        let first = match fair.admit("t1", 900, LIMITS, "a").await.unwrap() {
            UserDecision::Allowed(ticket) => ticket,
            other => panic!("{backend}: {other:?}"),
        };
        assert!(matches!(fair.admit("t1", 200, LIMITS, "b").await.unwrap(), UserDecision::Limited { .. }), "{backend}");
        // No key could take the call: the user's unit and tokens come back.
        fair.refund(&first).await.unwrap();
        assert!(matches!(fair.admit("t1", 200, LIMITS, "c").await.unwrap(), UserDecision::Allowed(_)), "{backend}");
        assert_eq!(fair.admit("t1", 1_001, LIMITS, "d").await.unwrap(), UserDecision::TooLarge, "{backend}");
    }
}

/// Users whose minute has passed are forgotten: a flood of distinct users
/// does not grow the memory limiter for ever.
#[tokio::test]
async fn the_memory_limiter_forgets_users_once_their_minute_has_passed() {
    let clock = key_rotation::clock::ManualClock::new(1_000_000);
    let fair = MemoryFairUse::new(Arc::new(clock.clone()));
    let limits = UserLimits { rpm: 10, burst: 10, tpm: 10_000 };
    for n in 0..1_000 {
        let decision = fair.admit(&format!("user:{n}"), 10, limits, &format!("e{n}")).await.unwrap();
        assert!(matches!(decision, UserDecision::Allowed(_)));
    }
    assert_eq!(fair.tracked_users(), 1_000);
    clock.advance(61_000);
    fair.admit("user:late", 10, limits, "late").await.unwrap();
    assert_eq!(fair.tracked_users(), 1, "only the user seen this minute is kept");
}
