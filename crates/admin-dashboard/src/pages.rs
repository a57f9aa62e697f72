//! The operators' pages under `/admin`: server-rendered (askama templates
//! in the top-level `templates/`), complete with JavaScript off, and live
//! with it on: each page polls its own fragment every few seconds with
//! htmx, which is vendored into the binary, so the pages work air-gapped
//! under a Content-Security-Policy with no inline script or style.
//!
//! Every action is a POST form with the session's CSRF token. Its first
//! submission renders a confirmation page and changes nothing; the
//! confirmation's submission acts and is recorded as `admin:<username>`.

use std::net::SocketAddr;

use api_core::pagination::encode;
use api_core::{ApiError, AppState, ClientIp};
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::api::{filter_from, HistoryQuery};
use crate::operations::{self, Actor, ApiTokenRow, BucketRow, EventRow, KeyRow, Overview, UserRow};
use crate::session::{self, AdminSession};

/// How often the pages poll their fragments.
pub const POLL_SECONDS: u32 = 3;
const HISTORY_PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/keys", get(keys))
        .route("/admin/buckets", get(buckets))
        .route("/admin/history", get(history))
        .route("/admin/users", get(users))
        .route("/admin/tokens", get(tokens))
        .route("/admin/fragments/{name}", get(fragment))
        .route("/admin/login", get(login_form).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/actions/{action}", post(action))
        .route("/admin/static/htmx.min.js", get(htmx))
        .route("/admin/static/admin.css", get(stylesheet))
        .layer(middleware::from_fn(harden))
}

/// Headers every `/admin` response carries: no inline script or style, no
/// framing, nothing cached (the pages show live state and a CSRF token).
async fn harden(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

const HTMX: &str = include_str!("../static/htmx.min.js");
const STYLESHEET: &str = include_str!("../static/admin.css");

async fn htmx() -> impl IntoResponse {
    static_asset("text/javascript; charset=utf-8", HTMX)
}

async fn stylesheet() -> impl IntoResponse {
    static_asset("text/css; charset=utf-8", STYLESHEET)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        body,
    )
        .into_response()
}

/// A page's failure, as a page.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        PageError(err)
    }
}

impl From<store::StoreError> for PageError {
    fn from(err: store::StoreError) -> Self {
        PageError(err.into())
    }
}

#[derive(Template)]
#[template(path = "admin/error.html")]
struct ErrorPage {
    status: u16,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "admin page failed");
        }
        let message = match &self.0 {
            ApiError::Forbidden => "You may not do this: the dashboard is for admins, and every change needs the \
                                    form's token from this site."
                .to_string(),
            ApiError::NotFound => "There is no such page, key or bucket.".to_string(),
            ApiError::InvalidCredentials => "Wrong username or password.".to_string(),
            ApiError::Throttled { .. } => "Too many failed logins; wait a minute and try again.".to_string(),
            ApiError::Conflict(message) | ApiError::Unavailable(message) => message.clone(),
            ApiError::BadRequest { message, .. } => message.clone(),
            _ if status.is_server_error() => "Something went wrong on our side; it has been logged.".to_string(),
            other => other.to_string(),
        };
        let page = ErrorPage { status: status.as_u16(), message };
        let mut response = render(&page).into_response();
        *response.status_mut() = status;
        if let ApiError::Throttled { retry_after } = &self.0 {
            if let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "an admin template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// What every page shows around its content.
pub struct Layout {
    pub username: String,
    pub csrf: String,
    pub active: &'static str,
    pub notice: Option<String>,
    pub poll_seconds: u32,
}

/// The signed-in admin of a page. Anonymous visitors are sent to the login
/// page, other users refused. `PAGE_VIEW`: whether the request counts as
/// activity for the idle timeout (a page does, a poll does not).
struct SignedIn<const PAGE_VIEW: bool>(AdminSession);

impl<const PAGE_VIEW: bool> FromRequestParts<AppState> for SignedIn<PAGE_VIEW> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session::current(state, &parts.headers, PAGE_VIEW).await {
            Ok(Some(session)) if session.is_admin => Ok(SignedIn(session)),
            Ok(Some(_)) => Err(PageError(ApiError::Forbidden).into_response()),
            Ok(None) if PAGE_VIEW => Err(to_login()),
            Ok(None) => {
                // htmx would follow a redirect into the fragment's box; it
                // loads the login page instead when told so.
                let mut response = StatusCode::UNAUTHORIZED.into_response();
                response.headers_mut().insert("hx-redirect", HeaderValue::from_static("/admin/login"));
                Err(response)
            }
            Err(err) => Err(PageError(err).into_response()),
        }
    }
}

type PageView = SignedIn<true>;
type Poll = SignedIn<false>;

fn to_login() -> Response {
    Redirect::to("/admin/login").into_response()
}

#[derive(Debug, Default, Deserialize)]
struct NoticeQuery {
    notice: Option<String>,
}

fn layout(session: &AdminSession, active: &'static str, notice: Option<String>) -> Layout {
    Layout {
        username: session.username.clone(),
        csrf: session.csrf.clone(),
        active,
        notice: notice.filter(|n| !n.is_empty()).map(|n| n.chars().take(200).collect()),
        poll_seconds: POLL_SECONDS,
    }
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    layout: Layout,
    overview: Overview,
}

#[derive(Template)]
#[template(path = "admin/_overview.html")]
struct OverviewFragment {
    overview: Overview,
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
}

#[derive(Template)]
#[template(path = "admin/_keys.html")]
struct KeysFragment {
    csrf: String,
    keys: Vec<KeyRow>,
}

#[derive(Template)]
#[template(path = "admin/buckets.html")]
struct BucketsPage {
    layout: Layout,
    buckets: Vec<BucketRow>,
    threshold: f64,
}

#[derive(Template)]
#[template(path = "admin/_buckets.html")]
struct BucketsFragment {
    csrf: String,
    buckets: Vec<BucketRow>,
    threshold: f64,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserRow>,
}

#[derive(Template)]
#[template(path = "admin/_users.html")]
struct UsersFragment {
    users: Vec<UserRow>,
}

#[derive(Template)]
#[template(path = "admin/tokens.html")]
struct TokensPage {
    layout: Layout,
    csrf: String,
    tokens: Vec<ApiTokenRow>,
}

#[derive(Template)]
#[template(path = "admin/_tokens.html")]
struct TokensFragment {
    csrf: String,
    tokens: Vec<ApiTokenRow>,
}

#[derive(Template)]
#[template(path = "admin/history.html")]
struct HistoryPage {
    layout: Layout,
    events: Vec<EventRow>,
    count: i64,
    page: i64,
    pages: i64,
    key: String,
    project: String,
    kind: String,
}

impl HistoryPage {
    /// The link to page `page` with the same filters.
    fn link(&self, page: i64) -> String {
        let mut query = vec![format!("page={page}")];
        for (name, value) in [("key", &self.key), ("project", &self.project), ("kind", &self.kind)] {
            if !value.is_empty() {
                query.push(format!("{name}={}", encode(value)));
            }
        }
        format!("/admin/history?{}", query.join("&"))
    }
}

async fn overview(
    State(state): State<AppState>,
    SignedIn(session): PageView,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let reading = operations::read(&state).await?;
    let overview = reading.overview(&state);
    Ok(render(&OverviewPage { layout: layout(&session, "overview", query.notice), overview }))
}

async fn keys(
    State(state): State<AppState>,
    SignedIn(session): PageView,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let keys = operations::read(&state).await?.keys();
    Ok(render(&KeysPage { layout: layout(&session, "keys", query.notice), keys }))
}

async fn buckets(
    State(state): State<AppState>,
    SignedIn(session): PageView,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let reading = operations::read(&state).await?;
    Ok(render(&BucketsPage {
        layout: layout(&session, "buckets", query.notice),
        buckets: reading.buckets(),
        threshold: reading.config.quota_warning_threshold,
    }))
}

async fn users(
    State(state): State<AppState>,
    SignedIn(session): PageView,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let activity = state.pool.activity().report().await.map_err(ApiError::from)?;
    let users = operations::heaviest_users(&state, &activity).await?;
    Ok(render(&UsersPage { layout: layout(&session, "users", query.notice), users }))
}

async fn tokens(
    State(state): State<AppState>,
    SignedIn(session): PageView,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let activity = state.pool.activity().report().await.map_err(ApiError::from)?;
    let tokens = operations::api_tokens(&state, &activity).await?;
    let csrf = session.csrf.clone();
    Ok(render(&TokensPage { layout: layout(&session, "tokens", query.notice), csrf, tokens }))
}

#[derive(Debug, Default, Deserialize)]
struct HistoryPageQuery {
    page: Option<String>,
    notice: Option<String>,
}

async fn history(
    State(state): State<AppState>,
    SignedIn(session): PageView,
    Query(query): Query<HistoryPageQuery>,
    filters: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let page = match query.page.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => 1,
        Some(page) => page
            .parse::<i64>()
            .ok()
            .filter(|&p| (1..=i64::MAX / HISTORY_PAGE).contains(&p))
            .ok_or_else(|| ApiError::bad_request("page must be a positive whole number"))?,
    };
    let filter = filter_from(filters)?;
    let (count, events) = operations::history(&state, &filter, HISTORY_PAGE, (page - 1) * HISTORY_PAGE).await?;
    let pages = ((count + HISTORY_PAGE - 1) / HISTORY_PAGE).max(1);
    Ok(render(&HistoryPage {
        layout: layout(&session, "history", query.notice),
        events,
        count,
        page,
        pages,
        key: filter.key_id.unwrap_or_default(),
        project: filter.project.unwrap_or_default(),
        kind: filter.kind.unwrap_or_default(),
    }))
}

/// The part of a page that polls: rendered alone, without counting as
/// activity for the idle timeout.
async fn fragment(
    State(state): State<AppState>,
    SignedIn(session): Poll,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    match name.as_str() {
        "overview" => {
            let reading = operations::read(&state).await?;
            Ok(render(&OverviewFragment { overview: reading.overview(&state) }))
        }
        "keys" => {
            let keys = operations::read(&state).await?.keys();
            Ok(render(&KeysFragment { csrf: session.csrf, keys }))
        }
        "buckets" => {
            let reading = operations::read(&state).await?;
            let threshold = reading.config.quota_warning_threshold;
            Ok(render(&BucketsFragment { csrf: session.csrf, buckets: reading.buckets(), threshold }))
        }
        "users" => {
            let activity = state.pool.activity().report().await.map_err(ApiError::from)?;
            Ok(render(&UsersFragment { users: operations::heaviest_users(&state, &activity).await? }))
        }
        "tokens" => {
            let activity = state.pool.activity().report().await.map_err(ApiError::from)?;
            Ok(render(&TokensFragment { csrf: session.csrf, tokens: operations::api_tokens(&state, &activity).await? }))
        }
        _ => Err(ApiError::NotFound.into()),
    }
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if session::current(&state, &headers, true).await?.is_some_and(|session| session.is_admin) {
        return Ok(Redirect::to("/admin").into_response());
    }
    let token = session::random_token();
    let mut response = render(&LoginPage { csrf: token.clone(), error: None });
    let secure = session::over_tls(&state, peer.ip(), &headers);
    response
        .headers_mut()
        .append(header::SET_COOKIE, session::set_cookie(session::LOGIN_COOKIE, &token, session::IDLE_LIMIT, secure));
    Ok(response)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let expected = session::cookie(&headers, session::LOGIN_COOKIE).unwrap_or_default();
    session::check_post(&headers, Some(&form.csrf), expected)?;
    let user = match auth_conversation::accounts::check_password(&state, ip, &form.username, form.password).await {
        Ok(user) => user,
        Err(ApiError::InvalidCredentials) => {
            let mut response =
                render(&LoginPage { csrf: expected.to_string(), error: Some("Wrong username or password.".into()) });
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return Ok(response);
        }
        Err(err) => return Err(err.into()),
    };
    if !user.is_admin() {
        tracing::info!(user_id = user.id, "a non-admin tried the admin dashboard");
        return Err(ApiError::Forbidden.into());
    }
    let token = session::start(&state, user.id).await?;
    tracing::info!(user_id = user.id, "admin signed in to the dashboard");
    let secure = session::over_tls(&state, peer.ip(), &headers);
    let mut response = Redirect::to("/admin").into_response();
    let cookies = response.headers_mut();
    cookies.append(header::SET_COOKIE, session::set_cookie(session::COOKIE, &token, session::MAX_LIFETIME, secure));
    cookies
        .append(header::SET_COOKIE, session::set_cookie(session::LOGIN_COOKIE, "", std::time::Duration::ZERO, secure));
    Ok(response)
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let Some(session) = session::current(&state, &headers, false).await? else {
        return Ok(to_login());
    };
    session::check_post(&headers, Some(&form.csrf), &session.csrf)?;
    session::end(&state, &session).await?;
    let secure = session::over_tls(&state, peer.ip(), &headers);
    let mut response = to_login();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session::set_cookie(session::COOKIE, "", std::time::Duration::ZERO, secure));
    Ok(response)
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirmed: String,
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    token_id: String,
    #[serde(default)]
    back: String,
}

#[derive(Template)]
#[template(path = "admin/confirm.html")]
struct ConfirmPage {
    layout: Layout,
    action: String,
    question: String,
    key_id: String,
    project: String,
    model: String,
    token_id: String,
    back: String,
}

/// The pages an action may return to.
fn back_to(back: &str) -> &'static str {
    match back {
        "keys" => "/admin/keys",
        "buckets" => "/admin/buckets",
        "history" => "/admin/history",
        "users" => "/admin/users",
        "tokens" => "/admin/tokens",
        _ => "/admin",
    }
}

async fn action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    form: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    // The session and its token first: a forged request learns nothing,
    // not even whether its form was well made.
    let session = match session::current(&state, &headers, true).await? {
        Some(session) if session.is_admin => session,
        _ => return Err(ApiError::Forbidden.into()),
    };
    let Ok(Form(form)) = form else { return Err(ApiError::Forbidden.into()) };
    session::check_post(&headers, Some(&form.csrf), &session.csrf)?;
    let question = match action.as_str() {
        "reset" => format!("Lift the cooldown and disables of {}/{}?", form.project, form.model),
        "disable" => format!("Take key {} out of rotation until an admin enables it?", form.key_id),
        "enable" => format!("Put key {} back into rotation?", form.key_id),
        "probe" => format!("Probe key {} now (a models.get call, no quota spent)?", form.key_id),
        "reload" => "Make every replica re-read the key configuration?".to_string(),
        "test-alert" => "Post a test alert to the webhook?".to_string(),
        "revoke-token" => format!("Revoke API token {}? Every replica refuses it within seconds.", form.token_id),
        _ => return Err(ApiError::NotFound.into()),
    };
    if form.confirmed != "yes" {
        return Ok(render(&ConfirmPage {
            layout: layout(&session, "", None),
            action,
            question,
            key_id: form.key_id,
            project: form.project,
            model: form.model,
            token_id: form.token_id,
            back: form.back,
        }));
    }
    let actor = Actor::admin(&session.username);
    let done = match action.as_str() {
        "reset" => operations::reset_bucket(&state, &form.project, &form.model, &actor).await,
        "disable" => operations::disable_key(&state, &form.key_id, &actor).await,
        "enable" => operations::enable_key(&state, &form.key_id, &actor).await,
        "probe" => operations::probe_key(&state, &form.key_id, &actor).await,
        "reload" => operations::reload(&state, &actor).await,
        "revoke-token" => {
            let token_id = form.token_id.parse().map_err(|_| ApiError::bad_request("token_id must be a number"))?;
            operations::revoke_api_token(&state, token_id, &actor).await
        }
        _ => operations::test_alert(&state, &actor).await,
    }?;
    Ok(Redirect::to(&format!("{}?notice={}", back_to(&form.back), encode(&done.message))).into_response())
}
