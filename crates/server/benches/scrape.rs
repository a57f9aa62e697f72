//! `cargo bench -p server --bench scrape`: what one `/metrics` scrape and
//! one dashboard refresh cost with 8 and with 1,000 keys, against Redis
//! (`BENCH_REDIS_URL`, default the local one).
//!
//! - The scrape reads every key and bucket from the shared state in one
//!   round trip (one EVALSHA per model, pipelined), then encodes.
//! - The refresh is the keys page's poll as JSON (`GET /api/admin/keys/`,
//!   the same `operations::read` the fragment renders): the same snapshot,
//!   plus the hour and day activity counts in one pipelined round trip
//!   (60 minute and 24 hour hashes), run concurrently; every key has been
//!   used, so the counts are full.
//!
//! Prints p50/p99 over 200 requests over HTTP on loopback.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use server::{App, ConfigFile, ConfigSources};

fn keys_json(keys: usize) -> String {
    let entries: Vec<String> = (0..keys)
        .map(|n| {
            format!(
                r#"{{"key_id": "k{n:04}", "model_name": "gemini-2.5-flash", "provider": "gemini", "project": "p{n:04}", "rpm": 60, "tpm": 1000000, "rpd": 1500}}"#
            )
        })
        .collect();
    format!(r#"{{"keys": [{}]}}"#, entries.join(","))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!("| request | keys | p50 | p99 | bytes |");
        println!("|---|---|---|---|---|");
        for keys in [8, 1000] {
            scrape(keys).await;
        }
    });
}

async fn scrape(keys: usize) {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys_json(keys)).unwrap();
    let redis = std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut env: Vec<(String, String)> = vec![
        ("BIND_ADDR".into(), "127.0.0.1:0".into()),
        ("DATABASE_URL".into(), format!("sqlite://{}/bench.db", dir.path().display())),
        ("DATA_DIR".into(), dir.path().join("data").display().to_string()),
        ("JWT_SECRET".into(), "a-benchmark-secret-of-thirty-two-bytes-or-more".into()),
        ("KEYS_FILE".into(), keys_file.display().to_string()),
        ("REDIS_URL".into(), redis),
        ("REDIS_KEY_PREFIX".into(), format!("bench-scrape-{}-{keys}", std::process::id())),
        ("RUST_LOG".into(), "warn".into()),
    ];
    for n in 0..keys {
        env.push((format!("GEMINI_KEY_K{n:04}"), format!("AIza-bench-secret-{n:04}")));
    }
    let config = server::config::load(&ConfigSources { file: ConfigFile::Skip, env, flags: vec![] }).unwrap();
    let app = App::build(&config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let state = app.state().clone();
    for key in &state.pool.config().keys {
        state.pool.activity().key_call(&key.key_id, key_rotation::activity::CallClass::Success);
        state.pool.activity().key_latency(&key.key_id, Duration::from_millis(120));
    }
    tokio::spawn(async move { app.serve(std::future::pending()).await.unwrap() });
    let client = reqwest::Client::new();
    let token = admin_token(&client, &base, &state).await;
    measure(&client, "GET /metrics", keys, &format!("{base}/metrics"), None).await;
    measure(&client, "dashboard refresh", keys, &format!("{base}/api/admin/keys/"), Some(&token)).await;
}

async fn admin_token(client: &reqwest::Client, base: &str, state: &api_core::AppState) -> String {
    let password = "bench-Admin-passphrase-2026";
    auth_conversation::accounts::ensure_admin(&state.store, "bench-admin", password).await.unwrap();
    let login: serde_json::Value = client
        .post(format!("{base}/api/auth/login/"))
        .json(&serde_json::json!({ "username": "bench-admin", "password": password }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["tokens"]["access"].as_str().unwrap().to_string()
}

async fn measure(client: &reqwest::Client, what: &str, keys: usize, url: &str, token: Option<&str>) {
    let mut samples = Vec::new();
    let mut bytes = 0;
    for i in 0..220 {
        let start = Instant::now();
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{what}: {}", response.status());
        let body = response.text().await.unwrap();
        if i >= 20 {
            samples.push(start.elapsed());
        }
        bytes = body.len();
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| {what} | {keys} | {:.2} ms | {:.2} ms | {bytes} |", ms(at(0.5)), ms(at(0.99)));
}
