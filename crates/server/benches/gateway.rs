//! `cargo bench -p server --bench gateway`: what the SDK gateway adds to a
//! call, one request in flight: the same request sent straight to
//! gemini-sim and through the server (`/v1beta/` and `/v1/`), interleaved
//! in one run, on loopback, SQLite and the in-memory limiter. Limits are
//! set so nothing is refused: this measures the path, not the waiting.
//!
//! Prints p50 and p99 of each route and what the gateway adds at each.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::{App, ConfigFile, ConfigSources};

const ROUNDS: usize = 3_000;
const WARM_UP: usize = 300;
const SIM_KEY: &str = "AIza-gateway-bench-key";
const MODEL: &str = "gemini-2.5-flash";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[index]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn run() {
    let sim = gemini_sim::SimServer::start(gemini_sim::SimConfig {
        keys: vec![gemini_sim::SimKey {
            key: SIM_KEY.into(),
            id: "bench".into(),
            project: "bench".into(),
            status: gemini_sim::KeyStatus::Valid,
        }],
        default_limits: gemini_sim::SimLimits { rpm: 10_000_000, tpm: u64::MAX / 4, rpd: None },
        ..gemini_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::write(
        &keys_file,
        format!(
            r#"{{"keys": [{{"key_id": "bench", "model_name": "{MODEL}", "provider": "gemini", "project": "bench", "rpm": 10000000, "tpm": 1000000000000}}]}}"#
        ),
    )
    .unwrap();
    let env: Vec<(String, String)> = vec![
        ("BIND_ADDR".into(), "127.0.0.1:0".into()),
        ("DATABASE_URL".into(), format!("sqlite://{}/bench.db", dir.path().display())),
        ("DATA_DIR".into(), dir.path().join("data").display().to_string()),
        ("JWT_SECRET".into(), "a-benchmark-secret-of-thirty-two-bytes-or-more".into()),
        ("KEYS_FILE".into(), keys_file.display().to_string()),
        ("GEMINI_KEY_BENCH".into(), SIM_KEY.into()),
        ("GEMINI_BASE_URL".into(), sim.base_url()),
        ("USER_RPM_DEFAULT".into(), "10000000".into()),
        ("USER_BURST_DEFAULT".into(), "10000000".into()),
        ("USER_TPM_DEFAULT".into(), "2000000000".into()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    let config = server::config::load(&ConfigSources { file: ConfigFile::Skip, env, flags: vec![] }).unwrap();
    let app = App::build(&config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(async move { app.serve(std::future::pending()).await.unwrap() });
    let client = reqwest::Client::builder().pool_max_idle_per_host(4).build().unwrap();
    let token = api_token(&client, &base).await;

    let gemini_body = json!({"contents": [{"role": "user", "parts": [{"text": "measure the gateway"}]}]});
    let openai_body = json!({"model": MODEL, "messages": [{"role": "user", "content": "measure the gateway"}]});
    let direct = format!("{}/v1beta/models/{MODEL}:generateContent", sim.base_url());
    let native = format!("{base}/v1beta/models/{MODEL}:generateContent");
    let openai = format!("{base}/v1/chat/completions");
    let send = |url: &str, key: &str, body: &Value, bearer: bool| {
        let request = client.post(url).json(body);
        let request = if bearer { request.bearer_auth(key) } else { request.header("x-goog-api-key", key) };
        async move {
            let started = Instant::now();
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
            started.elapsed()
        }
    };
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for round in 0..WARM_UP + ROUNDS {
        let taken = [
            send(&direct, SIM_KEY, &gemini_body, false).await,
            send(&native, &token, &gemini_body, false).await,
            send(&openai, &token, &openai_body, true).await,
        ];
        if round >= WARM_UP {
            for (series, sample) in samples.iter_mut().zip(taken) {
                series.push(sample);
            }
        }
    }
    let [mut direct, mut native, mut openai] = samples;
    let (d50, d99) = (quantile(&mut direct, 0.5), quantile(&mut direct, 0.99));
    println!("{ROUNDS} sequential requests per route, interleaved, after {WARM_UP} to warm up\n");
    println!("| route | p50 | p99 | added at p50 | added at p99 |");
    println!("|---|---|---|---|---|");
    println!("| direct to gemini-sim | {} | {} | | |", ms(d50), ms(d99));
    for (name, series) in
        [("gateway `/v1beta/` generateContent", &mut native), ("gateway `/v1/chat/completions`", &mut openai)]
    {
        let (p50, p99) = (quantile(series, 0.5), quantile(series, 0.99));
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(p50),
            ms(p99),
            ms(p50.saturating_sub(d50)),
            ms(p99.saturating_sub(d99))
        );
    }
}

async fn api_token(client: &reqwest::Client, base: &str) -> String {
    let password = "Bench-Gateway-Passphrase-1";
    let registered: Value = client
        .post(format!("{base}/api/auth/register/"))
        .json(&json!({"username": "bench", "email": "b@example.com", "password": password, "password2": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = registered["tokens"]["access"].as_str().unwrap();
    let made: Value = client
        .post(format!("{base}/api/auth/api-tokens/"))
        .bearer_auth(access)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    made["token"].as_str().unwrap().to_string()
}
