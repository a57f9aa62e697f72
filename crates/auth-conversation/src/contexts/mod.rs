//! `/api/auth/ai-contexts/`: saved instructions and data a chat runs with.
//! Owner-scoped: another user's id is a 404 for every verb.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::conversations::{AiContextFields, AiContextRow};

const SESSION_NAME_MAX_CHARS: usize = 200;
const INSTRUCTIONS_MAX_CHARS: usize = 20_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/ai-contexts", get(list).post(create))
        .route("/api/auth/ai-contexts/{id}", get(detail).put(replace).patch(update).delete(remove))
        .route("/api/auth/ai-contexts/{id}/activate", post(activate))
        .route("/api/auth/ai-contexts/{id}/deactivate", post(deactivate))
}

#[derive(Debug, Serialize)]
pub struct AiContextView {
    pub id: i64,
    pub username: String,
    pub session_name: String,
    pub instructions: String,
    pub context_data: Value,
    pub is_active: bool,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub updated_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    pub last_used: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<AiContextRow> for AiContextView {
    fn from(row: AiContextRow) -> Self {
        Self {
            id: row.id,
            username: row.username,
            session_name: row.session_name,
            instructions: row.instructions,
            context_data: row.context_data.0,
            is_active: row.is_active,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_used: row.last_used,
        }
    }
}

/// The writable fields; the read-only ones a client echoes back are ignored.
#[derive(Debug, Deserialize)]
pub struct ContextChanges {
    session_name: Option<String>,
    instructions: Option<String>,
    context_data: Option<Value>,
    is_active: Option<bool>,
}

impl ContextChanges {
    fn apply(self, fields: &mut AiContextFields) {
        if let Some(value) = self.session_name {
            fields.session_name = value.trim().to_string();
        }
        if let Some(value) = self.instructions {
            fields.instructions = value;
        }
        if let Some(value) = self.context_data {
            fields.context_data = value;
        }
        if let Some(value) = self.is_active {
            fields.is_active = value;
        }
    }
}

fn validate(fields: &AiContextFields) -> Result<(), ApiError> {
    let mut errors = FieldErrors::new();
    if fields.session_name.is_empty() {
        errors.add("session_name", "This field may not be blank.");
    }
    errors.check_length("session_name", &fields.session_name, SESSION_NAME_MAX_CHARS);
    errors.check_length("instructions", &fields.instructions, INSTRUCTIONS_MAX_CHARS);
    if !fields.context_data.is_object() {
        errors.add("context_data", "Expected a JSON object.");
    }
    errors.into_result()
}

fn empty_fields() -> AiContextFields {
    AiContextFields {
        session_name: String::new(),
        instructions: String::new(),
        context_data: Value::Object(Default::default()),
        is_active: true,
    }
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    page: PageRequest,
) -> ApiResult<Json<Page<AiContextView>>> {
    let (count, rows) = state.store.ai_contexts_page(user.user_id, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(AiContextView::from).collect())?))
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<ContextChanges>,
) -> ApiResult<(StatusCode, Json<AiContextView>)> {
    if changes.session_name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("session_name", "This field is required.")));
    }
    let mut fields = empty_fields();
    changes.apply(&mut fields);
    validate(&fields)?;
    let row = state.store.create_ai_context(user.user_id, &fields).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<AiContextView>> {
    let row = state.store.ai_context(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn change(state: &AppState, owner: i64, id: i64, changes: ContextChanges) -> ApiResult<Json<AiContextView>> {
    let current = state.store.ai_context(id, owner).await?.ok_or(ApiError::NotFound)?;
    let mut fields = AiContextFields::from(&current);
    changes.apply(&mut fields);
    validate(&fields)?;
    let row = state.store.update_ai_context(id, owner, &fields).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

/// PUT: a full update, so the required field must be given.
async fn replace(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<ContextChanges>,
) -> ApiResult<Json<AiContextView>> {
    // A missing resource is a 404 before it is a bad request.
    state.store.ai_context(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    if changes.session_name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("session_name", "This field is required.")));
    }
    change(&state, user.user_id, id, changes).await
}

async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<ContextChanges>,
) -> ApiResult<Json<AiContextView>> {
    change(&state, user.user_id, id, changes).await
}

async fn remove(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<StatusCode> {
    if state.store.delete_ai_context(id, user.user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

async fn activate(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<AiContextView>> {
    let row = state.store.set_ai_context_active(id, user.user_id, true).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn deactivate(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<AiContextView>> {
    let row = state.store.set_ai_context_active(id, user.user_id, false).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}
