//! Admission latency, memory and Redis, with 8 and with 1,000 keys, a bare
//! Redis PING for scale, and cooldown propagation between two replicas'
//! connections. Run: `cargo bench -p key-rotation` (Redis from
//! BENCH_REDIS_URL, default redis://127.0.0.1:6379).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use key_rotation::clock::SystemClock;
use key_rotation::config::{BucketLimits, KeySpec, PoolConfig, Strategy, Workload};
use key_rotation::events::MemoryEventLog;
use key_rotation::limiter::memory::MemoryLimiter;
use key_rotation::limiter::redis::RedisLimiter;
use key_rotation::limiter::Limiter;
use key_rotation::pool::{AdmitResult, AdmitSpec, KeyPool, PoolOptions};
use key_rotation::redis_conn::RedisHandle;
use key_rotation::secrets::ApiKeySecret;

const MODEL: &str = "gemini-2.5-flash";

fn pool_config(keys: usize) -> PoolConfig {
    PoolConfig {
        keys: (0..keys)
            .map(|i| KeySpec {
                key_id: format!("key-{i:04}"),
                model: MODEL.into(),
                provider: "gemini".into(),
                project: format!("project-{i:04}"),
                // Room for every admission of the run: this measures the
                // admitting path, not refusals.
                limits: BucketLimits { rpm: 10_000_000, tpm: u64::MAX / 4, rpd: None, burst: 10_000_000 },
                max_in_flight: None,
                priority: i64::try_from(i).unwrap(),
                workload: Workload::Light,
                active: true,
                tags: vec![],
                secret: ApiKeySecret::new(format!("bench-secret-{i}")),
            })
            .collect(),
        strategy: Strategy::RoundRobin,
        ..PoolConfig::empty()
    }
}

fn pool(keys: usize, limiter: Arc<dyn Limiter>) -> KeyPool {
    KeyPool::new(
        pool_config(keys),
        limiter,
        Arc::new(MemoryEventLog::default()),
        Arc::new(SystemClock),
        PoolOptions::default(),
    )
}

fn spec() -> AdmitSpec {
    AdmitSpec { workload: Workload::Light, model: None, allow_spill: false, sticky_user: None, estimated_tokens: 100 }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    samples: usize,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats { p50: at(0.50), p99: at(0.99), max: *samples.last().unwrap(), samples: samples.len() }
}

async fn admissions(pool: &KeyPool, warmup: usize, iterations: usize) -> Stats {
    for _ in 0..warmup {
        pool.try_admit(&spec()).await.unwrap();
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let result = pool.try_admit(&spec()).await.unwrap();
        samples.push(start.elapsed());
        assert!(matches!(result, AdmitResult::Granted(_)), "the bench measures admissions");
    }
    stats(samples)
}

fn row(name: &str, stats: &Stats) {
    println!(
        "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {} |",
        stats.p50.as_secs_f64() * 1e6,
        stats.p99.as_secs_f64() * 1e6,
        stats.max.as_secs_f64() * 1e6,
        stats.samples
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("| measurement | p50 | p99 | max | samples |");
    println!("|---|---|---|---|---|");
    for keys in [8, 1000] {
        let memory = pool(keys, Arc::new(MemoryLimiter::default()));
        row(&format!("memory admission, {keys} keys"), &admissions(&memory, 2_000, 50_000).await);
        let mut views = Vec::new();
        for i in 0..220 {
            let start = Instant::now();
            memory.view().await.unwrap();
            if i >= 20 {
                views.push(start.elapsed());
            }
        }
        row(&format!("memory operators' view, {keys} keys"), &stats(views));
    }

    let url = std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let handle = Arc::new(RedisHandle::new(&url, Duration::from_secs(1)).unwrap());
    if let Err(err) = handle.ping().await {
        println!("\n(Redis at {url} unreachable: {err}; Redis rows skipped)");
        return;
    }
    let mut pings = Vec::new();
    for i in 0..6_000 {
        let start = Instant::now();
        handle.ping().await.unwrap();
        if i >= 1_000 {
            pings.push(start.elapsed());
        }
    }
    let ping = stats(pings);
    row("Redis PING (same connection)", &ping);
    let run = std::process::id();
    for keys in [8, 1000] {
        let redis = pool(keys, Arc::new(RedisLimiter::new(handle.clone(), &format!("bench-{run}-{keys}"))));
        let measured = admissions(&redis, 500, 5_000).await;
        row(&format!("Redis admission, {keys} keys"), &measured);
        println!(
            "|   … as a multiple of PING | {:.1}× | {:.1}× | | |",
            measured.p50.as_secs_f64() / ping.p50.as_secs_f64(),
            measured.p99.as_secs_f64() / ping.p99.as_secs_f64()
        );
        // What a dashboard refresh or a metrics scrape reads: every key and
        // bucket, after the admissions above filled the windows.
        let mut views = Vec::new();
        for i in 0..220 {
            let start = Instant::now();
            redis.view().await.unwrap();
            if i >= 20 {
                views.push(start.elapsed());
            }
        }
        row(&format!("operators' view (every key and bucket), {keys} keys"), &stats(views));
        let config = redis.config();
        let request = key_rotation::limiter::SnapshotRequest {
            window_ms: 61_000,
            buckets: config.keys.iter().map(|k| (k.model.clone(), k.project.clone())).collect(),
            keys: config.keys.iter().map(|k| (k.model.clone(), k.key_id.clone())).collect(),
        };
        let mut reads = Vec::new();
        for i in 0..220 {
            let start = Instant::now();
            redis.limiter().snapshot(&request).await.unwrap();
            if i >= 20 {
                reads.push(start.elapsed());
            }
        }
        row(&format!("  of which the limiter's read, {keys} keys"), &stats(reads));
    }

    // Cooldown propagation: replica A cools a bucket; replica B (its own
    // connection) admits in a tight loop until it is refused.
    let prefix = format!("bench-propagation-{run}");
    let a = RedisLimiter::new(Arc::new(RedisHandle::new(&url, Duration::from_secs(1)).unwrap()), &prefix);
    let b_handle = Arc::new(RedisHandle::new(&url, Duration::from_secs(1)).unwrap());
    let b = pool(1, Arc::new(RedisLimiter::new(b_handle, &prefix)));
    let mut delays = Vec::new();
    for _ in 0..300 {
        let cooled = Instant::now();
        a.cool_down(MODEL, "project-0000", 60_000, "bench").await.unwrap();
        loop {
            if let AdmitResult::Full { .. } = b.try_admit(&spec()).await.unwrap() {
                delays.push(cooled.elapsed());
                break;
            }
        }
        a.clear_cooldown(MODEL, "project-0000").await.unwrap();
    }
    row("cooldown propagation A → B (write to first refusal)", &stats(delays));
}
