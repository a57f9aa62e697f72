//! Gateways side by side in front of one gemini-sim: the same request
//! straight to the simulator (the baseline), through algoagent's SDK
//! gateway, and through a LiteLLM proxy, so what each adds is measured in
//! the same run on the same machine.
//!
//! - Without `--rate`: one request in flight, the targets taking turns
//!   request by request, so a drift of the machine touches them all alike.
//! - With `--rate R` (repeatable): open-model arrivals at R per second for
//!   `--seconds`, each target in turn, latency from each request's due time.
//!
//! `--watch name=PID` reports a process's CPU (from /proc's utime + stime)
//! and its peak resident memory (VmRSS sampled every 100 ms) over each run,
//! and the machine's busy share, to say what saturates first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::{expect_json, percentile, register, Outcome};

#[derive(Args, Debug)]
pub struct GatewayLoad {
    /// gemini-sim's base URL: the direct baseline, and whose 429s count.
    #[arg(long)]
    sim: String,
    /// A key the simulator accepts, for the direct baseline.
    #[arg(long)]
    sim_key: String,
    /// An algoagent server: the load registers a user and an API token.
    #[arg(long)]
    algoagent: Option<String>,
    /// Which algoagent surface: Gemini-native `/v1beta` or OpenAI's `/v1`.
    #[arg(long, value_enum, default_value_t = Surface::Google)]
    surface: Surface,
    /// A LiteLLM proxy's base URL (its OpenAI surface).
    #[arg(long)]
    litellm: Option<String>,
    /// The LiteLLM proxy's master key.
    #[arg(long, default_value = "sk-load")]
    litellm_key: String,
    #[arg(long, default_value = "gemini-2.5-flash")]
    model: String,
    /// Arrivals per second; repeat for several runs. Without it, one
    /// request in flight.
    #[arg(long = "rate")]
    rates: Vec<f64>,
    /// How long arrivals last at each rate.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Requests per target with one in flight.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Requests to each target before anything is timed.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Leave out the direct baseline (a load over the quota would only
    /// provoke the simulator's 429s).
    #[arg(long)]
    no_direct: bool,
    /// `name=pid` of a process to report CPU and memory of (`self` for
    /// this one); repeatable.
    #[arg(long = "watch")]
    watch: Vec<String>,
    /// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Each request's timeout.
    #[arg(long, default_value_t = 30)]
    timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Surface {
    Google,
    Openai,
}

/// One way to send the same question.
#[derive(Clone)]
struct Target {
    name: String,
    url: String,
    auth: (&'static str, String),
    body: Value,
}

impl Target {
    fn google(name: &str, base: &str, model: &str, key: &str) -> Self {
        Self {
            name: name.to_string(),
            url: format!("{}/v1beta/models/{model}:generateContent", base.trim_end_matches('/')),
            auth: ("x-goog-api-key", key.to_string()),
            body: json!({ "contents": [{ "role": "user", "parts": [{ "text": "Say something short." }] }] }),
        }
    }

    fn openai(name: &str, base: &str, model: &str, key: &str) -> Self {
        Self {
            name: name.to_string(),
            url: format!("{}/v1/chat/completions", base.trim_end_matches('/')),
            auth: ("authorization", format!("Bearer {key}")),
            body: json!({ "model": model, "messages": [{ "role": "user", "content": "Say something short." }] }),
        }
    }

    /// Sends the question once: how it ended, and the time the server
    /// spent in it beyond waiting on upstream, when it says (algoagent's
    /// `Server-Timing: upstream;dur=`).
    async fn send(&self, client: &reqwest::Client) -> (Outcome, Option<Duration>) {
        let started = Instant::now();
        let sent = client.post(&self.url).header(self.auth.0, &self.auth.1).json(&self.body).send().await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let upstream = response
                    .headers()
                    .get("server-timing")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("upstream;dur="))
                    .and_then(|ms| ms.parse::<f64>().ok());
                // The whole answer: latency includes the body.
                let _ = response.bytes().await;
                let own = upstream.map(|ms| started.elapsed().saturating_sub(Duration::from_secs_f64(ms / 1e3)));
                let outcome = match status {
                    200 => Outcome::Served,
                    429 => Outcome::Throttled { retry_after },
                    status => Outcome::Failed { status },
                };
                (outcome, own)
            }
            Err(_) => (Outcome::Failed { status: 0 }, None),
        }
    }
}

/// A user and a gateway token of theirs on an algoagent server.
async fn api_token(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let access = register(client, base, 0).await?;
    let created = client
        .post(format!("{base}/api/auth/api-tokens/"))
        .bearer_auth(&access)
        .json(&json!({ "name": "load" }))
        .send()
        .await?;
    let created = expect_json(created, "create an API token").await?;
    Ok(created["token"].as_str().context("API token: no token")?.to_string())
}

/// A process's CPU time so far and its resident memory, from /proc.
fn process_reading(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim();
    Some((ticks, rss_kb.parse().ok()?))
}

/// The machine's busy and total CPU ticks so far.
fn machine_reading() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// What the watched processes and the machine did over one run.
struct Watch {
    processes: Vec<(String, u32)>,
    started: Instant,
    cpu_before: Vec<Option<u64>>,
    machine_before: Option<(u64, u64)>,
    peak_rss_kb: Arc<std::sync::Mutex<Vec<u64>>>,
    running: Arc<AtomicBool>,
}

impl Watch {
    fn start(processes: &[(String, u32)]) -> Self {
        let cpu_before = processes.iter().map(|(_, pid)| process_reading(*pid).map(|(ticks, _)| ticks)).collect();
        let peak_rss_kb = Arc::new(std::sync::Mutex::new(vec![0; processes.len()]));
        let running = Arc::new(AtomicBool::new(true));
        let (pids, peaks, still) =
            (processes.iter().map(|(_, pid)| *pid).collect::<Vec<_>>(), peak_rss_kb.clone(), running.clone());
        tokio::spawn(async move {
            while still.load(Ordering::Relaxed) {
                let readings: Vec<u64> =
                    pids.iter().map(|pid| process_reading(*pid).map_or(0, |(_, rss)| rss)).collect();
                {
                    let mut peaks = peaks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for (peak, rss) in peaks.iter_mut().zip(readings) {
                        *peak = (*peak).max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            processes: processes.to_vec(),
            started: Instant::now(),
            cpu_before,
            machine_before: machine_reading(),
            peak_rss_kb,
            running,
        }
    }

    /// `name cpu% peakMB` for each process, and the machine's busy share.
    fn finish(self, clk_tck: u64) -> String {
        self.running.store(false, Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let peaks = self.peak_rss_kb.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut parts = Vec::new();
        for (((name, pid), before), peak) in self.processes.iter().zip(&self.cpu_before).zip(peaks) {
            let after = process_reading(*pid).map(|(ticks, _)| ticks);
            let cpu = match (before, after) {
                (Some(before), Some(after)) => {
                    format!("{:.0}%", (after - before) as f64 / clk_tck as f64 / elapsed * 100.0)
                }
                _ => "?".to_string(),
            };
            parts.push(format!("{name} {cpu} CPU, {:.1} MB peak", peak as f64 / 1024.0));
        }
        if let (Some((busy0, total0)), Some((busy1, total1))) = (self.machine_before, machine_reading()) {
            let share = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64 * 100.0;
            parts.push(format!("machine {share:.0}% busy"));
        }
        parts.join("; ")
    }
}

/// One target's answers in a run.
struct Run {
    latencies: Vec<Duration>,
    /// Per request: the whole round trip less the server's upstream wait.
    own: Vec<Duration>,
    served: usize,
    throttled: usize,
    with_retry_after: usize,
    failed: BTreeMap<u16, usize>,
}

impl Run {
    fn new() -> Self {
        Self {
            latencies: Vec::new(),
            own: Vec::new(),
            served: 0,
            throttled: 0,
            with_retry_after: 0,
            failed: BTreeMap::new(),
        }
    }

    fn add(&mut self, latency: Duration, (outcome, own): (Outcome, Option<Duration>)) {
        self.latencies.push(latency);
        self.own.extend(own);
        match outcome {
            Outcome::Served => self.served += 1,
            Outcome::Throttled { retry_after } => {
                self.throttled += 1;
                self.with_retry_after += usize::from(retry_after);
            }
            Outcome::Failed { status } => *self.failed.entry(status).or_default() += 1,
        }
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        percentile(&self.latencies, q)
    }

    /// `p50 / p99` of the time beyond the upstream wait, when the server said.
    fn own_time(&mut self) -> String {
        if self.own.is_empty() {
            return "—".to_string();
        }
        self.own.sort_unstable();
        format!("{:.3} / {:.3} ms", ms(percentile(&self.own, 0.50)), ms(percentile(&self.own, 0.99)))
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

async fn upstream_429s(client: &reqwest::Client, sim: &str) -> anyhow::Result<u64> {
    let stats: gemini_sim::Stats = client.get(format!("{sim}/_sim/stats")).send().await?.json().await?;
    Ok(stats.buckets.values().map(|bucket| bucket.rate_limited).sum())
}

const HEADER: &str = "| target | load | requests | ok | 429 (with Retry-After) | other errors | upstream 429 | p50 | p99 | added p50 | added p99 | beyond upstream p50 / p99 | processes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

#[allow(clippy::too_many_arguments, reason = "one table row's cells")]
fn row(
    target: &str,
    load: &str,
    run: &mut Run,
    baseline: Option<(Duration, Duration)>,
    upstream: u64,
    watched: &str,
) -> String {
    let (p50, p99) = (run.quantile(0.50), run.quantile(0.99));
    let added = |value: Duration, base: Duration| format!("{:+.3} ms", ms(value) - ms(base));
    let (added50, added99) = match baseline {
        Some((base50, base99)) => (added(p50, base50), added(p99, base99)),
        None => ("—".to_string(), "—".to_string()),
    };
    let errors: usize = run.failed.values().sum();
    let errors = if run.failed.is_empty() { "0".to_string() } else { format!("{errors} {:?}", run.failed) };
    let own = run.own_time();
    format!(
        "| {target} | {load} | {} | {} | {} ({}) | {errors} | {upstream} | {:.3} ms | {:.3} ms | {added50} | {added99} | {own} | {watched} |",
        run.latencies.len(),
        run.served,
        run.throttled,
        run.with_retry_after,
        ms(p50),
        ms(p99),
    )
}

pub async fn run(load: GatewayLoad) -> anyhow::Result<()> {
    let sim = load.sim.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(load.timeout_seconds))
        .pool_max_idle_per_host(4096)
        .build()?;
    let mut targets = Vec::new();
    if !load.no_direct {
        targets.push(Target::google("direct", &sim, &load.model, &load.sim_key));
    }
    if let Some(base) = &load.algoagent {
        let token = api_token(&client, base.trim_end_matches('/')).await?;
        targets.push(match load.surface {
            Surface::Google => Target::google("algoagent /v1beta", base, &load.model, &token),
            Surface::Openai => Target::openai("algoagent /v1", base, &load.model, &token),
        });
    }
    if let Some(base) = &load.litellm {
        targets.push(Target::openai("litellm /v1", base, &load.model, &load.litellm_key));
    }
    anyhow::ensure!(!targets.is_empty(), "nothing to measure");
    let mut watched = Vec::new();
    for entry in &load.watch {
        let (name, pid) = entry.split_once('=').context("--watch takes name=pid")?;
        let pid = if pid == "self" { std::process::id() } else { pid.parse().context("--watch takes name=pid")? };
        watched.push((name.to_string(), pid));
    }

    // Connections and caches warm before anything is timed.
    for target in &targets {
        for _ in 0..load.warmup {
            target.send(&client).await;
        }
    }
    println!("{HEADER}");
    if load.rates.is_empty() {
        sequential(&load, &client, &targets, &watched, &sim).await
    } else {
        for &rate in &load.rates {
            open_model(&load, &client, &targets, &watched, &sim, rate).await?;
        }
        Ok(())
    }
}

/// One request in flight, the targets taking turns.
async fn sequential(
    load: &GatewayLoad,
    client: &reqwest::Client,
    targets: &[Target],
    watched: &[(String, u32)],
    sim: &str,
) -> anyhow::Result<()> {
    let mut runs: Vec<Run> = targets.iter().map(|_| Run::new()).collect();
    let upstream_before = upstream_429s(client, sim).await?;
    let watch = Watch::start(watched);
    for _ in 0..load.requests {
        for (target, run) in targets.iter().zip(&mut runs) {
            let sent = Instant::now();
            let answer = target.send(client).await;
            run.add(sent.elapsed(), answer);
        }
    }
    let upstream = upstream_429s(client, sim).await? - upstream_before;
    let watched = watch.finish(load.clk_tck);
    let load_name = "1 in flight";
    let baseline = (!load.no_direct).then(|| (runs[0].quantile(0.50), runs[0].quantile(0.99)));
    for (target, run) in targets.iter().zip(&mut runs) {
        let baseline = baseline.filter(|_| target.name != "direct");
        println!("{}", row(&target.name, load_name, run, baseline, upstream, &watched));
    }
    Ok(())
}

/// Open-model arrivals at `rate` per second, each target in turn with the
/// simulator's counts reset before it.
async fn open_model(
    load: &GatewayLoad,
    client: &reqwest::Client,
    targets: &[Target],
    watched: &[(String, u32)],
    sim: &str,
    rate: f64,
) -> anyhow::Result<()> {
    let mut baseline = None;
    for target in targets {
        client.post(format!("{sim}/_sim/reset")).send().await?.error_for_status()?;
        let total = (rate * load.seconds as f64).round() as usize;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now() + Duration::from_millis(100);
        let watch = Watch::start(watched);
        let target = Arc::new(target.clone());
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
            let (client, target) = (client.clone(), target.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(due).await;
                let answer = target.send(&client).await;
                (due.elapsed(), answer)
            }));
        }
        let mut run = Run::new();
        for task in tasks {
            let (latency, answer) = task.await?;
            run.add(latency, answer);
        }
        let watched = watch.finish(load.clk_tck);
        let upstream = upstream_429s(client, sim).await?;
        let load_name = format!("{rate} rps × {} s", load.seconds);
        let this_baseline = if target.name == "direct" { None } else { baseline };
        println!("{}", row(&target.name, &load_name, &mut run, this_baseline, upstream, &watched));
        if target.name == "direct" {
            baseline = Some((run.quantile(0.50), run.quantile(0.99)));
        }
        // Let connections and counters settle between runs.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}
