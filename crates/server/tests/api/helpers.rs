use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use server::{App, ConfigFile, ConfigSources};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A server running for one test, with its own database and data directory.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub jwt_secret: String,
    pub database_url: String,
    pub data_dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _database: TestDatabase,
}

/// Whether this run must reach real services: CI never skips them.
fn required(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// A database that exists for one test: a SQLite file in the test's temp
/// directory, or a freshly created Postgres database dropped afterwards.
pub struct TestDatabase {
    pub url: String,
    postgres_admin: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(dir: &TempDir) -> TestDatabase {
        match required("TEST_DATABASE_URL") {
            None => TestDatabase { url: format!("sqlite://{}/test.db", dir.path().display()), postgres_admin: None },
            Some(admin_url) => {
                let name = format!("algoagent_test_{}", uuid::Uuid::new_v4().simple());
                let admin = store::Store::connect(&admin_url, &store::ConnectOptions::default())
                    .await
                    .unwrap_or_else(|err| panic!("TEST_DATABASE_URL is set but Postgres is unreachable: {err}"));
                let store::DbPool::Postgres(pool) = admin.pool() else {
                    panic!("TEST_DATABASE_URL must be a postgres:// URL")
                };
                sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(pool).await.unwrap();
                admin.close().await;
                TestDatabase { url: replace_database(&admin_url, &name), postgres_admin: Some((admin_url, name)) }
            }
        }
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (host_part, _) = base.rsplit_once('/').expect("database URL has a path");
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres_admin.take() else {
            return;
        };
        // Drop runs outside async context: use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                if let Ok(admin) = store::Store::connect(&admin_url, &store::ConnectOptions::default()).await {
                    if let store::DbPool::Postgres(pool) = admin.pool() {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(pool)
                            .await;
                    }
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

pub fn redis_url() -> Option<String> {
    required("TEST_REDIS_URL")
}

/// The environment every test server starts from; `extra` overrides it.
pub fn base_env(dir: &TempDir, database_url: &str, jwt_secret: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("BIND_ADDR".to_string(), "127.0.0.1:0".to_string()),
        ("DATABASE_URL".to_string(), database_url.to_string()),
        ("DATA_DIR".to_string(), dir.path().join("data").display().to_string()),
        ("JWT_SECRET".to_string(), jwt_secret.to_string()),
        ("DB_MAX_CONNECTIONS".to_string(), "5".to_string()),
        // Tests vary X-Forwarded-For to act as many clients.
        ("TRUSTED_PROXIES".to_string(), "127.0.0.1".to_string()),
        ("REDIS_KEY_PREFIX".to_string(), format!("test-{}", uuid::Uuid::new_v4().simple())),
    ];
    if let Some(redis) = redis_url() {
        env.push(("REDIS_URL".to_string(), redis));
    }
    env
}

pub const SIM_KEY: &str = "sim-test-key-0001";

/// A gemini-sim for a test server: one valid key in its own project.
pub async fn start_sim() -> gemini_sim::SimServer {
    start_sim_answering_after(0).await
}

/// As [`start_sim`], answering every call after `latency_ms`.
pub async fn start_sim_answering_after(latency_ms: u64) -> gemini_sim::SimServer {
    gemini_sim::SimServer::start(gemini_sim::SimConfig {
        latency_ms: (latency_ms, latency_ms),
        keys: vec![gemini_sim::SimKey {
            key: SIM_KEY.into(),
            id: "default".into(),
            project: "test-project".into(),
            status: gemini_sim::KeyStatus::Valid,
        }],
        ..gemini_sim::SimConfig::default()
    })
    .await
    .unwrap()
}

/// A server whose key pool is the simulator's one key (found in the
/// environment, with the documented default limits).
pub async fn spawn_app_with_sim(sim: &gemini_sim::SimServer) -> TestApp {
    spawn_app_with_sim_and(sim, &[]).await
}

/// As [`spawn_app_with_sim`], with more settings.
pub async fn spawn_app_with_sim_and(sim: &gemini_sim::SimServer, extra: &[(&str, &str)]) -> TestApp {
    let base = sim.base_url();
    let mut env =
        vec![("GEMINI_BASE_URL", base.as_str()), ("GEMINI_API_KEY", SIM_KEY), ("KEYS_FILE", "/nonexistent/keys.json")];
    env.extend_from_slice(extra);
    spawn_app_with(&env).await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn(extra, false).await.0
}

/// `serve --demo` without its traffic: the built-in pool behind an
/// in-process gemini-sim, whose base URL (for its control API) comes back
/// with the app.
pub async fn spawn_demo_app() -> (TestApp, String) {
    let (app, sim) = spawn(&[], true).await;
    (app, sim.expect("demo mode runs a simulator"))
}

async fn spawn(extra: &[(&str, &str)], demo: bool) -> (TestApp, Option<String>) {
    let data_dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&data_dir).await;
    let jwt_secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
    let mut env = base_env(&data_dir, &database.url, &jwt_secret);
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push(((*key).to_string(), (*value).to_string()));
    }
    let config = server::config::load(&ConfigSources { file: ConfigFile::Skip, env, flags: vec![] })
        .expect("test configuration is valid");
    let app = App::build_with(&config, demo).await.expect("app builds");
    let sim_url = app.demo_sim_url();
    let addr = app.local_addr().unwrap();
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.serve(async {
            let _ = shutdown_rx.await;
        })
        .await
        .unwrap();
    });
    let app = TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        jwt_secret,
        database_url: database.url.clone(),
        data_dir,
        shutdown: Some(shutdown),
        server: Some(server),
        _database: database,
    };
    (app, sim_url)
}

impl TestApp {
    /// Shuts the server down as SIGTERM would, and waits until it is done.
    pub async fn shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

/// Reads a `text/event-stream` response one event at a time.
pub struct EventReader {
    response: Response,
    buffer: String,
}

/// One server-sent event: its name and its JSON data.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    pub name: String,
    pub data: Value,
}

impl EventReader {
    pub fn new(response: Response) -> EventReader {
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        EventReader { response, buffer: String::new() }
    }

    /// The next event, skipping keep-alive comments; `None` at the end.
    pub async fn next(&mut self) -> Option<ServerEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or_else(|_| panic!("event data is not JSON: {data}"));
                return Some(ServerEvent { name, data });
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) => return None,
                Err(err) => panic!("the event stream broke: {err}"),
            }
        }
    }

    /// Every remaining event.
    pub async fn rest(&mut self) -> Vec<ServerEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A registered user and their tokens.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub username: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

pub const GOOD_PASSWORD: &str = "quartz-Lantern-88-river";

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.send(reqwest::Method::POST, path, token, body).await
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.request(method, self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// Registers a user from a client address of its own, so tests that
    /// register many users stay clear of the per-address throttle.
    pub async fn register(&self, username: &str) -> TestUser {
        register_at(&self.client, &self.base, username).await
    }
}

/// [`TestApp::register`] against any server (a `serve` process, say).
pub async fn register_at(client: &reqwest::Client, base: &str, username: &str) -> TestUser {
    let response = client
        .post(format!("{base}/api/auth/register/"))
        .header("x-forwarded-for", fake_ip(username))
        .json(&json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": GOOD_PASSWORD,
            "password2": GOOD_PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    let body = expect_status(response, StatusCode::CREATED).await;
    TestUser {
        id: body["user"]["id"].as_i64().unwrap(),
        username: username.to_string(),
        password: GOOD_PASSWORD.to_string(),
        access: body["tokens"]["access"].as_str().unwrap().to_string(),
        refresh: body["tokens"]["refresh"].as_str().unwrap().to_string(),
    }
}

impl TestApp {
    /// Registers a user and gives them the admin role, as
    /// `algoagent create-admin` does for an existing user.
    pub async fn register_admin(&self, username: &str) -> TestUser {
        let user = self.register(username).await;
        let store = store::Store::connect(&self.database_url, &store::ConnectOptions::default()).await.unwrap();
        store.set_role(user.id, store::accounts::ROLE_ADMIN).await.unwrap();
        store.close().await;
        user
    }
}

/// A stable documentation-range address derived from a name.
pub fn fake_ip(seed: &str) -> String {
    let hash = seed.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("198.18.{}.{}", (hash >> 8) % 256, hash % 256)
}

/// Asserts the status and returns the JSON body, showing the body on failure.
pub async fn expect_status(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"))
}

/// An executable canonical strategy (the form `generate_executable_code`
/// takes): two EMAs crossing, with risk rules.
pub fn two_emas(name: &str) -> Value {
    json!({
        "strategy_name": name,
        "description": "Trend following on two EMAs",
        "timeframe": "1d",
        "indicators": {"ema_fast": {"type": "ema", "period": 12}, "ema_slow": {"type": "ema", "period": 26}},
        "entry_rules": [{"type": "crossover", "indicator1": "ema_fast", "indicator2": "ema_slow"}],
        "exit_rules": [{"type": "crossunder", "indicator1": "ema_fast", "indicator2": "ema_slow"}],
        "risk_management": {"stop_loss": 0.02, "take_profit": 0.05, "position_sizing": 0.1}
    })
}

/// A server with the backtest sandbox (`ALGOAGENT_SANDBOX_ENV`, set by
/// `.ci/run` after `algoagent sandbox setup`) and two workers; `None`,
/// and the test skipped, without it.
pub async fn with_sandbox(extra: &[(&str, &str)]) -> Option<TestApp> {
    let Ok(env_dir) = std::env::var("ALGOAGENT_SANDBOX_ENV") else {
        #[allow(clippy::print_stderr, reason = "a skipped test says so in the test output")]
        {
            eprintln!("skipped: set ALGOAGENT_SANDBOX_ENV (algoagent sandbox setup) to run the backtest tests");
        }
        return None;
    };
    let mut env = vec![("SANDBOX_ENV_DIR", env_dir.as_str()), ("SANDBOX_WORKERS", "2")];
    env.extend_from_slice(extra);
    Some(spawn_app_with(&env).await)
}

/// As [`with_sandbox`], with gemini-sim behind the key pool.
pub async fn with_sandbox_and_sim(sim: &gemini_sim::SimServer) -> Option<TestApp> {
    let env_dir = std::env::var("ALGOAGENT_SANDBOX_ENV").ok()?;
    let env = [("SANDBOX_ENV_DIR", env_dir.as_str()), ("SANDBOX_WORKERS", "2")];
    Some(crate::helpers::spawn_app_with_sim_and(sim, &env).await)
}
