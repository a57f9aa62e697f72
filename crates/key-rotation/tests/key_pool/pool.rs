//! The pool's selection rules and reactions, one defining test each, run on
//! every backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use key_rotation::clock::SystemClock;
use key_rotation::config::{BucketLimits, KeySpec, PoolConfig, Strategy, Workload};
use key_rotation::events::MemoryEventLog;
use key_rotation::limiter::Limiter;
use key_rotation::outcome::{Outcome, QuotaScope};
use key_rotation::pool::{AdmitResult, AdmitSpec, Grant, KeyPool, KeyProbe, PoolError, PoolOptions, ProbeResult};
use key_rotation::secrets::ApiKeySecret;

use crate::backends;

fn key(id: &str, model: &str, project: &str, rpm: u32, priority: i64) -> KeySpec {
    KeySpec {
        key_id: id.to_string(),
        model: model.to_string(),
        provider: "gemini".to_string(),
        project: project.to_string(),
        limits: BucketLimits { rpm, tpm: 100_000, rpd: None, burst: rpm },
        max_in_flight: None,
        priority,
        workload: Workload::for_model(model),
        active: true,
        tags: vec![],
        secret: ApiKeySecret::new(format!("AIza-secret-{id}-TAIL")),
    }
}

fn config(keys: Vec<KeySpec>, strategy: Strategy) -> PoolConfig {
    PoolConfig {
        keys,
        strategy,
        window: Duration::from_secs(1),
        guard: Duration::ZERO,
        health_check_interval: Duration::from_secs(1),
        ..PoolConfig::empty()
    }
}

fn pool(config: PoolConfig, limiter: Arc<dyn Limiter>) -> KeyPool {
    KeyPool::new(config, limiter, Arc::new(MemoryEventLog::default()), Arc::new(SystemClock), PoolOptions::default())
}

fn light() -> AdmitSpec {
    AdmitSpec { workload: Workload::Light, model: None, allow_spill: false, sticky_user: None, estimated_tokens: 10 }
}

async fn grant(pool: &KeyPool, spec: &AdmitSpec) -> Grant {
    match pool.try_admit(spec).await.unwrap() {
        AdmitResult::Granted(grant) => *grant,
        AdmitResult::Full { retry_after } => {
            panic!("expected a key, pool full for {retry_after:?}")
        }
    }
}

async fn full(pool: &KeyPool, spec: &AdmitSpec) -> Duration {
    match pool.try_admit(spec).await.unwrap() {
        AdmitResult::Full { retry_after } => retry_after,
        AdmitResult::Granted(grant) => panic!("expected a full pool, got {}", grant.key.key_id),
    }
}

fn ids(pool: &KeyPool, spec: &AdmitSpec) -> Vec<Vec<String>> {
    pool.candidate_groups(spec)
        .unwrap()
        .into_iter()
        .map(|group| group.into_iter().map(|c| c.key_id).collect())
        .collect()
}

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";

#[tokio::test]
async fn priority_orders_keys_and_fallback_order_overrides_it() {
    for (_, limiter) in backends().await {
        let mut config = config(
            vec![key("a", FLASH, "pa", 5, 2), key("b", FLASH, "pb", 5, 1), key("c", FLASH, "pc", 5, 3)],
            Strategy::Priority,
        );
        assert_eq!(ids(&pool(config.clone(), limiter.clone()), &light()), [["b", "a", "c"]]);
        config.fallback_order = vec!["c".into()];
        let pool = pool(config, limiter);
        assert_eq!(ids(&pool, &light()), [["c", "b", "a"]]);
        assert_eq!(grant(&pool, &light()).await.key.key_id, "c");
    }
}

#[tokio::test]
async fn round_robin_spreads_calls_over_every_key() {
    for (backend, limiter) in backends().await {
        let keys = vec![key("a", FLASH, "pa", 50, 0), key("b", FLASH, "pb", 50, 0), key("c", FLASH, "pc", 50, 0)];
        let pool = pool(config(keys, Strategy::RoundRobin), limiter);
        let mut chosen = Vec::new();
        for _ in 0..9 {
            chosen.push(grant(&pool, &light()).await.key.key_id);
        }
        for id in ["a", "b", "c"] {
            assert_eq!(chosen.iter().filter(|k| *k == id).count(), 3, "{backend}: {chosen:?}");
        }
    }
}

#[tokio::test]
async fn least_loaded_prefers_the_bucket_with_most_room() {
    for (backend, limiter) in backends().await {
        let keys = vec![key("a", FLASH, "pa", 10, 0), key("b", FLASH, "pb", 10, 1)];
        let pool = pool(config(keys, Strategy::LeastLoaded), limiter);
        // Equal room: the first in order. Then a is more loaded, so b.
        assert_eq!(grant(&pool, &light()).await.key.key_id, "a");
        assert_eq!(grant(&pool, &light()).await.key.key_id, "b");
        assert_eq!(grant(&pool, &light()).await.key.key_id, "a", "{backend}");
    }
}

#[tokio::test]
async fn sticky_users_keep_their_key_and_spread_across_keys() {
    for (_, limiter) in backends().await {
        let keys: Vec<KeySpec> = (0..8).map(|i| key(&format!("k{i}"), FLASH, &format!("p{i}"), 100, 0)).collect();
        let pool = pool(config(keys.clone(), Strategy::RoundRobin), limiter.clone());
        let sticky = |user: &str| AdmitSpec { sticky_user: Some(user.to_string()), ..light() };
        let first_of = |pool: &KeyPool, user: &str| ids(pool, &sticky(user))[0][0].clone();
        let alice = first_of(&pool, "alice");
        for _ in 0..5 {
            assert_eq!(grant(&pool, &sticky("alice")).await.key.key_id, alice);
        }
        let distinct: std::collections::HashSet<String> =
            (0..64).map(|u| first_of(&pool, &format!("user{u}"))).collect();
        assert!(distinct.len() >= 5, "64 users should spread over the 8 keys: {distinct:?}");
        // Rendezvous hashing: removing some other key does not move alice.
        let without: Vec<KeySpec> =
            keys.into_iter().filter(|k| k.key_id == alice || k.key_id != "k0" && k.key_id != "k1").collect();
        let smaller = super::pool::pool(config(without, Strategy::RoundRobin), limiter);
        if alice != "k0" && alice != "k1" {
            assert_eq!(first_of(&smaller, "alice"), alice);
        }
    }
}

#[tokio::test]
async fn workloads_prefer_their_family_and_spill_only_when_allowed() {
    for (backend, limiter) in backends().await {
        let keys = vec![key("flash", FLASH, "pf", 1, 0), key("pro", PRO, "pp", 10, 0)];
        let pool = pool(config(keys, Strategy::Priority), limiter);
        let heavy = AdmitSpec { workload: Workload::Heavy, ..light() };
        assert_eq!(ids(&pool, &light()), [vec!["flash".to_string()]]);
        assert_eq!(ids(&pool, &heavy), [vec!["pro".to_string()]]);
        assert_eq!(grant(&pool, &light()).await.key.key_id, "flash");
        // The flash bucket (1 per window) is full: without spill the caller waits...
        full(&pool, &light()).await;
        // ...with spill it moves onto the pro family.
        let spill = AdmitSpec { allow_spill: true, ..light() };
        assert_eq!(grant(&pool, &spill).await.key.key_id, "pro", "{backend}");
        // An exact model never changes: the SDK proxy asked for flash.
        let exact = AdmitSpec { model: Some(FLASH.into()), allow_spill: true, ..light() };
        full(&pool, &exact).await;
        let unknown = AdmitSpec { model: Some("gemini-9-ultra".into()), ..light() };
        assert!(matches!(pool.try_admit(&unknown).await, Err(PoolError::NoKeyForModel(_))));
    }
}

#[tokio::test]
async fn an_oversized_request_is_refused_at_once_and_an_empty_pool_says_so() {
    for (_, limiter) in backends().await {
        let pool = pool(config(vec![key("a", FLASH, "pa", 10, 0)], Strategy::Priority), limiter.clone());
        let huge = AdmitSpec { estimated_tokens: 100_001, ..light() };
        assert!(matches!(
            pool.try_admit(&huge).await,
            Err(PoolError::TooLarge { estimated: 100_001, max_tpm: 100_000 })
        ));
        let empty = super::pool::pool(PoolConfig::empty(), limiter);
        assert!(matches!(empty.try_admit(&light()).await, Err(PoolError::NoKeys)));
    }
}

#[tokio::test]
async fn a_per_minute_429_cools_the_whole_bucket() {
    for (backend, limiter) in backends().await {
        // a1 and a2 share project pa; b is elsewhere.
        let keys = vec![key("a1", FLASH, "pa", 10, 0), key("a2", FLASH, "pa", 10, 1), key("b", FLASH, "pb", 10, 2)];
        let pool = pool(config(keys, Strategy::Priority), limiter);
        let first = grant(&pool, &light()).await;
        assert_eq!(first.key.key_id, "a1");
        pool.report(
            &first,
            &Outcome::RateLimited {
                scope: QuotaScope::PerMinute,
                retry_delay: Some(Duration::from_secs(37)),
                zero_limit: false,
            },
        )
        .await;
        // Not a2 (same project, same bucket): b.
        assert_eq!(grant(&pool, &light()).await.key.key_id, "b", "{backend}");
        let health = pool.health().await.unwrap();
        let a2 = health.iter().find(|h| h.key_id == "a2").unwrap();
        assert_eq!(a2.state, "cooling_down");
        assert!(pool.history(10).await.iter().any(|e| e.kind == "cooldown"));
    }
}

#[tokio::test]
async fn a_per_day_429_cools_until_pacific_midnight_and_limit_zero_until_reset() {
    for (backend, limiter) in backends().await {
        let keys = vec![key("a", FLASH, "pa", 10, 0), key("z", FLASH, "pz", 10, 1)];
        let pool = pool(config(keys, Strategy::Priority), limiter.clone());
        let a = grant(&pool, &light()).await;
        pool.report(
            &a,
            &Outcome::RateLimited {
                scope: QuotaScope::PerDay,
                retry_delay: Some(Duration::from_secs(5)),
                zero_limit: false,
            },
        )
        .await;
        let usage = limiter.usage(FLASH, "pa", 1000).await.unwrap();
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        let (_, midnight) = key_rotation::pacific::day_bounds_ms(now);
        let until = usage.cooldown.unwrap().until_ms;
        assert!(until.abs_diff(midnight) < 5_000, "{backend}: cooldown until {until}, midnight {midnight}");

        let z = grant(&pool, &light()).await;
        assert_eq!(z.key.key_id, "z");
        pool.report(&z, &Outcome::RateLimited { scope: QuotaScope::PerMinute, retry_delay: None, zero_limit: true })
            .await;
        full(&pool, &light()).await;
        assert_eq!(pool.reset("pz", None, "test").await.unwrap(), 1);
        assert_eq!(grant(&pool, &light()).await.key.key_id, "z", "{backend}");
    }
}

#[tokio::test]
async fn a_dead_key_is_disabled_and_the_next_key_serves() {
    for (backend, limiter) in backends().await {
        let keys = vec![key("dead", FLASH, "pd", 10, 0), key("ok", FLASH, "po", 10, 1)];
        let pool = pool(config(keys, Strategy::Priority), limiter);
        let dead = grant(&pool, &light()).await;
        pool.report(&dead, &Outcome::KeyInvalid).await;
        for _ in 0..3 {
            assert_eq!(grant(&pool, &light()).await.key.key_id, "ok", "{backend}");
        }
        let health = pool.health().await.unwrap();
        assert_eq!(health[0].state, "disabled");
        assert_eq!(health[0].display, "dead …TAIL");
        let rendered = format!("{health:?}");
        assert!(!rendered.contains("AIza-secret"), "{rendered}");
    }
}

#[tokio::test]
async fn service_disabled_takes_out_the_whole_project() {
    for (backend, limiter) in backends().await {
        let keys = vec![
            key("p1-flash", FLASH, "proj", 10, 0),
            key("p1-pro", PRO, "proj", 10, 0),
            key("other", FLASH, "elsewhere", 10, 1),
        ];
        let pool = pool(config(keys, Strategy::Priority), limiter);
        let first = grant(&pool, &light()).await;
        pool.report(&first, &Outcome::ProjectDisabled).await;
        let health = pool.health().await.unwrap();
        let states: Vec<(&str, &str)> = health.iter().map(|h| (h.key_id.as_str(), h.state)).collect();
        assert_eq!(states, [("p1-flash", "disabled"), ("p1-pro", "disabled"), ("other", "available")], "{backend}");
    }
}

#[tokio::test]
async fn model_wide_errors_do_not_penalise_the_key_and_unsent_calls_are_refunded() {
    for (backend, limiter) in backends().await {
        let pool = pool(config(vec![key("a", FLASH, "pa", 2, 0)], Strategy::Priority), limiter);
        let first = grant(&pool, &light()).await;
        pool.report(&first, &Outcome::UpstreamUnavailable).await;
        // Still available, but the unit stays spent: one of two left.
        let second = grant(&pool, &light()).await;
        assert_eq!(second.key.key_id, "a");
        full(&pool, &light()).await;
        // Google never saw this one: its unit comes back.
        pool.report(&second, &Outcome::NotSent).await;
        assert_eq!(grant(&pool, &light()).await.key.key_id, "a", "{backend}");
        assert_eq!(pool.health().await.unwrap()[0].state, "available");
    }
}

struct ScriptedProbe(ProbeResult, std::sync::atomic::AtomicU32);

#[async_trait]
impl KeyProbe for ScriptedProbe {
    async fn probe(&self, _key: &KeySpec) -> ProbeResult {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.clone()
    }
}

#[tokio::test]
async fn probes_revive_dead_keys_with_backoff_but_never_leaked_ones() {
    for (backend, limiter) in backends().await {
        let keys = vec![key("flaky", FLASH, "pf", 10, 0), key("leaked", FLASH, "pl", 10, 1)];
        let pool = pool(config(keys, Strategy::Priority), limiter);
        let flaky = grant(&pool, &light()).await;
        pool.report(&flaky, &Outcome::KeyInvalid).await;
        let leaked = grant(&pool, &light()).await;
        assert_eq!(leaked.key.key_id, "leaked");
        pool.report(&leaked, &Outcome::KeyLeaked).await;

        let failing = ScriptedProbe(ProbeResult::Dead(Outcome::KeyInvalid), Default::default());
        pool.probe_disabled(&failing).await.unwrap();
        // Backoff: an immediate second round does not probe again.
        pool.probe_disabled(&failing).await.unwrap();
        assert_eq!(failing.1.load(std::sync::atomic::Ordering::SeqCst), 1, "{backend}: only the flaky key, once");

        // A fresh pool (no local backoff) whose probe succeeds revives it.
        let healthy = ScriptedProbe(ProbeResult::Healthy, Default::default());
        let revived = super::pool::pool(pool.config().as_ref().clone(), pool.limiter().clone());
        // The earlier round's probe lock lasts one health-check interval.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        revived.probe_disabled(&healthy).await.unwrap();
        let health = revived.health().await.unwrap();
        assert_eq!(health[0].state, "available", "{backend}");
        assert_eq!(health[1].state, "leaked", "{backend}: a leaked key stays off");
        assert_eq!(healthy.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_large_pool_rotates_over_every_key_not_just_the_first_window() {
    for (backend, limiter) in backends().await {
        let keys: Vec<KeySpec> =
            (0..40).map(|i| key(&format!("k{i:02}"), FLASH, &format!("p{i:02}"), 1000, 0)).collect();
        let pool = pool(config(keys, Strategy::RoundRobin), limiter);
        let mut used = std::collections::HashSet::new();
        for _ in 0..200 {
            used.insert(grant(&pool, &light()).await.key.key_id);
        }
        assert_eq!(used.len(), 40, "{backend}: only {} of 40 keys used", used.len());
    }
}

#[tokio::test]
async fn priority_walks_past_a_full_first_window() {
    for (backend, limiter) in backends().await {
        // 20 keys of one request each: the first 16 fill, then 16..19 serve.
        let keys: Vec<KeySpec> = (0..20).map(|i| key(&format!("k{i:02}"), FLASH, &format!("p{i:02}"), 1, i)).collect();
        let pool = pool(config(keys, Strategy::Priority), limiter);
        let mut chosen = Vec::new();
        for _ in 0..20 {
            chosen.push(grant(&pool, &light()).await.key.key_id);
        }
        let expected: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
        assert_eq!(chosen, expected, "{backend}");
        full(&pool, &light()).await;
    }
}

/// A limiter that counts the reads health makes, over the memory limiter.
struct CountingLimiter {
    inner: key_rotation::limiter::memory::MemoryLimiter,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Limiter for CountingLimiter {
    async fn admit(
        &self,
        request: &key_rotation::limiter::AdmitRequest,
    ) -> Result<key_rotation::limiter::Decision, key_rotation::limiter::LimiterError> {
        self.inner.admit(request).await
    }
    async fn reconcile(
        &self,
        ticket: &key_rotation::limiter::Ticket,
        actual_tokens: u64,
        window_ms: u64,
    ) -> Result<(), key_rotation::limiter::LimiterError> {
        self.inner.reconcile(ticket, actual_tokens, window_ms).await
    }
    async fn release(&self, ticket: &key_rotation::limiter::Ticket) -> Result<(), key_rotation::limiter::LimiterError> {
        self.inner.release(ticket).await
    }
    async fn refund(&self, ticket: &key_rotation::limiter::Ticket) -> Result<(), key_rotation::limiter::LimiterError> {
        self.inner.refund(ticket).await
    }
    async fn cool_down(
        &self,
        model: &str,
        project: &str,
        duration_ms: u64,
        reason: &str,
    ) -> Result<(), key_rotation::limiter::LimiterError> {
        self.inner.cool_down(model, project, duration_ms, reason).await
    }
    async fn disable(
        &self,
        model: &str,
        key_id: &str,
        lasting: key_rotation::limiter::Lasting,
        reason: &str,
    ) -> Result<(), key_rotation::limiter::LimiterError> {
        self.inner.disable(model, key_id, lasting, reason).await
    }
    async fn enable(&self, model: &str, key_id: &str) -> Result<(), key_rotation::limiter::LimiterError> {
        self.inner.enable(model, key_id).await
    }
    async fn clear_cooldown(&self, model: &str, project: &str) -> Result<(), key_rotation::limiter::LimiterError> {
        self.inner.clear_cooldown(model, project).await
    }
    async fn usage(
        &self,
        model: &str,
        project: &str,
        window_ms: u64,
    ) -> Result<key_rotation::limiter::BucketUsage, key_rotation::limiter::LimiterError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.usage(model, project, window_ms).await
    }
    async fn disabled(
        &self,
        model: &str,
        key_id: &str,
    ) -> Result<Option<key_rotation::limiter::Restriction>, key_rotation::limiter::LimiterError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.disabled(model, key_id).await
    }
    async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<bool, key_rotation::limiter::LimiterError> {
        self.inner.try_lock(name, ttl_ms).await
    }
}

/// The review's finding: `api/health`, open to anyone, read the limiter
/// twice per key on every call. Its availability is read at most once per
/// five seconds, however many ask at once.
#[tokio::test]
async fn availability_is_read_once_per_interval_however_often_it_is_asked() {
    let clock = key_rotation::clock::ManualClock::new(1_000_000);
    let limiter = Arc::new(CountingLimiter {
        inner: key_rotation::limiter::memory::MemoryLimiter::new(Arc::new(clock.clone())),
        reads: std::sync::atomic::AtomicUsize::new(0),
    });
    let keys = (0..8).map(|n| key(&format!("k{n}"), "gemini-2.5-flash", &format!("p{n}"), 10, 0)).collect();
    let pool = Arc::new(KeyPool::new(
        config(keys, Strategy::Priority),
        limiter.clone(),
        Arc::new(MemoryEventLog::default()),
        Arc::new(clock.clone()),
        PoolOptions::default(),
    ));
    let asks = (0..50).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.availability().await.unwrap() })
    });
    for ask in asks.collect::<Vec<_>>() {
        let availability = ask.await.unwrap();
        assert_eq!((availability.configured, availability.available), (8, 8));
    }
    let reads = limiter.reads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reads, 16, "one read of every key for fifty askers");
    clock.advance(5_001);
    pool.availability().await.unwrap();
    assert_eq!(limiter.reads.load(std::sync::atomic::Ordering::SeqCst), 32, "read again once stale");
}

/// The review's finding: a leaked key came back when its 7-day disable
/// expired, and the probe skipped it by matching the reason's text. A leak
/// is a typed, untimed disable that only an operator lifts.
#[tokio::test]
async fn a_leaked_key_stays_off_until_an_operator_re_enables_it() {
    for (backend, limiter) in backends().await {
        let keys = vec![key("dead", FLASH, "pd", 10, 0), key("leaked", FLASH, "pl", 10, 1)];
        let options = PoolOptions { disable_ttl: Duration::from_millis(200), ..PoolOptions::default() };
        let pool = KeyPool::new(
            config(keys, Strategy::Priority),
            limiter,
            Arc::new(MemoryEventLog::default()),
            Arc::new(SystemClock),
            options,
        );
        let dead = grant(&pool, &light()).await;
        pool.report(&dead, &Outcome::KeyInvalid).await;
        let leaked = grant(&pool, &light()).await;
        assert_eq!(leaked.key.key_id, "leaked");
        pool.report(&leaked, &Outcome::KeyLeaked).await;

        tokio::time::sleep(Duration::from_millis(400)).await;
        let health = pool.health().await.unwrap();
        assert_eq!(health[0].state, "available", "{backend}: an ordinary disable runs out");
        assert_eq!(health[1].state, "leaked", "{backend}: a leak does not");
        let restriction = pool.limiter().disabled(FLASH, "leaked").await.unwrap().expect("still disabled");
        assert!(restriction.needs_operator, "{backend}");
        let probe = ScriptedProbe(ProbeResult::Healthy, Default::default());
        pool.probe_disabled(&probe).await.unwrap();
        assert_eq!(probe.1.load(std::sync::atomic::Ordering::SeqCst), 0, "{backend}: a leaked key is never probed");

        pool.reset("pl", None, "test").await.unwrap();
        assert_eq!(pool.health().await.unwrap()[1].state, "available", "{backend}: the operator lifts it");
    }
}

/// The operators' view of every key and bucket comes from one snapshot
/// (one Redis round trip) and says what the separate reads say.
#[tokio::test]
async fn one_snapshot_shows_every_key_and_bucket() {
    for (backend, limiter) in backends().await {
        let keys = vec![
            key("a", FLASH, "pa", 10, 0),
            key("b", FLASH, "pb", 10, 1),
            key("c", PRO, "pc", 10, 0),
            key("d", PRO, "pc", 10, 1),
        ];
        let pool = pool(config(keys, Strategy::Priority), limiter.clone());
        for _ in 0..2 {
            let granted = grant(&pool, &light()).await;
            assert_eq!(granted.key.key_id, "a");
            pool.report(&granted, &Outcome::Success { prompt_tokens: Some(7) }).await;
        }
        limiter.cool_down(FLASH, "pb", 60_000, "test cooldown").await.unwrap();
        let c = grant(&pool, &AdmitSpec { workload: Workload::Heavy, ..light() }).await;
        assert_eq!(c.key.key_id, "c");
        pool.report(&c, &Outcome::KeyLeaked).await;

        let view = pool.view().await.unwrap();
        let states: Vec<(&str, &str)> = view.keys.iter().map(|k| (k.key_id.as_str(), k.state)).collect();
        assert_eq!(
            states,
            [("a", "available"), ("b", "cooling_down"), ("c", "leaked"), ("d", "available")],
            "{backend}"
        );
        assert_eq!(view.keys[1].reason.as_deref(), Some("test cooldown"), "{backend}");
        let buckets: Vec<(&str, &str, u32, u64)> = view
            .buckets
            .iter()
            .map(|b| (b.model.as_str(), b.project.as_str(), b.requests_in_window, b.tokens_in_window))
            .collect();
        assert_eq!(
            buckets,
            [(FLASH, "pa", 2, 14), (FLASH, "pb", 0, 0), (PRO, "pc", 1, 10)],
            "{backend}: reconciled tokens, one admission of the leaked key"
        );
        for bucket in &view.buckets {
            let separate = limiter.usage(&bucket.model, &bucket.project, 1_000).await.unwrap();
            assert_eq!(separate.requests_in_window, bucket.requests_in_window, "{backend}");
            assert_eq!(separate.tokens_in_window, bucket.tokens_in_window, "{backend}");
        }
    }
}
