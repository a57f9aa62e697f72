//! Several OS processes share one Redis. Each admitted call is sent to a
//! sink in this (parent) process, stamped with the wall-clock time it left
//! the worker, as Google would see it arrive over a network of constant
//! delay; the limiter's own records play no part. The oracle then checks
//! every sliding window of every bucket.
//!
//! Why the departure time and not the sink's arrival time: on a loaded
//! 2-core machine the sink's reader tasks can be descheduled for longer than
//! the guard, which shifts arrivals by a scheduling artifact Google does not
//! have. The departure time still includes every delay on the worker's side
//! between admission and the call, which is what the guard must cover.
//!
//! The workers are this same test binary re-run with `--ignored --exact
//! multi_process::worker` and a role in the environment.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use key_rotation::config::{BucketLimits, KeySpec, PoolConfig, Strategy, Workload};
use key_rotation::events::MemoryEventLog;
use key_rotation::limiter::failover::FailoverLimiter;
use key_rotation::limiter::redis::RedisLimiter;
use key_rotation::limiter::Limiter;
use key_rotation::outcome::Outcome;
use key_rotation::pool::{AdmitResult, AdmitSpec, KeyPool, PoolOptions};
use key_rotation::redis_conn::RedisHandle;
use key_rotation::replicas::{ReplicaId, ReplicaRegistry};
use key_rotation::secrets::ApiKeySecret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const WINDOW: Duration = Duration::from_secs(2);
const GUARD: Duration = Duration::from_millis(50);
const PROCESSES: usize = 4;
const RUN: Duration = Duration::from_millis(11_500);
/// Concurrent admitting tasks in each worker process, each with its own sink connection.
const TASKS_PER_PROCESS: u64 = 8;
/// (project, rpm): three buckets of different sizes.
const BUCKETS: [(&str, u32); 3] = [("small", 6), ("medium", 15), ("large", 40)];

fn config() -> PoolConfig {
    let keys = BUCKETS
        .iter()
        .flat_map(|(project, rpm)| {
            // Two keys per project: they share the bucket.
            (0..2).map(move |i| KeySpec {
                key_id: format!("{project}-{i}"),
                model: "gemini-2.5-flash".into(),
                provider: "gemini".into(),
                project: (*project).to_string(),
                limits: BucketLimits { rpm: *rpm, tpm: 10_000_000, rpd: None, burst: *rpm },
                max_in_flight: None,
                priority: 0,
                workload: Workload::Light,
                active: true,
                tags: vec![],
                secret: ApiKeySecret::new(format!("secret-{project}-{i}")),
            })
        })
        .collect();
    PoolConfig { keys, strategy: Strategy::RoundRobin, window: WINDOW, guard: GUARD, ..PoolConfig::empty() }
}

fn pool(url: &str, prefix: &str, id: &str) -> Arc<KeyPool> {
    let handle = Arc::new(RedisHandle::new(url, Duration::from_millis(500)).unwrap());
    let registry =
        Arc::new(ReplicaRegistry::new(handle.clone(), prefix, &ReplicaId::named(id), Duration::from_secs(10)));
    let limiter: Arc<dyn Limiter> = Arc::new(FailoverLimiter::new(RedisLimiter::new(handle, prefix), registry));
    Arc::new(KeyPool::new(
        config(),
        limiter,
        Arc::new(MemoryEventLog::default()),
        Arc::new(key_rotation::clock::SystemClock),
        PoolOptions::default(),
    ))
}

fn spec() -> AdmitSpec {
    AdmitSpec { workload: Workload::Light, model: None, allow_spill: false, sticky_user: None, estimated_tokens: 1 }
}

fn spawn_worker(role: &str, envs: &[(&str, String)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["multi_process::worker", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("KEY_POOL_WORKER", role)
        .envs(envs.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs in a child process only (see the module docs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker of the multi-process tests, started by them"]
async fn worker() {
    let Ok(role) = std::env::var("KEY_POOL_WORKER") else {
        return;
    };
    let url = std::env::var("WORKER_REDIS_URL").unwrap();
    let prefix = std::env::var("WORKER_PREFIX").unwrap();
    let id = format!("worker-{}", std::process::id());
    let pool = pool(&url, &prefix, &id);
    match role.as_str() {
        "load" => {
            let run_until = Instant::now() + RUN;
            let mut tasks = Vec::new();
            for task in 0..TASKS_PER_PROCESS {
                let pool = pool.clone();
                // A connection per task, as each call to Google has: a shared
                // one would queue arrivals behind each other and blur the
                // sink's timestamps by more than the guard.
                let mut sink = TcpStream::connect(std::env::var("WORKER_SINK").unwrap()).await.unwrap();
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < run_until {
                        match pool.try_admit(&spec()).await.unwrap() {
                            AdmitResult::Granted(grant) => {
                                let sent = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros();
                                let line = format!("{} {sent}\n", grant.key.project);
                                sink.write_all(line.as_bytes()).await.unwrap();
                                pool.report(&grant, &Outcome::Success { prompt_tokens: Some(1) }).await;
                            }
                            AdmitResult::Full { retry_after } => {
                                // Spread the wake-ups a little.
                                let jitter = Duration::from_millis(task % 4);
                                tokio::time::sleep(retry_after + jitter).await;
                            }
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        }
        "admit-once" => {
            let verdict = match pool.try_admit(&spec()).await.unwrap() {
                AdmitResult::Granted(grant) => format!("admitted {}", grant.key.project),
                AdmitResult::Full { .. } => "refused".to_string(),
            };
            println!("VERDICT {verdict}");
        }
        other => panic!("unknown worker role {other}"),
    }
}

fn redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL").ok().filter(|u| !u.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_never_exceed_any_bucket_in_any_window() {
    let Some(url) = redis_url() else {
        println!("skipped: set TEST_REDIS_URL to run the multi-process test (CI does)");
        return;
    };
    let prefix = format!("multi-{}", std::process::id());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap().to_string();
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<(Duration, String)>::new()));
    let accept = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut readers = Vec::new();
            for _ in 0..PROCESSES * TASKS_PER_PROCESS as usize {
                let (stream, _) = listener.accept().await.unwrap();
                let arrivals = arrivals.clone();
                readers.push(tokio::spawn(async move {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let (project, sent) = line.split_once(' ').expect("project and departure time");
                        let sent = Duration::from_micros(sent.parse().expect("microseconds"));
                        arrivals.lock().unwrap().push((sent, project.to_string()));
                    }
                }));
            }
            for reader in readers {
                reader.await.unwrap();
            }
        })
    };
    let envs = [("WORKER_REDIS_URL", url.clone()), ("WORKER_PREFIX", prefix.clone()), ("WORKER_SINK", sink_addr)];
    let mut children = Vec::new();
    for _ in 0..PROCESSES {
        children.push(spawn_worker("load", &envs).spawn().unwrap());
    }
    for child in children {
        let output = child.wait_with_output().await.unwrap();
        assert!(output.status.success(), "worker failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    accept.await.unwrap();

    let arrivals = arrivals.lock().unwrap().clone();
    let mut by_bucket: HashMap<String, Vec<Duration>> = HashMap::new();
    for (at, project) in arrivals {
        by_bucket.entry(project).or_default().push(at);
    }
    for (project, rpm) in BUCKETS {
        let mut times = by_bucket.remove(project).unwrap_or_default();
        times.sort_unstable();
        let peak = (0..times.len())
            .map(|i| times[i..].iter().take_while(|t| **t < times[i] + WINDOW).count())
            .max()
            .unwrap_or(0);
        assert!(peak <= rpm as usize, "{project}: {peak} calls in one {WINDOW:?} window, limit {rpm}");
        // What the limit allows over the span the run covered.
        let span = times.last().unwrap().saturating_sub(times[0]);
        let windows = (span.as_secs_f64() / WINDOW.as_secs_f64()).floor() + 1.0;
        let allowed = f64::from(rpm) * windows;
        let share = times.len() as f64 / allowed;
        println!("{project}: {} admitted of {allowed} allowed ({:.1}%), peak {peak}/{rpm}", times.len(), share * 100.0);
        assert!(share >= 0.9, "{project}: only {:.1}% of the allowed admissions", share * 100.0);
        assert!(span >= WINDOW * 5, "{project}: the run covered {span:?}, under five windows");
    }
}

async fn admit_once(envs: &[(&str, String)]) -> String {
    let output = spawn_worker("admit-once", envs).output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    stdout
        .lines()
        .find_map(|line| line.split_once("VERDICT ").map(|(_, verdict)| verdict.trim().to_string()))
        .unwrap_or_else(|| panic!("no verdict in {stdout}"))
}

#[tokio::test]
async fn a_cooldown_written_here_refuses_the_next_admission_in_another_process() {
    let Some(url) = redis_url() else {
        println!("skipped: set TEST_REDIS_URL to run the multi-process test (CI does)");
        return;
    };
    let prefix = format!("cooldown-{}", std::process::id());
    let envs = [("WORKER_REDIS_URL", url.clone()), ("WORKER_PREFIX", prefix.clone())];
    assert!(admit_once(&envs).await.starts_with("admitted"));
    let here = pool(&url, &prefix, "parent");
    for (project, _) in BUCKETS {
        here.limiter().cool_down("gemini-2.5-flash", project, 60_000, "per-minute 429").await.unwrap();
    }
    assert_eq!(admit_once(&envs).await, "refused");
    here.reset("small", None, "test").await.unwrap();
    assert_eq!(admit_once(&envs).await, "admitted small");
}
