//! Open-model load generation against the key pool.
//!
//! Requests arrive at a constant rate whatever the answers do: request `i`
//! is due at `start + i / rate`, and its latency is measured from then, so
//! a slow answer never hides the queue behind it (no coordinated omission).
//!
//! `loadgen pool`: the 8-key pool of keys.example.json (3 × 15 + 5 × 60 =
//! 315 requests per window) driven through the rotating executor in
//! process, against gemini-sim with the same quotas, with the window scaled
//! down so a run takes well under a minute. The chat endpoint (a later
//! issue) moves this to HTTP.

#![allow(clippy::print_stdout, reason = "a command-line report")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use gemini_client::{CallSpec, ExecError, Executor, ExecutorSettings, GeminiClient};
use gemini_sim::{KeyStatus, SimConfig, SimKey, SimLimits, SimServer};
use key_rotation::clock::SystemClock;
use key_rotation::config::{BucketLimits, KeySpec, PoolConfig, Strategy, Workload};
use key_rotation::events::MemoryEventLog;
use key_rotation::fair_use::{MemoryFairUse, UserLimits};
use key_rotation::limiter::memory::MemoryLimiter;
use key_rotation::pool::{KeyPool, PoolOptions};
use key_rotation::secrets::ApiKeySecret;
use serde_json::json;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "Open-model load against the key pool")]
struct Args {
    /// Offered load as a percentage of the pool's capacity.
    #[arg(long, default_value_t = 90.0)]
    percent: f64,
    /// How long requests keep arriving.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The quota window, scaled down from Google's 60 s.
    #[arg(long, default_value_t = 6.0)]
    window_seconds: f64,
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// Each call's deadline (AI_DEADLINE_SECS).
    #[arg(long, default_value_t = 25)]
    deadline_seconds: u64,
}

/// keys.example.json's pool: (id, model, requests per window).
const POOL: [(&str, &str, u32); 8] = [
    ("flash_01", "gemini-2.5-flash", 15),
    ("flash_02", "gemini-2.5-flash", 15),
    ("flash_03", "gemini-2.5-flash", 15),
    ("pro_01", "gemini-2.5-pro", 60),
    ("pro_02", "gemini-2.5-pro", 60),
    ("pro_03", "gemini-2.5-pro", 60),
    ("pro_04", "gemini-2.5-pro", 60),
    ("pro_05", "gemini-2.5-pro", 60),
];

enum Result_ {
    Served,
    Throttled { retry_after: Option<Duration> },
    Failed { status: u16 },
}

struct Sample {
    latency: Duration,
    result: Result_,
}

async fn setup(args: &Args) -> anyhow::Result<(SimServer, Arc<Executor>)> {
    let window = Duration::from_secs_f64(args.window_seconds);
    let mut limits = BTreeMap::new();
    let mut sim_keys = Vec::new();
    let mut keys = Vec::new();
    for (id, model, rpm) in POOL {
        let project = format!("project-{id}");
        limits.insert(format!("{project}/{model}"), SimLimits { rpm, tpm: 10_000_000, rpd: None });
        sim_keys.push(SimKey {
            key: format!("load-{id}"),
            id: id.into(),
            project: project.clone(),
            status: KeyStatus::Valid,
        });
        keys.push(KeySpec {
            key_id: id.into(),
            model: model.into(),
            provider: "gemini".into(),
            project,
            limits: BucketLimits { rpm, tpm: 10_000_000, rpd: None, burst: rpm },
            max_in_flight: None,
            priority: 0,
            workload: Workload::for_model(model),
            active: true,
            tags: vec![],
            secret: ApiKeySecret::new(format!("load-{id}")),
        });
    }
    let sim = SimServer::start(SimConfig {
        keys: sim_keys,
        limits,
        window_seconds: args.window_seconds,
        latency_ms: (50, 150),
        ..SimConfig::default()
    })
    .await?;
    // The guard covers the gap between our admission and Google's count;
    // on loopback that is a few milliseconds, so it scales with the window.
    let guard = Duration::from_secs_f64((args.window_seconds * 0.25 / 60.0).max(0.02));
    let pool = PoolConfig { keys, strategy: Strategy::RoundRobin, window, guard, ..PoolConfig::empty() };
    let pool = Arc::new(KeyPool::new(
        pool,
        Arc::new(MemoryLimiter::default()),
        Arc::new(MemoryEventLog::default()),
        Arc::new(SystemClock),
        PoolOptions::default(),
    ));
    let client = GeminiClient::new(&sim.base_url(), "v1beta", Duration::from_secs(5))?;
    // Fair use is not what this measures: per-user limits stay out of the way.
    let users = UserLimits { rpm: 100_000, burst: 100_000, tpm: u64::MAX / 4 };
    let settings =
        ExecutorSettings { deadline: Duration::from_secs(args.deadline_seconds), ..ExecutorSettings::default() };
    let executor = Executor::new(client, pool, Arc::new(MemoryFairUse::default()), users, settings);
    Ok((sim, Arc::new(executor)))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (sim, executor) = setup(&args).await?;
    let capacity: u32 = POOL.iter().map(|(_, _, rpm)| rpm).sum();
    let rate = f64::from(capacity) * args.percent / 100.0 / args.window_seconds;
    let total = (rate * args.seconds as f64).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        let executor = executor.clone();
        let user = format!("user-{}", i % args.users.max(1));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let spec = CallSpec {
                user: Some(user),
                sticky: true,
                workload: Workload::Light,
                model: None,
                allow_spill: true,
                body: json!({ "contents": [{ "role": "user", "parts": [{ "text": format!("load request {i}") }] }] }),
                deadline: None,
            };
            let result = match executor.generate(&spec).await {
                Ok(_) => Result_::Served,
                Err(err @ (ExecError::PoolFull { .. } | ExecError::UserLimited { .. })) => {
                    Result_::Throttled { retry_after: err.retry_after() }
                }
                Err(err) => Result_::Failed { status: err.status() },
            };
            (Sample { latency: due.elapsed(), result }, Instant::now())
        }));
    }
    let mut samples = Vec::with_capacity(total);
    let mut last_served = start;
    for task in tasks {
        let (sample, finished) = task.await?;
        if matches!(sample.result, Result_::Served) {
            last_served = last_served.max(finished);
        }
        samples.push(sample);
    }

    let served = samples.iter().filter(|s| matches!(s.result, Result_::Served)).count();
    let throttled: Vec<&Sample> = samples.iter().filter(|s| matches!(s.result, Result_::Throttled { .. })).collect();
    let with_retry_after =
        throttled.iter().filter(|s| matches!(s.result, Result_::Throttled { retry_after: Some(_) })).count();
    let failed = samples.iter().filter(|s| matches!(s.result, Result_::Failed { .. })).count();
    let deadline = Duration::from_secs(args.deadline_seconds);
    // Answered within the deadline, with a little slack for the last HTTP hop.
    let late = samples.iter().filter(|s| s.latency > deadline + Duration::from_millis(500)).count();
    let stats = sim.sim.stats();
    let upstream_429: u64 = stats.buckets.values().map(|b| b.rate_limited).sum();
    // Goodput: served calls over what the limits allow across the span from
    // the first arrival to the last answer (capacity per window, pro rata).
    let span = last_served.duration_since(start).as_secs_f64().max(args.window_seconds);
    let allowed = f64::from(capacity) * span / args.window_seconds;
    let goodput = served as f64 / allowed;
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    println!("| offered | requests | served | 429 (with Retry-After) | other errors | upstream 429 | goodput | p50 | p90 | p99 | max | over deadline |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {:.0}% | {total} | {served} | {} ({with_retry_after}) | {failed} | {upstream_429} | {:.1}% | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {late} |",
        args.percent,
        throttled.len(),
        goodput * 100.0,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for sample in &samples {
        if let Result_::Failed { status } = sample.result {
            *by_status.entry(status).or_default() += 1;
        }
    }
    if !by_status.is_empty() {
        println!("errors by status: {by_status:?}");
    }
    for (bucket, counts) in &stats.buckets {
        let limit =
            POOL.iter().find(|(id, ..)| bucket.starts_with(&format!("project-{id}/"))).map_or(0, |(_, _, rpm)| *rpm);
        if counts.max_in_window > limit {
            println!("OVER LIMIT: {bucket} peaked at {} in one window (limit {limit})", counts.max_in_window);
        }
    }
    Ok(())
}
