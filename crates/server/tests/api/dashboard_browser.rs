//! The dashboard in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`), driven over WebDriver from Rust.
//!
//! The WebDriver client is the protocol's few JSON calls over the reqwest
//! (rustls) client the suite already has; a WebDriver crate would add a
//! second TLS stack and a C build for nothing these tests need.
//!
//! Without a browser the test says it was skipped, unless
//! `ALGOAGENT_BROWSER_TESTS=1` (set by `.ci/run`), where a missing browser
//! fails it; `ALGOAGENT_BROWSER_TESTS=0` skips it (`.ci/run`'s second
//! backend: the browser adds nothing a database changes). With `SCREENSHOT_TO=<file.png>` it also saves the keys page
//! (`scripts/screenshot.sh`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::helpers::{expect_status, spawn_demo_app, TestApp};

/// How long the page may take to show a change (it polls every 3 s; the
/// machine may be busy).
const LIVE_WITHIN: Duration = Duration::from_secs(20);

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A WebDriver session on a chromedriver of its own.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or says why it cannot.
    #[allow(clippy::print_stderr, reason = "a skipped test says so in the test output")]
    async fn start() -> Option<Browser> {
        let setting = std::env::var("ALGOAGENT_BROWSER_TESTS").unwrap_or_default();
        if setting == "0" {
            eprintln!("SKIPPED: ALGOAGENT_BROWSER_TESTS=0");
            return None;
        }
        let required = setting == "1";
        let driver = find_program("CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_program("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            assert!(!required, "ALGOAGENT_BROWSER_TESTS=1 but chromium or chromedriver is missing");
            eprintln!("SKIPPED: the dashboard browser test needs chromium and chromedriver (apt install chromium chromium-driver)");
            return None;
        };
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        // Its own process group: dropping the browser kills chromedriver and
        // the Chromium it started, even when a failed assertion skips the
        // session's clean end.
        let driver = Command::new(driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if http.get(format!("{base}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // Headless, on loopback only: nothing in the background talks to
        // the network. As root Chromium needs --no-sandbox.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            "--no-first-run",
            "--no-default-browser-check",
            "--metrics-recording-only",
            "--password-store=basic",
            "--window-size=1500,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let created: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}"));
        Some(Browser { http, session: format!("{base}/session/{session}"), driver, _profile: profile })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The element `css` selects, if there is one now.
    async fn find(&self, css: &str) -> Option<String> {
        let found =
            self.call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        found.as_object()?.values().next()?.as_str().map(str::to_string)
    }

    async fn must_find(&self, css: &str) -> String {
        self.find(css).await.unwrap_or_else(|| panic!("no element {css}"))
    }

    async fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css).await?;
        self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None).await.as_str().map(str::to_string)
    }

    async fn click(&self, css: &str) {
        let element = self.must_find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.must_find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({ "text": text }))).await;
    }

    /// Waits until the text of `css` satisfies `done`, without reloading.
    async fn wait_for_text(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + LIVE_WITHIN;
        loop {
            let text = self.text(css).await.unwrap_or_default();
            if done(&text) {
                return text;
            }
            assert!(tokio::time::Instant::now() < deadline, "{css} still reads {text:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until a navigation (a click's form post) lands on a URL
    /// that satisfies `done`.
    async fn wait_for_url(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + LIVE_WITHIN;
        loop {
            let url = self.url().await;
            if done(&url) {
                return url;
            }
            assert!(tokio::time::Instant::now() < deadline, "still at {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap()).unwrap()
    }

    async fn log_in(&self, app: &TestApp, username: &str, password: &str) {
        self.goto(&app.url("/admin/login")).await;
        self.type_into("#username", username).await;
        self.type_into("#password", password).await;
        self.click("#login").await;
    }

    async fn close(self) {
        self.call(reqwest::Method::DELETE, "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = self.driver.id().and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?));
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

async fn chat(app: &TestApp, access: &str) -> StatusCode {
    app.post("/api/auth/chat/", Some(access), &json!({ "message": "What is an EMA?" })).await.status()
}

/// Which flash key served the user's calls so far (their sticky key).
async fn served_by(app: &TestApp, admin_access: &str) -> (String, String) {
    let keys = expect_status(app.get("/api/admin/keys/", Some(admin_access)).await, StatusCode::OK).await;
    let key = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["hour"]["successes"].as_u64() > Some(0))
        .unwrap_or_else(|| panic!("no key served a call: {keys}"));
    (key["key_id"].as_str().unwrap().to_string(), key["project"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn an_admin_watches_a_key_cool_down_and_resets_it_in_a_real_browser() {
    let Some(browser) = Browser::start().await else { return };
    let (app, sim_url) = spawn_demo_app().await;
    let admin = app.register_admin("browser-admin").await;
    let user = app.register("browser-user").await;

    // 1. Logs in as an admin.
    browser.log_in(&app, &admin.username, &admin.password).await;
    browser.wait_for_url(|url| url.ends_with("/admin")).await;

    // 2. Sees the demo keys, told apart by their last four characters.
    browser.goto(&app.url("/admin/keys")).await;
    let page = browser.source().await;
    for key in ["flash_01", "flash_02", "flash_03", "pro_01", "pro_05", "flash_invalid", "pro_leaked"] {
        assert!(page.contains(&format!(r#"id="key-{key}""#)), "no row for {key}");
    }
    assert!(page.contains("…h_01") && page.contains("…h_02"), "masked ids tell keys apart");

    // 3. The test's own call finds the user's key; then gemini-sim answers
    // 429 for that key's project, and the row turns "cooling" on its own.
    assert_eq!(chat(&app, &user.access).await, StatusCode::OK);
    let (key_id, _) = served_by(&app, &admin.access).await;
    let sim_project = format!("demo-{key_id}");
    let script = json!([{ "kind": "rate_limit_minute", "retry_ms": 120_000 }]);
    let scripted = app.client.post(format!("{sim_url}/_sim/projects/{sim_project}/script")).json(&script).send().await;
    assert!(scripted.unwrap().status().is_success());
    assert_eq!(chat(&app, &user.access).await, StatusCode::OK, "failed over within the request");
    let row = format!("#key-{key_id} .state");
    let cooling = browser.wait_for_text(&row, |t| t.starts_with("cooling")).await;
    assert!(cooling.contains("until") && cooling.contains("because"), "{cooling}");
    if let Ok(path) = std::env::var("SCREENSHOT_TO") {
        std::fs::write(&path, browser.screenshot().await).unwrap();
    }

    // 4. Resets it (confirmed), watches it turn active, finds it in the history.
    browser.click(&format!("#key-{key_id} button.reset")).await;
    browser.wait_for_url(|url| url.ends_with("/admin/actions/reset")).await;
    let confirm = browser.text(".question").await.unwrap_or_default();
    assert!(confirm.contains("Lift the cooldown"), "{confirm}");
    browser.click("#confirm").await;
    browser.wait_for_url(|url| url.contains("/admin/keys?notice=")).await;
    browser.wait_for_text(&row, |t| t == "active").await;
    browser.goto(&app.url("/admin/history?kind=reset")).await;
    let history = browser.source().await;
    assert!(history.contains("admin:browser-admin") && history.contains(&key_id), "{history}");

    // No page shows a configured secret, or a user's token.
    let mut secrets = server::demo::secrets();
    secrets.push(user.access.clone());
    for path in ["/admin", "/admin/keys", "/admin/buckets", "/admin/history", "/admin/users"] {
        browser.goto(&app.url(path)).await;
        let html = browser.source().await;
        assert!(html.contains("AlgoAgent"), "{path} did not render: {html}");
        for secret in &secrets {
            assert!(!html.contains(secret.as_str()), "{path} shows a secret");
        }
    }

    // A non-admin is refused.
    browser.goto(&app.url("/admin")).await;
    browser.click(".logout button").await;
    browser.wait_for_url(|url| url.ends_with("/admin/login")).await;
    browser.log_in(&app, &user.username, &user.password).await;
    browser.wait_for_url(|url| url.ends_with("/admin/login")).await;
    browser.wait_for_text("h1", |t| t == "403").await;
    browser.goto(&app.url("/admin/keys")).await;
    browser.wait_for_url(|url| url.ends_with("/admin/login")).await;
    assert!(browser.source().await.contains("Sign in"), "no session was started for them");
    browser.close().await;
}
