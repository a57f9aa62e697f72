//! Open-model load generation against the key pool.
//!
//! Requests arrive at a constant rate whatever the answers do: request `i`
//! is due at `start + i / rate`, and its latency is measured from then, so
//! a slow answer never hides the queue behind it (no coordinated omission).
//!
//! The scenario is keys.example.json's 8-key pool (3 × 15 + 5 × 60 = 345
//! requests per window), with the window scaled down so a run takes well
//! under a minute, and gemini-sim enforcing the same quotas. The guard stays
//! the production default (250 ms): it covers the time from our admission
//! to Google's count, which does not shrink with the window. (Scaled to
//! 25 ms it let one upstream 429 through on a saturated 2-core machine.)
//!
//! - `loadgen scenario --dir D`: writes the pool (`keys.json`), its secrets
//!   (`keys.env`) and the simulator's config (`sim.json`) for real servers.
//! - `loadgen chat --target URL…`: drives `POST /api/auth/chat/` over HTTP,
//!   spread round-robin over the replicas (`scripts/load-8key.sh` starts
//!   three of them, Redis, Postgres and a standalone gemini-sim).
//! - `loadgen pool`: the same load straight through the rotating executor
//!   in process: the engine alone, without HTTP or a database.
//! - `loadgen gateway`: the SDK gateway against gemini-sim directly and
//!   against LiteLLM's proxy, one request in flight or at fixed rates
//!   (`scripts/gateway-load.sh`, `scripts/gateway-vs-litellm.sh`).

#![allow(clippy::print_stdout, reason = "a command-line report")]

mod gateway;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gemini_client::{CallSpec, ExecError, Executor, ExecutorSettings, GeminiClient};
use gemini_sim::{KeyStatus, SimConfig, SimKey, SimLimits, SimServer, Stats};
use key_rotation::config::{BucketLimits, KeySpec, PoolConfig, Strategy, Workload};
use key_rotation::fair_use::{MemoryFairUse, UserLimits};
use key_rotation::pool::KeyPool;
use key_rotation::secrets::ApiKeySecret;
use serde_json::{json, Value};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "Open-model load against the key pool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write keys.json, keys.env and sim.json for the 8-key scenario.
    Scenario {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 6.0)]
        window_seconds: f64,
    },
    /// Load over HTTP on POST /api/auth/chat/.
    Chat {
        /// A server replica's base URL; repeat for several.
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// The gemini-sim every replica talks to (for its counts).
        #[arg(long)]
        sim: String,
        #[command(flatten)]
        load: Load,
    },
    /// The same load through the executor in process.
    Pool {
        #[command(flatten)]
        load: Load,
    },
    /// What the SDK gateway (and LiteLLM's) adds over calling gemini-sim.
    Gateway(gateway::GatewayLoad),
}

#[derive(Args, Debug, Clone)]
struct Load {
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
const TPM: u64 = 10_000_000;
/// The simulator's answer time, uniform in this range (ms).
const SIM_LATENCY_MS: (u64, u64) = (50, 150);

fn secret_of(id: &str) -> String {
    format!("load-{id}")
}

fn project_of(id: &str) -> String {
    format!("project-{id}")
}

fn sim_config(window_seconds: f64) -> SimConfig {
    let mut limits = BTreeMap::new();
    let mut keys = Vec::new();
    for (id, model, rpm) in POOL {
        limits.insert(format!("{}/{model}", project_of(id)), SimLimits { rpm, tpm: TPM, rpd: None });
        keys.push(SimKey { key: secret_of(id), id: id.into(), project: project_of(id), status: KeyStatus::Valid });
    }
    SimConfig { keys, limits, window_seconds, latency_ms: SIM_LATENCY_MS, ..SimConfig::default() }
}

fn write_scenario(dir: &std::path::Path, window_seconds: f64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let keys: Vec<Value> = POOL
        .iter()
        .map(|(id, model, rpm)| {
            json!({ "key_id": id, "model_name": model, "provider": "gemini", "project": project_of(id),
                    "rpm": rpm, "tpm": TPM })
        })
        .collect();
    let pool = json!({
        "rotation_strategy": "round_robin",
        "window_seconds": window_seconds,
        "keys": keys,
    });
    std::fs::write(dir.join("keys.json"), serde_json::to_string_pretty(&pool)?)?;
    let env: String =
        POOL.iter().map(|(id, ..)| format!("export GEMINI_KEY_{}={}\n", id.to_uppercase(), secret_of(id))).collect();
    std::fs::write(dir.join("keys.env"), env)?;
    let sim = sim_config(window_seconds);
    let sim_keys: Vec<Value> =
        sim.keys.iter().map(|k| json!({ "key": k.key, "id": k.id, "project": k.project, "status": "valid" })).collect();
    let sim_limits: serde_json::Map<String, Value> =
        sim.limits.iter().map(|(bucket, l)| (bucket.clone(), json!({ "rpm": l.rpm, "tpm": l.tpm }))).collect();
    let sim_json = json!({
        "keys": sim_keys,
        "limits": sim_limits,
        "window_seconds": window_seconds,
        "latency_ms": [SIM_LATENCY_MS.0, SIM_LATENCY_MS.1],
    });
    std::fs::write(dir.join("sim.json"), serde_json::to_string_pretty(&sim_json)?)?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Served,
    Throttled { retry_after: bool },
    Failed { status: u16 },
}

struct Sample {
    latency: Duration,
    outcome: Outcome,
    finished: Instant,
}

/// Fires `call(i, user)` at the offered rate and collects every answer.
async fn drive<F, Fut>(load: &Load, call: F) -> anyhow::Result<(Vec<Sample>, Instant)>
where
    F: Fn(usize, usize) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let rate = f64::from(capacity()) * load.percent / 100.0 / load.window_seconds;
    let total = (rate * load.seconds as f64).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        let request = call(i, i % load.users.max(1));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let outcome = request.await;
            Sample { latency: due.elapsed(), outcome, finished: Instant::now() }
        }));
    }
    let mut samples = Vec::with_capacity(total);
    for task in tasks {
        samples.push(task.await?);
    }
    Ok((samples, start))
}

fn capacity() -> u32 {
    POOL.iter().map(|(_, _, rpm)| rpm).sum()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn report(load: &Load, samples: &[Sample], start: Instant, stats: &Stats) {
    let served = samples.iter().filter(|s| matches!(s.outcome, Outcome::Served)).count();
    let throttled = samples.iter().filter(|s| matches!(s.outcome, Outcome::Throttled { .. })).count();
    let with_retry_after =
        samples.iter().filter(|s| matches!(s.outcome, Outcome::Throttled { retry_after: true })).count();
    let failed = samples.iter().filter(|s| matches!(s.outcome, Outcome::Failed { .. })).count();
    let deadline = Duration::from_secs(load.deadline_seconds);
    // Answered within the deadline, with a little slack for the last HTTP hop.
    let late = samples.iter().filter(|s| s.latency > deadline + Duration::from_millis(500)).count();
    let upstream_429: u64 = stats.buckets.values().map(|b| b.rate_limited).sum();
    // Goodput: served calls over what the limits allow across the span from
    // the first arrival to the last answer (capacity per window, pro rata).
    let last_served =
        samples.iter().filter(|s| matches!(s.outcome, Outcome::Served)).map(|s| s.finished).max().unwrap_or(start);
    let span = last_served.saturating_duration_since(start).as_secs_f64().max(load.window_seconds);
    let allowed = f64::from(capacity()) * span / load.window_seconds;
    let goodput = served as f64 / allowed;
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    println!("| offered | requests | served | 429 (with Retry-After) | other errors | upstream 429 | goodput | p50 | p90 | p99 | max | over deadline |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {:.0}% | {} | {served} | {throttled} ({with_retry_after}) | {failed} | {upstream_429} | {:.1}% | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {late} |",
        load.percent,
        samples.len(),
        goodput * 100.0,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for sample in samples {
        if let Outcome::Failed { status } = sample.outcome {
            *by_status.entry(status).or_default() += 1;
        }
    }
    if !by_status.is_empty() {
        println!("errors by status (0: no HTTP answer): {by_status:?}");
    }
    for (bucket, counts) in &stats.buckets {
        let limit = POOL
            .iter()
            .find(|(id, ..)| bucket.starts_with(&format!("{}/", project_of(id))))
            .map_or(0, |(_, _, rpm)| *rpm);
        if counts.max_in_window > limit {
            println!("OVER LIMIT: {bucket} peaked at {} in one window (limit {limit})", counts.max_in_window);
        }
    }
}

async fn run_pool(load: Load) -> anyhow::Result<()> {
    let sim = SimServer::start(sim_config(load.window_seconds)).await?;
    let keys = POOL
        .iter()
        .map(|(id, model, rpm)| KeySpec {
            key_id: (*id).into(),
            model: (*model).into(),
            provider: "gemini".into(),
            project: project_of(id),
            limits: BucketLimits { rpm: *rpm, tpm: TPM, rpd: None, burst: *rpm },
            max_in_flight: None,
            priority: 0,
            workload: Workload::for_model(model),
            active: true,
            tags: vec![],
            secret: ApiKeySecret::new(secret_of(id)),
        })
        .collect();
    let window = Duration::from_secs_f64(load.window_seconds);
    let config = PoolConfig { keys, strategy: Strategy::RoundRobin, window, ..PoolConfig::empty() };
    let pool = Arc::new(KeyPool::in_memory(config));
    let client = GeminiClient::new(&sim.base_url(), "v1beta", Duration::from_secs(5))?;
    // Fair use is not what this measures: per-user limits stay out of the way.
    let users = UserLimits { rpm: 100_000, burst: 100_000, tpm: u64::MAX / 4 };
    let settings =
        ExecutorSettings { deadline: Duration::from_secs(load.deadline_seconds), ..ExecutorSettings::default() };
    let executor = Arc::new(Executor::new(client, pool, Arc::new(MemoryFairUse::default()), users, settings));
    let (samples, start) = drive(&load, |i, user| {
        let executor = executor.clone();
        async move {
            let spec = CallSpec {
                user: Some(format!("user-{user}")),
                api_token: None,
                sticky: true,
                workload: Workload::Light,
                model: None,
                allow_spill: true,
                body: json!({ "contents": [{ "role": "user", "parts": [{ "text": format!("load request {i}") }] }] }),
                deadline: None,
            };
            match executor.generate(&spec).await {
                Ok(_) => Outcome::Served,
                Err(err @ (ExecError::PoolFull { .. } | ExecError::UserLimited { .. })) => {
                    Outcome::Throttled { retry_after: err.retry_after().is_some() }
                }
                Err(err) => Outcome::Failed { status: err.status() },
            }
        }
    })
    .await?;
    report(&load, &samples, start, &sim.sim.stats());
    Ok(())
}

/// A load user: a token and a chat session of their own.
struct ChatUser {
    token: String,
    session_id: String,
}

async fn expect_json(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "{what}: HTTP {status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("{what}: not JSON: {body}"))
}

/// Registers load user `n` at `target`; returns their access token.
async fn register(client: &reqwest::Client, target: &str, n: usize) -> anyhow::Result<String> {
    let run = std::process::id();
    let username = format!("load{run}u{n}");
    let password = format!("quartz-Lantern-{run}-{n}");
    // Each user registers from an address of its own (the servers trust
    // 127.0.0.1 as a proxy), as real users would, clear of the per-address
    // registration throttle.
    let address = format!("10.77.{}.{}", n / 250, n % 250 + 1);
    let registered = client
        .post(format!("{target}/api/auth/register/"))
        .header("x-forwarded-for", address)
        .json(&json!({ "username": username, "email": format!("{username}@example.com"),
                       "password": password, "password2": password }))
        .send()
        .await?;
    let registered = expect_json(registered, "register").await?;
    Ok(registered["tokens"]["access"].as_str().context("register: no access token")?.to_string())
}

async fn sign_up(client: &reqwest::Client, target: &str, n: usize) -> anyhow::Result<ChatUser> {
    let token = register(client, target, n).await?;
    let session = client
        .post(format!("{target}/api/auth/chat-sessions/"))
        .bearer_auth(&token)
        .json(&json!({ "title": "load" }))
        .send()
        .await?;
    let session = expect_json(session, "create a chat session").await?;
    let session_id = session["session_id"].as_str().context("chat session: no session_id")?.to_string();
    Ok(ChatUser { token, session_id })
}

async fn run_chat(targets: Vec<String>, sim: String, load: Load) -> anyhow::Result<()> {
    let targets: Arc<Vec<String>> =
        Arc::new(targets.into_iter().map(|t| t.trim_end_matches('/').to_string()).collect());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(load.deadline_seconds + 30))
        .pool_max_idle_per_host(4096)
        .build()?;
    let mut users = Vec::with_capacity(load.users);
    for n in 0..load.users.max(1) {
        users.push(sign_up(&client, &targets[n % targets.len()], n).await?);
    }
    let users = Arc::new(users);
    let (samples, start) = drive(&load, |i, user| {
        let (client, targets, users) = (client.clone(), targets.clone(), users.clone());
        async move {
            let user = &users[user];
            // Round robin over the replicas, as the load balancer does.
            let target = &targets[i % targets.len()];
            let sent = client
                .post(format!("{target}/api/auth/chat/"))
                .bearer_auth(&user.token)
                .json(&json!({ "message": format!("load request {i}"), "session_id": user.session_id }))
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    // Read the whole answer: latency includes the body.
                    let _ = response.bytes().await;
                    match status {
                        200 => Outcome::Served,
                        429 => Outcome::Throttled { retry_after },
                        status => Outcome::Failed { status },
                    }
                }
                Err(_) => Outcome::Failed { status: 0 },
            }
        }
    })
    .await?;
    let stats: Stats = client.get(format!("{}/_sim/stats", sim.trim_end_matches('/'))).send().await?.json().await?;
    report(&load, &samples, start, &stats);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Scenario { dir, window_seconds } => write_scenario(&dir, window_seconds),
        Command::Chat { targets, sim, load } => run_chat(targets, sim, load).await,
        Command::Pool { load } => run_pool(load).await,
        Command::Gateway(load) => gateway::run(load).await,
    }
}
