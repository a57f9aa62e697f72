//! The dashboard's data as JSON, under `/api/admin/`, for an admin's JWT:
//! others get 403, anonymous callers 401 (from the authentication gate).
//! Each POST is the page's action, with the same effect and history record.

use api_core::{ApiError, ApiResult, AppState, AuthUser, Page, PageRequest};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use store::operators::EventFilter;

use crate::operations::{self, Actor, ApiTokenRow, Done, EventRow, KeyRow, Usage, UserRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/keys", get(keys))
        .route("/api/admin/usage", get(usage))
        .route("/api/admin/history", get(history))
        .route("/api/admin/users/usage", get(users))
        .route("/api/admin/buckets/{project}/{model}/reset", post(reset_bucket))
        .route("/api/admin/keys/{key_id}/disable", post(disable_key))
        .route("/api/admin/keys/{key_id}/enable", post(enable_key))
        .route("/api/admin/keys/{key_id}/probe", post(probe_key))
        .route("/api/admin/reload", post(reload))
        .route("/api/admin/alerts/test", post(test_alert))
        .route("/api/admin/api-tokens", get(api_tokens))
        .route("/api/admin/api-tokens/{id}", axum::routing::delete(revoke_api_token))
}

/// Every user's gateway tokens (never the tokens themselves), most
/// recently used first, with each one's calls.
async fn api_tokens(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<ApiTokenRow>>> {
    admin(&state, user).await?;
    let activity = state.pool.activity().report().await?;
    Ok(Json(operations::api_tokens(&state, &activity).await?))
}

async fn revoke_api_token(
    State(state): State<AppState>,
    user: AuthUser,
    api_core::ResourceId(id): api_core::ResourceId,
) -> ApiResult<axum::http::StatusCode> {
    let actor = admin(&state, user).await?;
    operations::revoke_api_token(&state, id, &actor).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The caller as an actor, if they are an active admin.
async fn admin(state: &AppState, user: AuthUser) -> ApiResult<Actor> {
    let row = state.store.user_by_id(user.user_id).await?.ok_or(ApiError::TokenNotValid)?;
    if row.is_admin() && row.is_active {
        Ok(Actor::admin(&row.username))
    } else {
        Err(ApiError::Forbidden)
    }
}

async fn keys(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<KeyRow>>> {
    admin(&state, user).await?;
    Ok(Json(operations::read(&state).await?.keys()))
}

async fn usage(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Usage>> {
    admin(&state, user).await?;
    Ok(Json(operations::read(&state).await?.usage()))
}

async fn users(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<UserRow>>> {
    admin(&state, user).await?;
    let activity = state.pool.activity().report().await?;
    Ok(Json(operations::heaviest_users(&state, &activity).await?))
}

/// `?key=&project=&kind=`; an empty value filters nothing.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    pub key: Option<String>,
    pub project: Option<String>,
    pub kind: Option<String>,
}

impl HistoryQuery {
    pub fn filter(self) -> EventFilter {
        let given = |value: Option<String>| value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        EventFilter { key_id: given(self.key), project: given(self.project), kind: given(self.kind) }
    }
}

pub fn filter_from(query: Result<Query<HistoryQuery>, QueryRejection>) -> ApiResult<EventFilter> {
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    Ok(query.filter())
}

async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Page<EventRow>>> {
    admin(&state, user).await?;
    let filter = filter_from(query)?;
    let (count, rows) = operations::history(&state, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows)?))
}

async fn reset_bucket(
    State(state): State<AppState>,
    user: AuthUser,
    Path((project, model)): Path<(String, String)>,
) -> ApiResult<Json<Done>> {
    let actor = admin(&state, user).await?;
    Ok(Json(operations::reset_bucket(&state, &project, &model, &actor).await?))
}

async fn disable_key(
    State(state): State<AppState>,
    user: AuthUser,
    Path(key_id): Path<String>,
) -> ApiResult<Json<Done>> {
    let actor = admin(&state, user).await?;
    Ok(Json(operations::disable_key(&state, &key_id, &actor).await?))
}

async fn enable_key(
    State(state): State<AppState>,
    user: AuthUser,
    Path(key_id): Path<String>,
) -> ApiResult<Json<Done>> {
    let actor = admin(&state, user).await?;
    Ok(Json(operations::enable_key(&state, &key_id, &actor).await?))
}

async fn probe_key(State(state): State<AppState>, user: AuthUser, Path(key_id): Path<String>) -> ApiResult<Json<Done>> {
    let actor = admin(&state, user).await?;
    Ok(Json(operations::probe_key(&state, &key_id, &actor).await?))
}

async fn reload(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Done>> {
    let actor = admin(&state, user).await?;
    Ok(Json(operations::reload(&state, &actor).await?))
}

async fn test_alert(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Done>> {
    let actor = admin(&state, user).await?;
    Ok(Json(operations::test_alert(&state, &actor).await?))
}
