use std::time::Duration;

use api_core::auth::{MaybeAuthUser, Session};
use api_core::jwt::TokenKind;
use api_core::Redacted;
use api_core::{
    ApiError, ApiJson, ApiResult, AppState, AuthUser, ClientIp, FieldErrors, Page, PageRequest, ResourceId,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use key_rotation::throttle::{Reservation, Throttled};
use serde::Deserialize;
use serde_json::{json, Value};
use store::accounts::{NewUser, ProfileFields, RefreshRotation, ROLE_USER};
use store::StoreError;

use super::password::{self, UserAttributes};
use super::service::{self, NAME_MAX_CHARS, USERNAME_TAKEN};
use super::views::{ProfileView, SessionView, UserDetailView, UserView};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const LOGIN_FAILURES_PER_USERNAME: u32 = 5;
const LOGIN_FAILURES_PER_IP: u32 = 20;
const REGISTRATIONS_PER_IP: u32 = 10;

fn throttled(refusal: Throttled) -> ApiError {
    ApiError::Throttled { retry_after: refusal.retry_after }
}

fn username_bucket(username: &str) -> String {
    format!("login-failures:user:{username}")
}

fn ip_bucket(ip: std::net::IpAddr) -> String {
    format!("login-failures:ip:{}", api_core::client_ip::throttle_network(ip))
}

#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    username: String,
    email: String,
    password: Redacted<String>,
    password2: Redacted<String>,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
}

pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    // Counted before validation: a refused attempt still probes usernames.
    state
        .throttle
        .hit(&format!("registrations:ip:{}", api_core::client_ip::throttle_network(ip)), REGISTRATIONS_PER_IP, HOUR)
        .await
        .map_err(throttled)?;

    let username = request.username.trim();
    let email = request.email.trim();
    let mut errors = FieldErrors::new();
    if let Some(problem) = service::username_problem(username) {
        errors.add("username", problem);
    }
    if let Some(problem) = service::email_problem(email) {
        errors.add("email", problem);
    }
    errors.check_length("first_name", &request.first_name, NAME_MAX_CHARS);
    errors.check_length("last_name", &request.last_name, NAME_MAX_CHARS);
    let attributes = UserAttributes { username, first_name: &request.first_name, last_name: &request.last_name, email };
    let problems = password::password_problems(&request.password.0, &attributes);
    if problems.is_empty() && request.password.0 != request.password2.0 {
        errors.add("password", "Password fields didn't match.");
    }
    for problem in problems {
        errors.add("password", problem);
    }
    errors.into_result()?;

    let permit = state.hashing.admit().await?;
    let hash = password::hash_password(request.password.0, permit).await.map_err(ApiError::Internal)?;
    let created = state
        .store
        .create_user(&NewUser {
            username,
            email,
            first_name: &request.first_name,
            last_name: &request.last_name,
            password_hash: &hash,
            role: ROLE_USER,
        })
        .await;
    let user = match created {
        Ok(user) => user,
        Err(StoreError::UniqueViolation) => {
            return Err(ApiError::Validation(FieldErrors::single("username", USERNAME_TAKEN)))
        }
        Err(err) => return Err(err.into()),
    };
    let tokens = service::start_session(&state, user.id).await?;
    tracing::info!(user_id = user.id, "user registered");
    Ok((
        StatusCode::CREATED,
        Json(SessionView { user: UserView::from(&user), tokens, message: "User registered successfully" }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    username: String,
    password: Redacted<String>,
}

/// Checks a username and password with the login throttles (failures per
/// username and per client network, reserved before the check) and the
/// hashing gate: the one way every login form and endpoint checks a
/// password. Records the login on success.
pub async fn check_password(
    state: &AppState,
    ip: std::net::IpAddr,
    username: &str,
    password: String,
) -> ApiResult<store::accounts::UserRow> {
    // No real account has a longer name; refusing it here keeps arbitrary
    // text out of the throttle's buckets.
    if username.chars().count() > service::USERNAME_MAX_CHARS {
        return Err(ApiError::Validation(FieldErrors::single(
            "username",
            format!("Ensure this field has no more than {} characters.", service::USERNAME_MAX_CHARS),
        )));
    }
    let failures = FailureReservations::reserve(
        state,
        [(username_bucket(username), LOGIN_FAILURES_PER_USERNAME), (ip_bucket(ip), LOGIN_FAILURES_PER_IP)],
    )
    .await?;
    let permit = match state.hashing.admit().await {
        Ok(permit) => permit,
        Err(busy) => {
            failures.refund(state).await;
            return Err(busy);
        }
    };

    let user = state.store.user_by_username(username).await?;
    let hash = match &user {
        Some(user) => user.password_hash.clone(),
        None => password::timing_decoy_hash().await.map_err(ApiError::Internal)?,
    };
    // A hash moved in from the old Django app is replaced with ours once
    // the password is known to be right.
    let to_rehash = user.as_ref().filter(|u| password::needs_rehash(&u.password_hash)).map(|_| password.clone());
    let matches = password::verify_password(password, hash, permit).await.map_err(ApiError::Internal)?;
    let user = match user {
        Some(user) if matches && user.is_active => user,
        _ => {
            tracing::info!(%ip, "failed login");
            return Err(ApiError::InvalidCredentials);
        }
    };
    failures.refund(state).await;
    state.store.record_login(user.id, chrono::Utc::now()).await?;
    if let Some(password) = to_rehash {
        rehash(state, user.id, password).await;
    }
    Ok(user)
}

/// Stores an argon2id hash of a password that just verified against an
/// older kind of hash. A failure (or a busy hashing gate) leaves the old
/// hash, which still verifies, for the next login.
async fn rehash(state: &AppState, user_id: i64, password: String) {
    let Ok(permit) = state.hashing.admit().await else { return };
    match password::hash_password(password, permit).await {
        Ok(hash) => match state.store.set_password_hash(user_id, &hash).await {
            Ok(()) => tracing::info!(user_id, "password re-hashed with argon2id at its first login here"),
            Err(err) => tracing::warn!(user_id, error = %err, "could not store the re-hashed password"),
        },
        Err(err) => tracing::warn!(user_id, error = %err, "could not re-hash the password"),
    }
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<Json<SessionView>> {
    let user = check_password(&state, ip, &request.username, request.password.0).await?;
    let tokens = service::start_session(&state, user.id).await?;
    Ok(Json(SessionView { user: UserView::from(&user), tokens, message: "Login successful" }))
}

/// A failed attempt recorded in advance in each of its throttle buckets.
/// Reserving before the password is checked makes the limit hold under
/// concurrency: of 40 simultaneous guesses only the limit get checked. An
/// attempt that succeeds is refunded.
struct FailureReservations(Vec<(String, Reservation)>);

impl FailureReservations {
    async fn reserve<const N: usize>(state: &AppState, buckets: [(String, u32); N]) -> ApiResult<Self> {
        let attempts =
            futures::future::join_all(buckets.iter().map(|(bucket, limit)| state.throttle.hit(bucket, *limit, MINUTE)))
                .await;
        let mut reserved = Vec::with_capacity(N);
        let mut refused: Option<Throttled> = None;
        for ((bucket, _), attempt) in buckets.into_iter().zip(attempts) {
            match attempt {
                Ok(reservation) => reserved.push((bucket, reservation)),
                Err(refusal) => {
                    refused = Some(refused.map_or(refusal, |r: Throttled| r.max_wait(refusal)));
                }
            }
        }
        let reservations = Self(reserved);
        if let Some(refusal) = refused {
            reservations.refund(state).await;
            return Err(throttled(refusal));
        }
        Ok(reservations)
    }

    async fn refund(self, state: &AppState) {
        for (bucket, reservation) in &self.0 {
            state.throttle.refund(bucket, reservation).await;
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    refresh: Redacted<String>,
}

pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> ApiResult<Json<super::views::TokenPair>> {
    let claims = state.jwt.verify(&request.refresh.0, TokenKind::Refresh).map_err(|_| ApiError::TokenNotValid)?;
    let family = state.store.refresh_token_family(&claims.jti, claims.user_id).await?.ok_or(ApiError::TokenNotValid)?;
    let active = state.store.user_by_id(claims.user_id).await?.is_some_and(|u| u.is_active);
    if !active {
        return Err(ApiError::TokenNotValid);
    }
    let successor = service::issue_pair(&state, claims.user_id, &family)?;
    match state.store.rotate_refresh_token(&claims.jti, claims.user_id, &family, &successor.record()).await? {
        RefreshRotation::Rotated => Ok(Json(successor.tokens)),
        RefreshRotation::Replayed => {
            state.sessions.forget_user(claims.user_id);
            tracing::warn!(user_id = claims.user_id, "revoked refresh token replayed; session revoked");
            Err(ApiError::TokenNotValid)
        }
        RefreshRotation::Unknown => Err(ApiError::TokenNotValid),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LogoutRequest {
    refresh: Option<Redacted<String>>,
}

/// Ends the caller's session: its refresh tokens and every access token it
/// issued. The body is optional; a refresh token in it must be the caller's,
/// and its session ends too.
pub async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|err| ApiError::bad_request_with_details("Malformed JSON", err.to_string()))?;
        api_core::extract::from_json_value(value)?
    };
    if let Some(Redacted(token)) = request.refresh {
        let claims = state
            .jwt
            .verify(&token, TokenKind::Refresh)
            .ok()
            .filter(|claims| claims.user_id == user.user_id)
            .ok_or_else(|| ApiError::bad_request("Invalid refresh token"))?;
        if let Some(family) = state.store.refresh_token_family(&claims.jti, user.user_id).await? {
            if family != session.family {
                state.store.revoke_session(&family, user.user_id).await?;
            }
        }
    }
    state.store.revoke_session(&session.family, user.user_id).await?;
    state.sessions.forget_user(user.user_id);
    Ok(Json(json!({ "message": "Logout successful" })))
}

pub async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let row = state.store.user_by_id(user.user_id).await?.ok_or(ApiError::TokenNotValid)?;
    let profile = state.store.profile_of_user(user.user_id).await?.map(ProfileView::from);
    let user = UserDetailView { user: UserView::from(&row), date_joined: row.date_joined };
    Ok(Json(json!({ "user": user, "profile": profile })))
}

#[derive(Debug, Deserialize)]
pub struct ChangePasswordRequest {
    current_password: Option<Redacted<String>>,
    new_password: Option<Redacted<String>>,
}

pub async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<ChangePasswordRequest>,
) -> ApiResult<Json<Value>> {
    let (Some(Redacted(current)), Some(Redacted(new))) = (request.current_password, request.new_password) else {
        return Err(ApiError::bad_request("Both current_password and new_password are required"));
    };
    let row = state.store.user_by_id(user.user_id).await?.ok_or(ApiError::TokenNotValid)?;
    // A stolen access token must not become an unlimited password oracle.
    let failures =
        FailureReservations::reserve(&state, [(username_bucket(&row.username), LOGIN_FAILURES_PER_USERNAME)]).await?;
    let permit = match state.hashing.admit().await {
        Ok(permit) => permit,
        Err(busy) => {
            failures.refund(&state).await;
            return Err(busy);
        }
    };
    if !password::verify_password(current, row.password_hash.clone(), permit).await.map_err(ApiError::Internal)? {
        return Err(ApiError::bad_request("Current password is incorrect"));
    }
    failures.refund(&state).await;
    let attributes = UserAttributes {
        username: &row.username,
        first_name: &row.first_name,
        last_name: &row.last_name,
        email: &row.email,
    };
    let problems = password::password_problems(&new, &attributes);
    if !problems.is_empty() {
        return Err(ApiError::bad_request(problems.join(" ")));
    }
    let permit = state.hashing.admit().await?;
    let hash = password::hash_password(new, permit).await.map_err(ApiError::Internal)?;
    state.store.set_password_hash(row.id, &hash).await?;
    let revoked = state.store.revoke_all_sessions(row.id).await?;
    state.sessions.forget_user(row.id);
    tracing::info!(user_id = row.id, revoked, "password changed; every session ended");
    Ok(Json(json!({ "message": "Password changed successfully" })))
}

pub async fn health(State(state): State<AppState>, MaybeAuthUser(user): MaybeAuthUser) -> ApiResult<Json<Value>> {
    let username = match user {
        Some(user) => state.store.user_by_id(user.user_id).await?.map(|row| row.username),
        None => None,
    };
    Ok(Json(json!({
        "status": "healthy",
        "service": "auth_api",
        "user": username,
        "timestamp": api_core::time::iso8601(&chrono::Utc::now()),
    })))
}

pub async fn list_profiles(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<ProfileView>>> {
    let (count, rows) = state.store.profiles_page(user.user_id, page.limit(), page.offset()).await?;
    let results = rows.into_iter().map(ProfileView::from).collect();
    Ok(Json(page.into_page(count, results)?))
}

pub async fn profile_detail(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<ProfileView>> {
    let row = state.store.profile_by_id(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

pub async fn my_profile(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<ProfileView>> {
    let row = state.store.profile_of_user(user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

/// The writable profile fields; anything else in the body (the read-only
/// fields a client echoes back) is ignored, as DRF does.
#[derive(Debug, Deserialize)]
pub struct ProfileChanges {
    default_risk_tolerance: Option<String>,
    default_timeframe: Option<String>,
    preferred_symbols: Option<Vec<String>>,
    trading_goals: Option<String>,
    strategy_preferences: Option<String>,
    risk_parameters: Option<Value>,
}

impl ProfileChanges {
    fn apply(self, fields: &mut ProfileFields) {
        let ProfileChanges {
            default_risk_tolerance,
            default_timeframe,
            preferred_symbols,
            trading_goals,
            strategy_preferences,
            risk_parameters,
        } = self;
        if let Some(value) = default_risk_tolerance {
            fields.default_risk_tolerance = value;
        }
        if let Some(value) = default_timeframe {
            fields.default_timeframe = value;
        }
        if let Some(value) = preferred_symbols {
            fields.preferred_symbols = value;
        }
        if let Some(value) = trading_goals {
            fields.trading_goals = value;
        }
        if let Some(value) = strategy_preferences {
            fields.strategy_preferences = value;
        }
        if let Some(value) = risk_parameters {
            fields.risk_parameters = value;
        }
    }
}

async fn apply_profile_changes(
    state: &AppState,
    owner_id: i64,
    profile_id: Option<i64>,
    changes: ProfileChanges,
) -> ApiResult<Json<ProfileView>> {
    let current = match profile_id {
        Some(id) => state.store.profile_by_id(id, owner_id).await?,
        None => state.store.profile_of_user(owner_id).await?,
    }
    .ok_or(ApiError::NotFound)?;
    let mut fields = ProfileFields::from(&current);
    changes.apply(&mut fields);
    service::validate_profile(&fields)?;
    let updated = state.store.update_profile(current.id, owner_id, &fields).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(updated.into()))
}

pub async fn update_profile(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<ProfileChanges>,
) -> ApiResult<Json<ProfileView>> {
    apply_profile_changes(&state, user.user_id, Some(id), changes).await
}

pub async fn update_my_profile(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<ProfileChanges>,
) -> ApiResult<Json<ProfileView>> {
    apply_profile_changes(&state, user.user_id, None, changes).await
}
