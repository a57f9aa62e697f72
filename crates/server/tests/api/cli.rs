use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::helpers::{base_env, expect_status, redis_url, spawn_app, TestDatabase};

const BINARY: &str = env!("CARGO_BIN_EXE_algoagent");

/// The environment of a command that never reaches its database: a SQLite
/// path in the test's own directory, so nothing is left in the crate.
fn command_env(dir: &tempfile::TempDir) -> Vec<(String, String)> {
    base_env(dir, &format!("sqlite://{}/unused.db", dir.path().display()), "a-jwt-secret-that-is-long-enough-for-hs256")
}

pub(crate) fn algoagent(env: &[(String, String)]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `algoagent keys status` with `env`.
pub(crate) async fn keys_status(env: &[(String, String)]) -> std::process::Output {
    let mut command = algoagent(env);
    command.args(["keys", "status"]);
    run_with_stdin(command, "").await
}

pub(crate) async fn run_with_stdin(mut command: Command, stdin: &str) -> std::process::Output {
    let mut child = command.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.as_bytes()).await.unwrap();
    drop(pipe);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finishes")
        .unwrap()
}

#[tokio::test]
async fn create_admin_creates_then_promotes_and_refuses_weak_passwords() {
    let app = spawn_app().await;
    let env = base_env(&app.data_dir, &app.database_url, &app.jwt_secret);

    let mut command = algoagent(&env);
    command.args(["create-admin", "--username", "root-admin"]);
    let output = run_with_stdin(command, "Admin-Passphrase-2026\n").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    expect_status(
        app.post("/api/auth/login/", None, &json!({"username": "root-admin", "password": "Admin-Passphrase-2026"}))
            .await,
        StatusCode::OK,
    )
    .await;

    let existing = app.register("promote-me").await;
    let mut command = algoagent(&env);
    command.args(["create-admin", "--username", "promote-me"]);
    let output = run_with_stdin(command, "New-Admin-Passphrase-7\n").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    assert!(store.user_by_username("root-admin").await.unwrap().unwrap().is_admin());
    assert!(store.user_by_username("promote-me").await.unwrap().unwrap().is_admin());
    // Promotion set the new password and ended the old sessions.
    expect_status(
        app.post("/api/auth/token/refresh/", None, &json!({"refresh": existing.refresh})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    let mut command = algoagent(&env);
    command.args(["create-admin", "--username", "weakling"]);
    let output = run_with_stdin(command, "12345678\n").await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("too common") || stderr.contains("entirely numeric"), "{stderr}");
    assert!(store.user_by_username("weakling").await.unwrap().is_none());
    store.close().await;
}

#[tokio::test]
async fn migrate_prepares_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let env = base_env(&dir, &database.url, "a-jwt-secret-that-is-long-enough-for-hs256");
    let mut command = algoagent(&env);
    command.arg("migrate");
    let output = run_with_stdin(command, "").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let store = store::Store::connect(&database.url, &store::ConnectOptions::default()).await.unwrap();
    assert!(store.user_by_username("anyone").await.unwrap().is_none(), "the users table exists");
    store.close().await;
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = command_env(&dir);
    env.push(("USER_RPM_DEFAULT".into(), "lots".into()));
    let output = run_with_stdin(algoagent(&env), "").await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("USER_RPM_DEFAULT") && stderr.contains("lots"), "{stderr}");

    let output = run_with_stdin(
        {
            let mut command =
                algoagent(&base_env(&dir, &format!("sqlite://{}/unused.db", dir.path().display()), "too-short"));
            command.arg("serve");
            command
        },
        "",
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET") && !stderr.contains("too-short"), "{stderr}");
}

/// `algoagent serve` with `env`, which must fail to start: its stderr.
pub(crate) async fn failed_start(env: &[(String, String)]) -> String {
    let mut command = algoagent(env);
    command.args(["serve", "--bind", "127.0.0.1:0"]);
    let output = tokio::time::timeout(Duration::from_secs(30), run_with_stdin(command, "")).await.unwrap();
    assert!(!output.status.success(), "the server started");
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// An `algoagent serve` process on a free port. Its log is read as it is
/// written: a pipe nobody drains fills up (64 KiB) and blocks the server
/// mid-request, which trace-level tests reach within seconds.
pub(crate) struct ServerProcess {
    child: tokio::process::Child,
    logs: tokio::task::JoinHandle<Vec<u8>>,
    pub(crate) base: String,
}

impl ServerProcess {
    pub(crate) async fn start(mut env: Vec<(String, String)>) -> ServerProcess {
        use tokio::io::AsyncReadExt;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        env.retain(|(key, _)| key != "BIND_ADDR");
        let mut command = algoagent(&env);
        command.args(["serve", "--bind", &format!("127.0.0.1:{port}")]);
        let mut child = command.spawn().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let logs = tokio::spawn(async move {
            let mut captured = Vec::new();
            let _ = stderr.read_to_end(&mut captured).await;
            captured
        });
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
                if response.status() == StatusCode::OK {
                    return ServerProcess { child, logs, base };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Sends SIGTERM and waits for the exit, returning the status and stderr.
    pub(crate) async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server exits after SIGTERM")
            .unwrap();
        let logs = self.logs.await.unwrap();
        (status, String::from_utf8_lossy(&logs).into_owned())
    }
}

#[tokio::test]
async fn serve_answers_then_shuts_down_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let env = base_env(&dir, &database.url, "a-jwt-secret-that-is-long-enough-for-hs256");
    let server = ServerProcess::start(env).await;
    let (status, stderr) = server.terminate().await;
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("shut down"), "{stderr}");
}

/// Runs the real binary with every log level on, drives each credential-
/// bearing flow, and searches everything it logged for each secret involved.
#[tokio::test]
async fn passwords_tokens_and_secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let jwt_secret = format!("jwt-secret-{}", uuid::Uuid::new_v4().simple());
    let mut env = base_env(&dir, &database.url, &jwt_secret);
    env.push(("RUST_LOG".into(), "trace".into()));
    env.push(("LOG_FORMAT".into(), "json".into()));
    let server = ServerProcess::start(env).await;
    let client = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut request = client.post(format!("{}{path}", server.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let password = "Tangerine-Sextant-4417";
    let registered = post(
        "/api/auth/register/",
        None,
        json!({"username": "secretive", "email": "s@example.com", "password": password, "password2": password}),
    )
    .await
    .unwrap();
    let registered = expect_status(registered, StatusCode::CREATED).await;
    let access = registered["tokens"]["access"].as_str().unwrap().to_string();
    let refresh = registered["tokens"]["refresh"].as_str().unwrap().to_string();
    let wrong = "Wr0ng-but-secret-guess";
    let response = post("/api/auth/login/", None, json!({"username": "secretive", "password": wrong})).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let rotated = post("/api/auth/token/refresh/", None, json!({"refresh": refresh})).await.unwrap();
    let rotated = expect_status(rotated, StatusCode::OK).await;
    // A WebSocket carries its token in the query string: the request logs name the route only.
    let ws = format!("{}/ws/backtest/stream/?token={access}", server.base.replacen("http://", "ws://", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    {
        use futures::{SinkExt, StreamExt};
        socket.send(tokio_tungstenite::tungstenite::Message::Text("{\"action\": \"dance\"}".into())).await.unwrap();
        let answer = socket.next().await.unwrap().unwrap();
        assert!(answer.to_text().unwrap().contains("Unknown action: dance"), "{answer}");
        socket.close(None).await.unwrap();
    }
    let new_password = "Another-secret-Passphrase-9";
    let changed = post(
        "/api/auth/change-password/",
        Some(&access),
        json!({"current_password": password, "new_password": new_password}),
    )
    .await
    .unwrap();
    expect_status(changed, StatusCode::OK).await;
    // A replay logs a warning; it must not quote the token.
    post("/api/auth/token/refresh/", None, json!({"refresh": refresh})).await.unwrap();
    // The password change ended the session; the refusal must not quote the token either.
    let me = client.get(format!("{}/api/auth/user/me/", server.base)).bearer_auth(&access).send().await.unwrap();
    expect_status(me, StatusCode::UNAUTHORIZED).await;

    let (status, logs) = server.terminate().await;
    assert!(status.success());
    // The capture really holds the request logs, as JSON lines with the route.
    assert!(logs.contains("\"route\":\"/api/auth/login\""), "{logs}");
    assert!(logs.contains("failed login"), "{logs}");
    assert!(logs.contains("\"route\":\"/ws/backtest/stream\""), "{logs}");
    let secrets = [
        password,
        wrong,
        new_password,
        access.as_str(),
        refresh.as_str(),
        rotated["access"].as_str().unwrap(),
        rotated["refresh"].as_str().unwrap(),
        jwt_secret.as_str(),
    ];
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

fn keys_json(keys: &[(&str, u32)]) -> String {
    let entries: Vec<String> = keys
        .iter()
        .map(|(id, rpm)| {
            format!(r#"{{"key_id": "{id}", "model_name": "gemini-2.5-flash", "provider": "gemini", "rpm": {rpm}, "tpm": 100000}}"#)
        })
        .collect();
    format!(r#"{{"keys": [{}]}}"#, entries.join(","))
}

fn with_keys(env: &mut Vec<(String, String)>, keys_file: &std::path::Path, ids: &[&str]) {
    env.push(("KEYS_FILE".into(), keys_file.display().to_string()));
    for id in ids {
        env.push((format!("GEMINI_KEY_{}", id.to_uppercase()), format!("AIzaSy-private-{id}-WXYZ")));
    }
}

#[tokio::test]
async fn a_bad_keys_file_stops_start_up_naming_the_key_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys_json(&[("flash_01", 0)])).unwrap();
    let mut env = command_env(&dir);
    with_keys(&mut env, &keys_file, &["flash_01"]);
    let output = run_with_stdin(algoagent(&env), "").await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KEYS_FILE") && stderr.contains("key flash_01 field rpm"), "{stderr}");
}

/// The review's reproduction: the old `.env` names its keys
/// `GEMINI_KEY_flash_01` … `GEMINI_KEY_pro_05`, exactly as its keys.json
/// does; each was skipped and the pool started empty.
#[tokio::test]
async fn the_old_deployments_lower_case_key_variables_fill_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../../keys.example.json"), &keys_file).unwrap();
    let mut env = command_env(&dir);
    env.push(("KEYS_FILE".into(), keys_file.display().to_string()));
    let ids = ["flash_01", "flash_02", "flash_03", "pro_01", "pro_02", "pro_03", "pro_04", "pro_05"];
    for (n, id) in ids.iter().enumerate() {
        env.push((format!("GEMINI_KEY_{id}"), format!("AIzaSy-private-{id}-WXY{n}")));
    }
    let mut command = algoagent(&env);
    command.args(["keys", "status"]);
    let output = run_with_stdin(command, "").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for (n, id) in ids.iter().enumerate() {
        assert!(stdout.contains(&format!("{id} …WXY{n}")), "{id} missing from:\n{stdout}\n{stderr}");
    }
    assert!(!stderr.contains("no secret found"), "{stderr}");
}

#[tokio::test]
async fn two_spellings_of_one_key_with_different_secrets_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys_json(&[("flash_01", 15)])).unwrap();
    let mut env = command_env(&dir);
    env.push(("KEYS_FILE".into(), keys_file.display().to_string()));
    env.push(("GEMINI_KEY_flash_01".into(), "AIzaSy-private-one-AAAA".into()));
    env.push(("GEMINI_KEY_FLASH_01".into(), "AIzaSy-private-two-BBBB".into()));
    let output = run_with_stdin(algoagent(&env), "").await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GEMINI_KEY_flash_01") && stderr.contains("GEMINI_KEY_FLASH_01"), "{stderr}");
    assert!(!stderr.contains("AIzaSy-private"), "a secret was printed: {stderr}");
}

#[tokio::test]
async fn keys_without_secrets_are_named_with_the_variables_tried_and_an_empty_pool_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys_json(&[("flash_01", 15), ("pro-02", 15)])).unwrap();
    let mut env = command_env(&dir);
    env.push(("KEYS_FILE".into(), keys_file.display().to_string()));
    let mut command = algoagent(&env);
    command.args(["keys", "status"]);
    let output = run_with_stdin(command, "").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GEMINI_KEY_PRO_02") && stderr.contains("API_KEY_PRO_02"), "{stderr}");
    let empty_lines = stderr.lines().filter(|line| line.contains("pool is EMPTY")).count();
    assert_eq!(empty_lines, 1, "{stderr}");
}

#[tokio::test]
async fn keys_status_shows_masked_keys_and_their_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../../keys.example.json"), &keys_file).unwrap();
    let mut env = command_env(&dir);
    let ids = ["flash_01", "flash_02", "flash_03", "pro_01", "pro_02", "pro_03", "pro_04", "pro_05"];
    with_keys(&mut env, &keys_file, &ids);
    let mut command = algoagent(&env);
    command.args(["keys", "status"]);
    let output = run_with_stdin(command, "").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for id in ids {
        assert!(stdout.contains(&format!("{id} …WXYZ")), "{id} missing from:\n{stdout}");
    }
    assert!(stdout.contains("algoagent-pro-05") && stdout.contains("0/60"), "{stdout}");
    assert!(!stdout.contains("AIzaSy-private"), "a secret was printed:\n{stdout}");
}

#[tokio::test]
async fn keys_reload_makes_the_running_server_reread_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys_json(&[("flash_01", 15)])).unwrap();
    let mut env = base_env(&dir, &database.url, "a-jwt-secret-that-is-long-enough-for-hs256");
    with_keys(&mut env, &keys_file, &["flash_01", "flash_02"]);
    let server = ServerProcess::start(env.clone()).await;

    // A broken file is refused by the command and the server is not asked.
    std::fs::write(&keys_file, keys_json(&[("flash_01", 15), ("flash_01", 15)])).unwrap();
    let mut command = algoagent(&env);
    command.args(["keys", "reload"]);
    let output = run_with_stdin(command, "").await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("duplicate id"));

    std::fs::write(&keys_file, keys_json(&[("flash_01", 15), ("flash_02", 15)])).unwrap();
    // As in the runtime image: no `kill` (or anything else) on the PATH.
    let empty = tempfile::tempdir().unwrap();
    let mut bare = env.clone();
    bare.push(("PATH".into(), empty.path().display().to_string()));
    let mut command = algoagent(&bare);
    command.args(["keys", "reload"]);
    let output = run_with_stdin(command, "").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("2 key(s)"), "{stdout}");
    let expected = if redis_url().is_some() { "asked 1 replica(s) to reload" } else { "asked the server (pid" };
    assert!(stdout.contains(expected), "{stdout}");

    // The reload is asynchronous: wait for the server to log it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, logs) = server.terminate().await;
    assert!(status.success(), "{logs}");
    assert!(logs.contains("key pool reloaded"), "{logs}");
    let loads: Vec<&str> = logs.lines().filter(|line| line.contains("key pool loaded")).collect();
    assert_eq!(loads.len(), 2, "{logs}");
    assert!(loads[0].contains("keys=1") && loads[1].contains("keys=2"), "{loads:?}");
    assert!(!logs.contains("AIzaSy-private"));
}

/// With Redis, one reload reaches every replica, wherever it is run.
#[tokio::test]
async fn keys_reload_reaches_every_replica_through_redis() {
    if redis_url().is_none() {
        eprintln!("skipped: replicas hear a reload through Redis (set TEST_REDIS_URL)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys_json(&[("flash_01", 15)])).unwrap();
    let mut env = base_env(&dir, &database.url, "a-jwt-secret-that-is-long-enough-for-hs256");
    with_keys(&mut env, &keys_file, &["flash_01", "flash_02"]);
    let first = ServerProcess::start(env.clone()).await;
    let mut second_env = env.clone();
    second_env.retain(|(name, _)| name != "DATA_DIR");
    second_env.push(("DATA_DIR".into(), dir.path().join("second").display().to_string()));
    let second = ServerProcess::start(second_env).await;
    // Each follows the channel once it is up; give the subscriptions a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(&keys_file, keys_json(&[("flash_01", 15), ("flash_02", 15)])).unwrap();
    let mut command = algoagent(&env);
    command.args(["keys", "reload"]);
    let output = run_with_stdin(command, "").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("asked 2 replica(s) to reload"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for server in [first, second] {
        let (status, logs) = server.terminate().await;
        assert!(status.success(), "{logs}");
        assert!(logs.contains("key pool reloaded"), "{logs}");
    }
}

#[tokio::test]
async fn keys_reset_needs_the_shared_state_and_lifts_a_projects_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys_json(&[("flash_01", 15)])).unwrap();
    let mut env = command_env(&dir);
    with_keys(&mut env, &keys_file, &["flash_01"]);
    let mut command = algoagent(&env);
    command.args(["keys", "reset", "flash_01"]);
    let output = run_with_stdin(command, "").await;
    if crate::helpers::redis_url().is_some() {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(String::from_utf8_lossy(&output.stdout).contains("reset 1 key(s) of project flash_01"));
        let mut command = algoagent(&env);
        command.args(["keys", "reset", "no-such-project"]);
        assert!(!run_with_stdin(command, "").await.status.success());
    } else {
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("REDIS_URL"));
    }
}

/// `serve --demo` prints its admin's fresh password once, in a banner on
/// standard output, never in a log record; the password logs in.
#[tokio::test]
async fn serve_demo_prints_a_fresh_admin_password_that_logs_in() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&dir).await;
    let env = base_env(&dir, &database.url, "a-jwt-secret-that-is-long-enough-for-hs256");
    let mut command = algoagent(&env);
    command.args(["serve", "--demo", "--bind", "127.0.0.1:0"]);
    let mut child = command.spawn().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut address, mut password) = (None, None);
    let read = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if let Some(url) = line.trim().strip_prefix("AlgoAgent demo: the key-pool dashboard is at ") {
                address = Some(url.trim_end_matches("/admin").to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("password: ") {
                password = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("the banner within 30 s");
    let (address, password) = (address.expect("the address"), password.expect("the password"));
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{address}/api/auth/login/"))
        .json(&json!({"username": "demo-admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(!logs.contains(&password), "the demo password reached the logs");
}

/// Issue 13: the old deployment's `.env` (env.example filled in with the old
/// 8-key pool) and its keys.json files work as they are, read from the
/// working directory; every key shows in `keys status`.
#[tokio::test]
async fn the_old_env_and_keys_files_give_a_working_pool() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/legacy-config");
    let example = std::fs::read_to_string(format!("{fixtures}/env.example")).unwrap();
    let filled = example
        .replace(
            "SECRET_KEY=your-django-secret-key-here",
            "SECRET_KEY=k3y-of-the-old-django-app-with-fifty-characters-x",
        )
        .replace("SECRET_STORE_TYPE=env", "SECRET_STORE_TYPE=env  # Options: env, vault, aws, azure")
        + "GEMINI_KEY_pro_03=AIzaSyPQR678_third_pro\nGEMINI_KEY_pro_04=AIzaSySTU901_fourth_pro\n\
           GEMINI_KEY_pro_05=AIzaSyVWX234_fifth_pro\n";
    for (keys_file, ids) in [
        (
            "keys.report.json",
            &["flash_01", "flash_02", "flash_03", "pro_01", "pro_02", "pro_03", "pro_04", "pro_05"][..],
        ),
        ("keys_example.json", &["flash_01", "flash_02", "pro_01"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), &filled).unwrap();
        std::fs::copy(format!("{fixtures}/{keys_file}"), dir.path().join("keys.json")).unwrap();
        // The environment wins over the file: no Redis for this command.
        let mut command = algoagent(&[("REDIS_URL".into(), String::new())]);
        command.current_dir(dir.path()).args(["keys", "status"]);
        let output = run_with_stdin(command, "").await;
        assert!(output.status.success(), "{keys_file}: {}", String::from_utf8_lossy(&output.stderr));
        let table = String::from_utf8_lossy(&output.stdout);
        for id in ids {
            assert!(table.lines().any(|line| line.starts_with(&format!("{id} "))), "{keys_file}: no {id} in\n{table}");
        }
        assert!(!table.contains("AIzaSy"), "a secret in the status table");
        // LOG_FILE is honoured: the notices are in the old app's log file.
        let log = std::fs::read_to_string(dir.path().join("logs/algoagent.log")).unwrap();
        assert!(log.contains("ENABLE_KEY_ROTATION=false is accepted"), "{log}");
        for ignored in ["DEBUG is ignored", "ALLOWED_HOSTS is ignored", "ENABLE_LIVE_TRADING is ignored"] {
            assert!(log.contains(ignored), "{ignored} not in {log}");
        }
        if keys_file == "keys.report.json" {
            assert!(log.contains("retired") && log.contains("flash_01"), "{log}");
        } else {
            assert!(log.contains("created_at"), "{log}");
        }
        assert!(!log.contains("AIzaSy"), "a secret in the log");
    }
}

#[tokio::test]
async fn an_explicit_env_file_must_exist_and_a_bad_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = algoagent(&command_env(&dir));
    command.args(["--env-file", "/nonexistent/.env", "keys", "status"]);
    let output = run_with_stdin(command, "").await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/.env"));

    let bad = dir.path().join("bad.env");
    std::fs::write(&bad, "USER_RPM_DEFAULT=10 20\n").unwrap();
    let mut command = algoagent(&command_env(&dir));
    command.arg("--env-file").arg(&bad).args(["keys", "status"]);
    let output = run_with_stdin(command, "").await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.env"), "{}", String::from_utf8_lossy(&output.stderr));
}
