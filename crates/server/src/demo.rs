//! `algoagent serve --demo`: the old deployment's 8-key pool (flash_01–03 at
//! 15 RPM, pro_01–05 at 60 RPM) plus one invalid and one leaked key, served
//! by an in-process gemini-sim, so rotation and disabling show at once.

use std::collections::BTreeMap;

use gemini_sim::{KeyStatus, SimConfig, SimKey, SimLimits, SimServer};
use key_rotation::config::{BucketLimits, KeySpec, PoolConfig, Strategy, Workload};
use key_rotation::secrets::ApiKeySecret;

struct DemoKey {
    id: &'static str,
    model: &'static str,
    rpm: u32,
    tpm: u64,
    rpd: u32,
    priority: i64,
    status: KeyStatus,
}

const fn key(id: &'static str, model: &'static str, rpm: u32, priority: i64, status: KeyStatus) -> DemoKey {
    let (tpm, rpd) = if rpm > 15 { (2_000_000, 1_000) } else { (1_000_000, 1_500) };
    DemoKey { id, model, rpm, tpm, rpd, priority, status }
}

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";

const KEYS: [DemoKey; 10] = [
    // The bad keys come first so the very first calls show failover.
    key("flash_invalid", FLASH, 15, 0, KeyStatus::Invalid),
    key("flash_01", FLASH, 15, 1, KeyStatus::Valid),
    key("flash_02", FLASH, 15, 2, KeyStatus::Valid),
    key("flash_03", FLASH, 15, 3, KeyStatus::Valid),
    key("pro_leaked", PRO, 60, 0, KeyStatus::Leaked),
    key("pro_01", PRO, 60, 1, KeyStatus::Valid),
    key("pro_02", PRO, 60, 2, KeyStatus::Valid),
    key("pro_03", PRO, 60, 3, KeyStatus::Valid),
    key("pro_04", PRO, 60, 4, KeyStatus::Valid),
    key("pro_05", PRO, 60, 5, KeyStatus::Valid),
];

/// Each ends in its own id, so the masked last four tell keys apart.
fn secret(id: &str) -> String {
    format!("demo-not-a-real-key-{id}")
}

/// Every demo key's secret: what the pages and logs must never show.
pub fn secrets() -> Vec<String> {
    KEYS.iter().map(|demo| secret(demo.id)).collect()
}

/// The demo's admin account.
pub const ADMIN_USERNAME: &str = "demo-admin";

/// Creates (or resets) the demo admin with a fresh random password and
/// prints it once, as a banner on the terminal: it is a demo credential,
/// and a log record would keep it.
#[allow(clippy::print_stdout, reason = "the demo's credential is for the person at the terminal")]
pub async fn create_admin(store: &store::Store, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let password = format!("demo-{}", uuid::Uuid::new_v4().simple());
    auth_conversation::accounts::ensure_admin(store, ADMIN_USERNAME, &password).await?;
    let rule = "=".repeat(72);
    println!("{rule}\n  AlgoAgent demo: the key-pool dashboard is at http://{addr}/admin\n  username: {ADMIN_USERNAME}\n  password: {password}   (new at every start)\n{rule}");
    Ok(())
}

/// Light synthetic traffic, so the dashboard moves at once: a chat-sized
/// call every few seconds from a handful of demo users, now and then a
/// heavy one. Runs until the server stops.
pub async fn drive_traffic(gemini: std::sync::Arc<gemini_client::Executor>) {
    use rand::Rng as _;
    let prompts = ["What is an EMA?", "Explain RSI divergence.", "Backtest idea: SMA crossover", "Why use ATR stops?"];
    loop {
        let (pause, user, prompt, heavy) = {
            let mut rng = rand::rng();
            (
                std::time::Duration::from_millis(rng.random_range(1_500..4_000)),
                rng.random_range(1..=4),
                prompts[rng.random_range(0..prompts.len())],
                rng.random_bool(0.2),
            )
        };
        tokio::time::sleep(pause).await;
        let workload = if heavy { Workload::Heavy } else { Workload::Light };
        let body = serde_json::json!({ "contents": [{ "role": "user", "parts": [{ "text": prompt }] }] });
        let spec = gemini_client::CallSpec::for_user(format!("demo-user-{user}"), workload, body);
        if let Err(err) = gemini.generate(&spec).await {
            tracing::debug!(error = %err, "demo traffic: a call failed");
        }
    }
}

/// Starts the simulator and returns it with the matching pool.
pub async fn start() -> anyhow::Result<(SimServer, PoolConfig)> {
    let mut limits = BTreeMap::new();
    let mut sim_keys = Vec::new();
    let mut pool_keys = Vec::new();
    for demo in &KEYS {
        let project = format!("demo-{}", demo.id);
        limits.insert(
            format!("{project}/{}", demo.model),
            SimLimits { rpm: demo.rpm, tpm: demo.tpm, rpd: Some(demo.rpd) },
        );
        sim_keys.push(SimKey {
            key: secret(demo.id),
            id: demo.id.into(),
            project: project.clone(),
            status: demo.status,
        });
        pool_keys.push(KeySpec {
            key_id: demo.id.into(),
            model: demo.model.into(),
            provider: "gemini".into(),
            project,
            limits: BucketLimits { rpm: demo.rpm, tpm: demo.tpm, rpd: Some(demo.rpd), burst: demo.rpm },
            max_in_flight: None,
            priority: demo.priority,
            workload: Workload::for_model(demo.model),
            active: true,
            tags: vec!["demo".into()],
            secret: ApiKeySecret::new(secret(demo.id)),
        });
    }
    let sim =
        SimServer::start(SimConfig { keys: sim_keys, limits, latency_ms: (40, 250), ..SimConfig::default() }).await?;
    let pool = PoolConfig { keys: pool_keys, strategy: Strategy::Priority, ..PoolConfig::empty() };
    Ok((sim, pool))
}
