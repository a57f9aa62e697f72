//! The rotating executor against gemini-sim with a real pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gemini_client::{CallSpec, ExecError, Executor, ExecutorSettings, GeminiClient, GeminiError};
use gemini_sim::{KeyStatus, Scripted, SimConfig, SimKey, SimServer};
use key_rotation::config::{BucketLimits, KeySpec, PoolConfig, Strategy, Workload};
use key_rotation::fair_use::{MemoryFairUse, UserLimits};
use key_rotation::pool::KeyPool;
use key_rotation::secrets::ApiKeySecret;
use serde_json::json;

const FLASH: &str = "gemini-2.5-flash";

/// (id, project, priority, status in the simulator)
pub const KEYS: [(&str, &str, i64, KeyStatus); 4] = [
    ("dead", "pd", 0, KeyStatus::Invalid),
    ("a1", "pa", 1, KeyStatus::Valid),
    ("a2", "pa", 2, KeyStatus::Valid),
    ("b", "pb", 3, KeyStatus::Valid),
];

pub fn secret(id: &str) -> String {
    format!("AIzaSy-{id}-very-secret-{id}")
}

pub struct Setup {
    pub sim: SimServer,
    pub executor: Executor,
}

pub async fn setup(keys: &[&str], rpm: u32, window: Duration, user_limits: UserLimits) -> Setup {
    let sim_keys = KEYS
        .iter()
        .map(|(id, project, _, status)| SimKey {
            key: secret(id),
            id: (*id).into(),
            project: (*project).into(),
            status: *status,
        })
        .collect();
    let sim = SimServer::start(SimConfig { keys: sim_keys, ..SimConfig::default() }).await.unwrap();
    let pool_keys = KEYS
        .iter()
        .filter(|(id, ..)| keys.contains(id))
        .map(|(id, project, priority, _)| KeySpec {
            key_id: (*id).into(),
            model: FLASH.into(),
            provider: "gemini".into(),
            project: (*project).into(),
            limits: BucketLimits { rpm, tpm: 1_000_000, rpd: None, burst: rpm },
            max_in_flight: None,
            priority: *priority,
            workload: Workload::Light,
            active: true,
            tags: vec![],
            secret: ApiKeySecret::new(secret(id)),
        })
        .collect();
    let config = PoolConfig {
        keys: pool_keys,
        strategy: Strategy::Priority,
        window,
        guard: Duration::ZERO,
        ..PoolConfig::empty()
    };
    let pool = Arc::new(KeyPool::in_memory(config));
    let client = GeminiClient::new(&sim.base_url(), "v1beta", Duration::from_secs(2)).unwrap();
    let settings = ExecutorSettings {
        deadline: Duration::from_secs(5),
        max_attempts: 4,
        backoff: Duration::from_millis(20),
        call_reserve: Duration::from_millis(200),
    };
    let executor = Executor::new(client, pool, Arc::new(MemoryFairUse::default()), user_limits, settings);
    Setup { sim, executor }
}

pub const GENEROUS: UserLimits = UserLimits { rpm: 1_000, burst: 1_000, tpm: 10_000_000 };

pub fn spec(user: Option<&str>) -> CallSpec {
    CallSpec {
        user: user.map(str::to_string),
        api_token: None,
        sticky: false,
        workload: Workload::Light,
        model: None,
        allow_spill: false,
        body: json!({ "contents": [{ "role": "user", "parts": [{ "text": "hello there" }] }] }),
        deadline: None,
    }
}

fn keys_called(setup: &Setup) -> Vec<String> {
    setup.sim.sim.requests().into_iter().filter_map(|r| r.key_id).collect()
}

fn assert_no_secret(text: &str) {
    for (id, ..) in KEYS {
        assert!(!text.contains(&secret(id)), "a secret leaked into: {text}");
    }
}

#[tokio::test]
async fn a_429_cools_the_whole_bucket_and_the_call_fails_over() {
    let setup = setup(&["a1", "a2", "b"], 100, Duration::from_secs(60), GENEROUS).await;
    setup.sim.sim.script([Scripted::RateLimitMinute { retry_ms: Some(30_000) }]);
    let done = setup.executor.generate(&spec(None)).await.unwrap();
    // a1 answered 429; a2 shares its project's bucket, so b served.
    assert_eq!(done.key_id, "b");
    assert_eq!(done.attempts, 2);
    assert_eq!(keys_called(&setup), ["a1", "b"]);
    let health = setup.executor.pool().health().await.unwrap();
    let state = |id: &str| health.iter().find(|h| h.key_id == id).unwrap().state;
    assert_eq!((state("a1"), state("a2"), state("b")), ("cooling_down", "cooling_down", "available"));
}

#[tokio::test]
async fn an_invalid_key_is_disabled_and_never_tried_again() {
    let setup = setup(&["dead", "a1"], 100, Duration::from_secs(60), GENEROUS).await;
    for _ in 0..3 {
        assert_eq!(setup.executor.generate(&spec(None)).await.unwrap().key_id, "a1");
    }
    assert_eq!(keys_called(&setup), ["dead", "a1", "a1", "a1"]);
    let health = setup.executor.pool().health().await.unwrap();
    assert_eq!(health[0].state, "disabled");
    assert_no_secret(&format!("{health:?}"));
}

#[tokio::test]
async fn a_503_is_retried_without_penalising_the_key() {
    let setup = setup(&["a1", "b"], 100, Duration::from_secs(60), GENEROUS).await;
    setup.sim.sim.script([Scripted::Unavailable]);
    let done = setup.executor.generate(&spec(None)).await.unwrap();
    assert_eq!((done.key_id.as_str(), done.attempts), ("a1", 2));
    assert_eq!(keys_called(&setup), ["a1", "a1"]);
    assert!(setup.executor.pool().health().await.unwrap().iter().all(|h| h.state == "available"));
}

#[tokio::test]
async fn a_blocked_prompt_goes_back_to_the_caller_with_no_key_change() {
    let setup = setup(&["a1", "b"], 100, Duration::from_secs(60), GENEROUS).await;
    setup.sim.sim.script([Scripted::BlockedPrompt]);
    let error = setup.executor.generate(&spec(None)).await.unwrap_err();
    assert!(matches!(error, ExecError::Rejected(GeminiError::PromptBlocked { .. })), "{error:?}");
    assert_eq!(error.status(), 422);
    assert_eq!(keys_called(&setup), ["a1"], "not retried on another key");
    assert!(setup.executor.pool().history(10).await.is_empty(), "no cooldown, no disable");
    assert_no_secret(&format!("{error} {error:?}"));
}

#[tokio::test]
async fn a_full_pool_answers_429_with_an_accurate_retry_after_inside_the_deadline() {
    let setup = setup(&["a1"], 1, Duration::from_secs(60), GENEROUS).await;
    setup.executor.generate(&spec(None)).await.unwrap();
    let mut short = spec(None);
    short.deadline = Some(Duration::from_secs(1));
    let started = Instant::now();
    let error = setup.executor.generate(&short).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "answered at once, not after waiting");
    assert_eq!(error.status(), 429);
    let retry = error.retry_after().unwrap();
    assert!(retry > Duration::from_secs(55) && retry <= Duration::from_secs(60), "{retry:?}");
}

#[tokio::test]
async fn room_that_opens_inside_the_deadline_is_waited_for() {
    let setup = setup(&["a1"], 1, Duration::from_millis(600), GENEROUS).await;
    setup.executor.generate(&spec(None)).await.unwrap();
    let started = Instant::now();
    let done = setup.executor.generate(&spec(None)).await.unwrap();
    assert_eq!(done.key_id, "a1");
    assert!(started.elapsed() >= Duration::from_millis(400), "it waited for the window");
}

#[tokio::test]
async fn the_user_limit_applies_first_and_is_refunded_when_no_key_took_the_call() {
    let tight = UserLimits { rpm: 1, burst: 1, tpm: 1_000_000 };
    let setup = setup(&["a1"], 1, Duration::from_secs(60), tight).await;
    // The pool's only unit goes to another user.
    setup.executor.generate(&spec(Some("other"))).await.unwrap();
    // Alice: the pool is full, so her unit is refunded...
    let first = setup.executor.generate(&spec(Some("alice"))).await.unwrap_err();
    assert!(matches!(first, ExecError::PoolFull { .. }), "{first:?}");
    // ...and her next attempt meets the pool again, not her own limit.
    let second = setup.executor.generate(&spec(Some("alice"))).await.unwrap_err();
    assert!(matches!(second, ExecError::PoolFull { .. }), "{second:?}");
    // Bob spends his one unit on a call that a key took, and is then limited.
    let setup = self::setup(&["a1", "b"], 100, Duration::from_secs(60), tight).await;
    setup.executor.generate(&spec(Some("bob"))).await.unwrap();
    let limited = setup.executor.generate(&spec(Some("bob"))).await.unwrap_err();
    assert!(matches!(limited, ExecError::UserLimited { .. }), "{limited:?}");
    assert_eq!(limited.status(), 429);
}

#[tokio::test]
async fn an_empty_pool_and_an_oversized_request_are_refused_at_once() {
    let empty = setup(&[], 100, Duration::from_secs(60), GENEROUS).await;
    let error = empty.executor.generate(&spec(None)).await.unwrap_err();
    assert!(matches!(error, ExecError::NoKeys));
    assert_eq!(error.status(), 503);
    let setup = setup(&["a1"], 100, Duration::from_secs(60), GENEROUS).await;
    let mut huge = spec(None);
    huge.body = json!({ "contents": [{ "role": "user", "parts": [{ "text": "x".repeat(4_000_010) }] }] });
    let error = setup.executor.generate(&huge).await.unwrap_err();
    assert_eq!(error.status(), 413);
    assert!(setup.sim.sim.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_stream_is_never_sent_twice() {
    let setup = setup(&["a1", "b"], 100, Duration::from_secs(60), GENEROUS).await;
    setup.sim.sim.script([Scripted::StreamDisconnect]);
    let mut stream = setup.executor.stream(&spec(None)).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok(), "the first chunk");
    assert!(stream.next().await.unwrap().is_err(), "then the cut, reported as an error");
    drop(stream);
    let streams = setup.sim.sim.requests().into_iter().filter(|r| r.method == "streamGenerateContent").count();
    assert_eq!(streams, 1, "after the first byte nothing is resent");
}

#[tokio::test]
async fn a_failure_before_the_first_chunk_fails_over_like_any_call() {
    let setup = setup(&["a1", "b"], 100, Duration::from_secs(60), GENEROUS).await;
    setup.sim.sim.script([Scripted::RateLimitMinute { retry_ms: Some(10_000) }]);
    let mut stream = setup.executor.stream(&spec(None)).await.unwrap();
    assert_eq!(stream.key_id, "b");
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        chunks += 1;
    }
    assert!(chunks >= 1);
    assert_eq!(keys_called(&setup), ["a1", "b"]);
}
