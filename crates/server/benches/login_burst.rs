//! `cargo bench -p server --bench login_burst`: 500 logins at once against
//! the real server (SQLite in a temp directory, in this process), and how
//! much the process grows. Each login is an argon2id verification (19 MiB,
//! tens of ms); unbounded, 500 at once would hold gigabytes. The hashing
//! gate (2 × cores permits, 1 s wait, then 503 with `Retry-After: 1`)
//! bounds it.
//!
//! Prints the statuses, the peak resident memory over the burst (Linux's
//! `VmHWM`, reset before it through `/proc/self/clear_refs`) and the time.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use server::{App, ConfigFile, ConfigSources};

const BURST: usize = 500;
const PASSWORD: &str = "quartz-Lantern-88-river";

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(burst());
}

async fn burst() {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("BIND_ADDR", "127.0.0.1:0".to_string()),
        ("DATABASE_URL", format!("sqlite://{}/bench.db", dir.path().display())),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        ("JWT_SECRET", "a-benchmark-secret-of-thirty-two-bytes-or-more".to_string()),
        ("TRUSTED_PROXIES", "127.0.0.1".to_string()),
        ("KEYS_FILE", "/nonexistent/keys.json".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = server::config::load(&ConfigSources { file: ConfigFile::Skip, env, flags: vec![] }).unwrap();
    let app = App::build(&config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(async move { app.serve(std::future::pending()).await.unwrap() });
    let client = reqwest::Client::builder().pool_max_idle_per_host(BURST).build().unwrap();
    let registered = client
        .post(format!("{base}/api/auth/register/"))
        .json(&json!({"username": "burst", "email": "b@example.com", "password": PASSWORD, "password2": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    // The same burst against an endpoint that hashes nothing: what 500
    // concurrent requests cost by themselves, client side included.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let control_before = status_kib("VmRSS:");
    let pings = (0..BURST).map(|_| {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { client.get(format!("{base}/api/auth/health/")).send().await.is_ok() })
    });
    for ping in pings.collect::<Vec<_>>() {
        assert!(ping.await.unwrap());
    }
    let control_peak = status_kib("VmHWM:");
    println!(
        "control: {BURST} concurrent requests that hash nothing: grew {:.1} MiB",
        control_peak.saturating_sub(control_before) as f64 / 1024.0
    );

    // 500 usernames from 500 addresses: no throttle bucket fills, so every
    // login wants a hash (unknown names are checked against a decoy hash
    // of the same cost). One user's 500 logins would mostly get 429: the
    // per-username bucket is reserved before the password is checked.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let logins = (0..BURST).map(|n| {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/api/auth/login/"))
                .header("x-forwarded-for", format!("198.51.{}.{}", n / 250, n % 250))
                .json(&json!({"username": format!("burst{n}"), "password": PASSWORD}))
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map(|response| response.status().as_u16())
                .unwrap_or(0)
        })
    });
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for login in logins.collect::<Vec<_>>() {
        *statuses.entry(login.await.unwrap()).or_default() += 1;
    }
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM:");
    println!("login burst: {BURST} concurrent logins in {:.2} s", elapsed.as_secs_f64());
    println!("  statuses: {statuses:?} (401 checked, 503 = no hashing permit within 1 s, with Retry-After: 1)");
    println!(
        "  resident memory: {:.1} MiB before, {:.1} MiB peak during the burst: grew {:.1} MiB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
}
