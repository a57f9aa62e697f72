//! The `/admin` pages over plain HTTP: who gets in, the cookie, CSRF and
//! same-origin checks, confirmations, and no secret on any page. (The
//! live updates are tested in a real browser, in `dashboard_browser.rs`.)

use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

use crate::helpers::{expect_status, spawn_app_with_sim, spawn_app_with_sim_and, start_sim, TestApp, SIM_KEY};

/// A browser-like client of the pages: keeps the cookies it is given and
/// never follows redirects, so each one can be looked at.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self { app, client: reqwest::Client::builder().redirect(Policy::none()).build().unwrap(), cookies: vec![] }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let response = self.client.get(self.app.url(path)).header(COOKIE, self.cookie_header()).send().await.unwrap();
        self.keep_cookies(&response);
        response
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.app.url(path)).header(COOKIE, self.cookie_header()).form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        self.keep_cookies(&response);
        response
    }

    fn origin(&self) -> String {
        self.app.url("")
    }

    /// Logs in through the form; returns the answer to the POST.
    async fn log_in(&mut self, username: &str, password: &str) -> reqwest::Response {
        let form = self.get("/admin/login").await.text().await.unwrap();
        let csrf = hidden(&form, "csrf");
        let origin = self.origin();
        self.post("/admin/login", &[("username", username), ("password", password), ("csrf", &csrf)], Some(&origin))
            .await
    }
}

/// The value of the first hidden input named `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

async fn key_state(app: &TestApp, access: &str) -> String {
    let keys = expect_status(app.get("/api/admin/keys/", Some(access)).await, StatusCode::OK).await;
    keys[0]["state"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_admin_logs_in_with_a_strict_cookie_and_sees_every_page_without_secrets() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let admin = app.register_admin("page-admin").await;
    let mut browser = Browser::new(&app);

    let anonymous = browser.get("/admin").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()[LOCATION], "/admin/login");

    let login = browser.log_in(&admin.username, &admin.password).await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER, "{:?}", login.text().await);
    let cookie = login
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("algoagent_admin="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP from an untrusted peer: {cookie}");

    for path in ["/admin", "/admin/keys", "/admin/buckets", "/admin/history", "/admin/users", "/admin/tokens"] {
        let page = browser.get(path).await;
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        let html = page.text().await.unwrap();
        assert!(!html.contains(SIM_KEY), "{path} shows a secret");
        assert!(!html.contains("<script>") && !html.contains(" style="), "{path}: inline script or style");
    }
    let keys = browser.get("/admin/keys").await.text().await.unwrap();
    assert!(keys.contains("default") && keys.contains("…0001"), "{keys}");
    // This server has no sandbox environment: the overview says so, and why.
    let overview = browser.get("/admin").await.text().await.unwrap();
    assert!(overview.contains("Backtest sandbox") && overview.contains("unavailable"), "{overview}");
    assert!(overview.contains("0 queued, 0 running; 0 worker slots reporting in"), "{overview}");
    let fragment = browser.get("/admin/fragments/keys").await;
    assert_eq!(fragment.status(), StatusCode::OK);
    assert!(!fragment.text().await.unwrap().contains("<html"), "a fragment, not a page");
    let htmx = browser.get("/admin/static/htmx.min.js").await;
    assert_eq!(htmx.status(), StatusCode::OK, "htmx is served from the binary");

    // Logging out ends the session on the server, not only in the browser.
    let session = browser.cookies.clone();
    let page = browser.get("/admin").await.text().await.unwrap();
    let csrf = hidden(&page, "csrf");
    let origin = browser.origin();
    let out = browser.post("/admin/logout", &[("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    browser.cookies = session;
    assert_eq!(browser.get("/admin").await.status(), StatusCode::SEE_OTHER, "the old cookie is dead");
}

#[tokio::test]
async fn non_admins_and_wrong_passwords_are_refused() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let user = app.register("not-an-admin").await;
    let mut browser = Browser::new(&app);
    let refused = browser.log_in(&user.username, &user.password).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(!browser.cookies.iter().any(|(name, _)| name == "algoagent_admin"), "no session for a non-admin");
    let wrong = browser.log_in(&user.username, "not-the-password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await.unwrap().contains("Wrong username or password"));

    // A login posted from another site is refused before the password is checked.
    let form = browser.get("/admin/login").await.text().await.unwrap();
    let csrf = hidden(&form, "csrf");
    let cross = browser
        .post(
            "/admin/login",
            &[("username", &user.username), ("password", &user.password), ("csrf", &csrf)],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn actions_need_the_token_and_a_confirmation_and_are_recorded() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let admin = app.register_admin("careful-admin").await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.log_in(&admin.username, &admin.password).await.status(), StatusCode::SEE_OTHER);
    let page = browser.get("/admin/keys").await.text().await.unwrap();
    let csrf = hidden(&page, "csrf");
    let origin = browser.origin();

    // Forged: no token, a wrong token, or another origin. Nothing changes.
    for (form, origin) in [
        (vec![("key_id", "default"), ("confirmed", "yes")], Some(origin.as_str())),
        (vec![("key_id", "default"), ("confirmed", "yes"), ("csrf", "0000")], Some(origin.as_str())),
        (vec![("key_id", "default"), ("confirmed", "yes"), ("csrf", csrf.as_str())], Some("https://evil.example")),
    ] {
        let forged = browser.post("/admin/actions/disable", &form, origin).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(key_state(&app, &admin.access).await, "available");

    // The first submission asks; only the confirmation acts.
    let asked = browser.post("/admin/actions/disable", &[("key_id", "default"), ("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(asked.status(), StatusCode::OK);
    assert!(asked.text().await.unwrap().contains("Take key default out of rotation"));
    assert_eq!(key_state(&app, &admin.access).await, "available", "asking changes nothing");
    let done = browser
        .post(
            "/admin/actions/disable",
            &[("key_id", "default"), ("csrf", &csrf), ("confirmed", "yes"), ("back", "keys")],
            Some(&origin),
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert!(done.headers()[LOCATION].to_str().unwrap().starts_with("/admin/keys?notice="));
    assert_eq!(key_state(&app, &admin.access).await, "disabled");

    let history = browser.get("/admin/history?kind=disabled").await.text().await.unwrap();
    assert!(history.contains("admin:careful-admin"), "{history}");
    let bad_page = browser.get("/admin/history?page=0").await;
    assert_eq!(bad_page.status(), StatusCode::BAD_REQUEST);
}

/// The tokens page: every user's gateway tokens with their calls, never a
/// token, and a revocation that asks first and then holds.
#[tokio::test]
async fn operators_see_each_api_tokens_calls_and_revoke_one_from_the_page() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let holder = app.register("token-holder").await;
    let created = app
        .send(
            reqwest::Method::POST,
            "/api/auth/api-tokens/",
            Some(&holder.access),
            &serde_json::json!({"name": "ci-runner"}),
        )
        .await;
    let issued = expect_status(created, StatusCode::CREATED).await;
    let token = issued["token"].as_str().unwrap();
    let generate = format!("{}/v1beta/models/gemini-2.5-flash:generateContent", app.base);
    let ask = serde_json::json!({"contents": [{"parts": [{"text": "hello"}]}]});
    let called = app.client.post(&generate).header("x-goog-api-key", token).json(&ask).send().await.unwrap();
    expect_status(called, StatusCode::OK).await;

    let admin = app.register_admin("tokens-admin").await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.log_in(&admin.username, &admin.password).await.status(), StatusCode::SEE_OTHER);
    let page = browser.get("/admin/tokens").await.text().await.unwrap();
    let prefix = issued["prefix"].as_str().unwrap();
    assert!(page.contains("ci-runner") && page.contains("token-holder") && page.contains(prefix), "{page}");
    assert!(!page.contains(token), "the page shows a token");
    let row = &page[page.find("ci-runner").unwrap()..];
    assert!(row.contains("<td>1</td>"), "one call this hour: {row}");
    let fragment = browser.get("/admin/fragments/tokens").await.text().await.unwrap();
    assert!(fragment.contains("ci-runner") && !fragment.contains("<html"), "{fragment}");

    let csrf = hidden(&page, "csrf");
    let origin = browser.origin();
    let id = issued["id"].to_string();
    let form = [("token_id", id.as_str()), ("csrf", csrf.as_str()), ("back", "tokens")];
    let asked = browser.post("/admin/actions/revoke-token", &form, Some(&origin)).await;
    assert!(asked.text().await.unwrap().contains(&format!("Revoke API token {id}")));
    let called = app.client.post(&generate).header("x-goog-api-key", token).json(&ask).send().await.unwrap();
    assert_eq!(called.status(), StatusCode::OK, "asking changes nothing");

    let confirmed = [form.as_slice(), &[("confirmed", "yes")]].concat();
    let done = browser.post("/admin/actions/revoke-token", &confirmed, Some(&origin)).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert!(done.headers()[LOCATION].to_str().unwrap().starts_with("/admin/tokens?notice="));
    let called = app.client.post(&generate).header("x-goog-api-key", token).json(&ask).send().await.unwrap();
    assert_eq!(called.status(), StatusCode::BAD_REQUEST, "a revoked token is refused");
    let page = browser.get("/admin/tokens").await.text().await.unwrap();
    assert!(!page.contains("ci-runner"), "{page}");
}

#[tokio::test]
async fn admin_dashboard_false_removes_the_pages_but_not_the_api() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim_and(&sim, &[("ADMIN_DASHBOARD", "false")]).await;
    let admin = app.register_admin("api-only-admin").await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.get("/admin/login").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(browser.get("/admin").await.status(), StatusCode::NOT_FOUND);
    expect_status(app.get("/api/admin/keys/", Some(&admin.access)).await, StatusCode::OK).await;
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_session_ends_after_thirty_idle_minutes_or_twelve_hours() {
    let sim = start_sim().await;
    let app = spawn_app_with_sim(&sim).await;
    let admin = app.register_admin("idle-admin").await;
    let store = store::Store::connect(&app.database_url, &store::ConnectOptions::default()).await.unwrap();
    let now = chrono::Utc::now();
    for (column, at) in
        [("last_seen_at", now - chrono::Duration::minutes(31)), ("expires_at", now - chrono::Duration::seconds(1))]
    {
        let mut browser = Browser::new(&app);
        assert_eq!(browser.log_in(&admin.username, &admin.password).await.status(), StatusCode::SEE_OTHER);
        assert_eq!(browser.get("/admin").await.status(), StatusCode::OK);
        let sql = format!("UPDATE admin_sessions SET {column} = $1");
        store::on_pool!(store, pool => sqlx::query(&sql).bind(at).execute(pool).await.map(|_| ()).unwrap());
        let expired = browser.get("/admin").await;
        assert_eq!(expired.status(), StatusCode::SEE_OTHER, "{column}");
        assert_eq!(expired.headers()[LOCATION], "/admin/login");
    }
    store.close().await;
}
