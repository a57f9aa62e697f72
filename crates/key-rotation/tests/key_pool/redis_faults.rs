//! Redis faults mid-run: no panic, no call stalled past its deadline,
//! degraded mode engages, the aggregate quota holds, and the pool recovers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use key_rotation::config::{BucketLimits, KeySpec, PoolConfig, Strategy, Workload};
use key_rotation::events::MemoryEventLog;
use key_rotation::limiter::failover::{FailoverLimiter, Mode, OUTAGE_AFTER_MS};
use key_rotation::limiter::redis::RedisLimiter;
use key_rotation::limiter::Limiter;
use key_rotation::outcome::Outcome;
use key_rotation::pool::{AdmitResult, AdmitSpec, KeyPool, PoolOptions};
use key_rotation::redis_conn::RedisHandle;
use key_rotation::replicas::{ReplicaId, ReplicaRegistry};
use key_rotation::secrets::ApiKeySecret;

use crate::private_redis::PrivateRedis;

const RPM: u32 = 20;
const WINDOW: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_millis(50);

fn pool_config() -> PoolConfig {
    PoolConfig {
        keys: vec![KeySpec {
            key_id: "k".into(),
            model: "gemini-2.5-flash".into(),
            provider: "gemini".into(),
            project: "p".into(),
            limits: BucketLimits { rpm: RPM, tpm: 1_000_000, rpd: None, burst: RPM },
            max_in_flight: None,
            priority: 0,
            workload: Workload::Light,
            active: true,
            tags: vec![],
            secret: ApiKeySecret::new("AIza-fault-test"),
        }],
        strategy: Strategy::Priority,
        window: WINDOW,
        guard: Duration::from_millis(20),
        ..PoolConfig::empty()
    }
}

struct Replica {
    pool: Arc<KeyPool>,
    failover: Arc<FailoverLimiter>,
    registry: Arc<ReplicaRegistry>,
}

fn replica(url: &str, prefix: &str, id: &str) -> Replica {
    let handle = Arc::new(RedisHandle::new(url, DEADLINE).unwrap());
    let registry =
        Arc::new(ReplicaRegistry::new(handle.clone(), prefix, &ReplicaId::named(id), Duration::from_secs(5)));
    let failover = Arc::new(FailoverLimiter::new(RedisLimiter::new(handle, prefix), registry.clone()));
    let limiter: Arc<dyn Limiter> = failover.clone();
    let pool = Arc::new(KeyPool::new(
        pool_config(),
        limiter,
        Arc::new(MemoryEventLog::default()),
        Arc::new(key_rotation::clock::SystemClock),
        PoolOptions::default(),
    ));
    Replica { pool, failover, registry }
}

/// Admits on `replica` until it has declared Redis down (a failing call is
/// a blip until failures last `OUTAGE_AFTER_MS`). Returns the grants and the
/// last answer, the first one given in degraded mode.
async fn admit_until_degraded(replica: &Replica) -> (usize, AdmitResult) {
    let give_up = Instant::now() + Duration::from_millis(OUTAGE_AFTER_MS) + Duration::from_secs(3);
    let mut granted = 0;
    loop {
        let result = replica.pool.try_admit(&spec()).await.expect("admission never errors on a Redis fault");
        if matches!(result, AdmitResult::Granted(_)) {
            granted += 1;
        }
        if replica.failover.mode() == Mode::Degraded {
            return (granted, result);
        }
        assert!(Instant::now() < give_up, "never degraded");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn spec() -> AdmitSpec {
    AdmitSpec { workload: Workload::Light, model: None, allow_spill: false, sticky_user: None, estimated_tokens: 1 }
}

fn max_in_any_window(times: &[Instant], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    (0..sorted.len()).map(|i| sorted[i..].iter().take_while(|t| **t < sorted[i] + window).count()).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_then_crash_degrades_holds_the_quota_and_recovers() {
    let Some(mut redis) = PrivateRedis::start().await else {
        println!("skipped: no redis-server on this machine");
        return;
    };
    let prefix = "faults";
    let replicas = [replica(&redis.url(), prefix, "r1"), replica(&redis.url(), prefix, "r2")];
    for r in &replicas {
        r.registry.heartbeat().await.unwrap();
    }
    for r in &replicas {
        assert_eq!(r.registry.heartbeat().await.unwrap(), 2);
    }

    let admissions = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let start = Instant::now();
    let run_for = Duration::from_secs(7);
    let mut tasks = Vec::new();
    for r in &replicas {
        for _ in 0..6 {
            let pool = r.pool.clone();
            let admissions = admissions.clone();
            let slowest = slowest.clone();
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < run_for {
                    let began = Instant::now();
                    let result = pool.try_admit(&spec()).await;
                    let took = began.elapsed();
                    {
                        let mut slowest = slowest.lock().unwrap();
                        *slowest = (*slowest).max(took);
                    }
                    match result.expect("admission never errors on a Redis fault") {
                        AdmitResult::Granted(grant) => {
                            admissions.lock().unwrap().push(Instant::now());
                            pool.report(&grant, &Outcome::Success { prompt_tokens: Some(1) }).await;
                        }
                        AdmitResult::Full { retry_after } => {
                            tokio::time::sleep(retry_after.min(Duration::from_millis(25))).await;
                        }
                    }
                }
            }));
        }
    }

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    redis.pause(1_200).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let degraded_during_pause = replicas.iter().all(|r| r.failover.mode() == Mode::Degraded);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart().await;
    for task in tasks {
        task.await.expect("no task panicked");
    }

    assert!(degraded_during_pause, "both replicas were degraded while Redis was paused");
    assert!(replicas.iter().all(|r| r.failover.degradations.load(std::sync::atomic::Ordering::Relaxed) >= 1));
    let slowest = *slowest.lock().unwrap();
    assert!(slowest < Duration::from_secs(1), "a call stalled for {slowest:?}");
    let times = admissions.lock().unwrap().clone();
    let peak = max_in_any_window(&times, WINDOW);
    assert!(peak <= RPM as usize, "{peak} admissions in one window against a limit of {RPM}");
    // Not merely refusing: the run admitted a real share of the capacity.
    assert!(times.len() >= 3 * RPM as usize, "only {} admissions", times.len());

    // Traffic after the restart brings both replicas back to shared mode.
    let deadline = Instant::now() + Duration::from_secs(5);
    while replicas.iter().any(|r| r.failover.mode() != Mode::Shared) && Instant::now() < deadline {
        for r in &replicas {
            if let Ok(AdmitResult::Granted(grant)) = r.pool.try_admit(&spec()).await {
                r.pool.report(&grant, &Outcome::Success { prompt_tokens: None }).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in &replicas {
        assert_eq!(
            r.failover.mode(),
            Mode::Shared,
            "recovered (degradations: {})",
            r.failover.degradations.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

#[tokio::test]
async fn a_replica_joining_or_leaving_changes_the_degraded_share() {
    let Some(mut redis) = PrivateRedis::start().await else {
        println!("skipped: no redis-server on this machine");
        return;
    };
    let a = replica(&redis.url(), "share", "a");
    let b = replica(&redis.url(), "share", "b");
    assert_eq!(a.registry.heartbeat().await.unwrap(), 1);
    assert_eq!(b.registry.heartbeat().await.unwrap(), 2);
    assert_eq!(a.registry.heartbeat().await.unwrap(), 2);
    b.registry.leave().await.unwrap();
    assert_eq!(a.registry.heartbeat().await.unwrap(), 1, "b left");
    let c = replica(&redis.url(), "share", "c");
    c.registry.heartbeat().await.unwrap();
    assert_eq!(a.registry.heartbeat().await.unwrap(), 2, "c joined");

    // With two live replicas and Redis gone, a gets 0.8 × 20 / 2 = 8 a window.
    // Until the failures last long enough to be an outage, nothing is
    // admitted; then the window's share at once.
    redis.kill();
    let (mut admitted, _) = admit_until_degraded(&a).await;
    for _ in 0..40 {
        if let AdmitResult::Granted(_) = a.pool.try_admit(&spec()).await.unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(a.failover.mode(), Mode::Degraded);
    assert_eq!(admitted, 8);
}

/// A cooldown written by replica A reaches replica B's local limiter by
/// pub/sub, so B still honours it after B loses Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restriction_changes_reach_every_replicas_local_limiter() {
    let Some(mut redis) = PrivateRedis::start().await else {
        println!("skipped: no redis-server on this machine");
        return;
    };
    let a = replica(&redis.url(), "feed", "a");
    let b = replica(&redis.url(), "feed", "b");
    let follower = tokio::spawn(b.failover.clone().follow_restrictions());
    // The subscription is asynchronous: wait until B hears a first change.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        a.pool.limiter().cool_down("gemini-2.5-flash", "warmup", 60_000, "warm-up").await.unwrap();
        let heard = b.failover.local().usage("gemini-2.5-flash", "warmup", 1_000).await.unwrap().cooldown.is_some();
        if heard || Instant::now() > deadline {
            assert!(heard, "B never heard a restriction change");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let grant = match a.pool.try_admit(&spec()).await.unwrap() {
        AdmitResult::Granted(grant) => grant,
        AdmitResult::Full { .. } => panic!("a fresh pool has room"),
    };
    a.pool
        .report(
            &grant,
            &Outcome::RateLimited {
                scope: key_rotation::outcome::QuotaScope::PerMinute,
                retry_delay: Some(Duration::from_secs(30)),
                zero_limit: false,
            },
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.failover.local().usage("gemini-2.5-flash", "p", 1_000).await.unwrap().cooldown.is_none() {
        assert!(Instant::now() < deadline, "the cooldown never reached B's local limiter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Redis gone: B decides alone, and still refuses the cooled bucket.
    redis.kill();
    let (granted, first_degraded) = admit_until_degraded(&b).await;
    assert_eq!(granted, 0, "B admitted into a bucket A had cooled");
    match first_degraded {
        AdmitResult::Full { retry_after } => {
            assert!(retry_after > Duration::from_secs(25), "{retry_after:?}");
        }
        AdmitResult::Granted(_) => panic!("B admitted into a bucket A had cooled"),
    }
    assert_eq!(b.failover.mode(), Mode::Degraded);
    follower.abort();
}

/// A stall shorter than an outage (a busy machine misses a few deadlines)
/// must not degrade a replica: the others keep admitting through Redis at
/// the full limit and would never see its local admissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shorter_than_an_outage_refuses_briefly_and_never_degrades() {
    let Some(redis) = PrivateRedis::start().await else {
        println!("skipped: no redis-server on this machine");
        return;
    };
    let replicas = [replica(&redis.url(), "stall", "r1"), replica(&redis.url(), "stall", "r2")];
    for r in &replicas {
        r.registry.heartbeat().await.unwrap();
    }
    let admissions = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let refusals_during_stall = Arc::new(Mutex::new(0usize));
    let start = Instant::now();
    let stall_from = Duration::from_millis(700);
    let stall_for = Duration::from_millis(OUTAGE_AFTER_MS / 2);
    let run_for = Duration::from_millis(2_500);
    let mut tasks = Vec::new();
    for r in &replicas {
        for _ in 0..4 {
            let (pool, admissions, refusals) = (r.pool.clone(), admissions.clone(), refusals_during_stall.clone());
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < run_for {
                    match pool.try_admit(&spec()).await.expect("admission never errors on a Redis fault") {
                        AdmitResult::Granted(grant) => {
                            admissions.lock().unwrap().push(Instant::now());
                            pool.report(&grant, &Outcome::Success { prompt_tokens: Some(1) }).await;
                        }
                        AdmitResult::Full { retry_after } => {
                            let elapsed = start.elapsed();
                            if elapsed > stall_from && elapsed < stall_from + stall_for {
                                *refusals.lock().unwrap() += 1;
                            }
                            tokio::time::sleep(retry_after.min(Duration::from_millis(25))).await;
                        }
                    }
                }
            }));
        }
    }
    tokio::time::sleep(stall_from).await;
    redis.pause(u64::try_from(stall_for.as_millis()).unwrap()).await;
    for task in tasks {
        task.await.expect("no task panicked");
    }
    for r in &replicas {
        assert_eq!(r.failover.degradations.load(std::sync::atomic::Ordering::Relaxed), 0, "a stall is not an outage");
        assert_eq!(r.failover.mode(), Mode::Shared);
    }
    assert!(*refusals_during_stall.lock().unwrap() > 0, "admissions were refused while Redis stalled");
    let times = admissions.lock().unwrap().clone();
    let peak = max_in_any_window(&times, WINDOW);
    assert!(peak <= RPM as usize, "{peak} admissions in one window against a limit of {RPM}");
    assert!(times.len() >= 2 * RPM as usize, "only {} admissions", times.len());
}

/// An admission whose reply is lost (Redis ran the script after the call's
/// deadline) is found and withdrawn, so it does not hold a unit of quota
/// that no request will use for the rest of the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_whose_reply_was_lost_is_withdrawn() {
    let Some(redis) = PrivateRedis::start().await else {
        println!("skipped: no redis-server on this machine");
        return;
    };
    let handle = Arc::new(RedisHandle::new(&redis.url(), DEADLINE).unwrap());
    let limiter = RedisLimiter::new(handle, "lost");
    let mut template = crate::request(vec![crate::candidate("k", "p", crate::limits(2, 1_000))], 10);
    template.window_ms = 60_000;

    // Paused, Redis queues the script and runs it after our deadline.
    redis.pause(200).await;
    limiter.admit(&template).await.expect_err("the call misses its deadline");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let usage = limiter.usage("gemini-test", "p", 60_000).await.unwrap();
    assert_eq!(
        (usage.requests_in_window, usage.tokens_in_window, usage.requests_today),
        (0, 0, 0),
        "the lost admission was withdrawn: {usage:?}"
    );
    // Both units of the window are there to be used.
    crate::admitted(crate::admit(&limiter, &template).await, "redis");
    crate::admitted(crate::admit(&limiter, &template).await, "redis");
    crate::refused(crate::admit(&limiter, &template).await, "redis");
}
