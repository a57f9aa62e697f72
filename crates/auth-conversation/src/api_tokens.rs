//! `/api/auth/api-tokens/`: the caller's personal API tokens for the SDK
//! gateway. A token is shown once, when it is made; lists show its first
//! characters and when it was last used. Tokens outlive logout and password
//! changes, as personal access tokens do elsewhere; they end when deleted,
//! when they expire, or when their user is deactivated.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store::api_tokens::{ApiTokenRow, NewApiToken};

const NAME_MAX_CHARS: usize = 100;
/// Tokens one user may hold; more is a sign of a script minting them.
const MAX_TOKENS_PER_USER: usize = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/api-tokens", get(list).post(create))
        .route("/api/auth/api-tokens/{id}", delete(revoke))
}

#[derive(Debug, Serialize)]
pub struct ApiTokenView {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiTokenRow> for ApiTokenView {
    fn from(row: ApiTokenRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        }
    }
}

/// The one answer that carries the token itself.
#[derive(Debug, Serialize)]
pub struct IssuedTokenView {
    #[serde(flatten)]
    pub listed: ApiTokenView,
    pub token: String,
}

#[derive(Debug, Deserialize)]
pub struct NewToken {
    name: Option<String>,
    expires_at: Option<String>,
}

async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<ApiTokenView>>> {
    let rows = state.store.api_tokens(user.user_id).await?;
    Ok(Json(rows.into_iter().map(ApiTokenView::from).collect()))
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(new): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<IssuedTokenView>)> {
    let now = Utc::now();
    let mut errors = FieldErrors::new();
    let name = new.name.as_deref().map(str::trim).unwrap_or_default().to_string();
    if name.is_empty() {
        errors.add("name", "This field is required.");
    }
    errors.check_length("name", &name, NAME_MAX_CHARS);
    let expires_at = match new.expires_at.as_deref().map(DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(at)) if at.with_timezone(&Utc) > now => Some(at.with_timezone(&Utc)),
        Some(Ok(_)) => {
            errors.add("expires_at", "Must be in the future.");
            None
        }
        Some(Err(_)) => {
            errors.add("expires_at", "Expected an RFC 3339 date-time, e.g. 2027-01-31T00:00:00Z.");
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if state.store.api_tokens(user.user_id).await?.len() >= MAX_TOKENS_PER_USER {
        return Err(ApiError::Validation(FieldErrors::single(
            "non_field_errors",
            format!("You have {MAX_TOKENS_PER_USER} API tokens; delete one you no longer use first."),
        )));
    }
    let issued = api_core::api_tokens::issue();
    let row = state
        .store
        .create_api_token(&NewApiToken {
            user_id: user.user_id,
            name: &name,
            prefix: &issued.prefix,
            token_hash: &issued.hash,
            created_at: now,
            expires_at,
        })
        .await?;
    tracing::info!(token_id = row.id, "API token created");
    Ok((StatusCode::CREATED, Json(IssuedTokenView { listed: row.into(), token: issued.token })))
}

async fn revoke(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<StatusCode> {
    if !state.store.delete_api_token(user.user_id, id).await? {
        return Err(ApiError::NotFound);
    }
    state.api_tokens.forget_all();
    tracing::info!(token_id = id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
