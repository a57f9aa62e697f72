//! `/api/auth/chat-sessions/`: conversations by integer id, owner-scoped.
//! The message rows are the truth; `messages` is rendered from them.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::conversations::{ChatMessageRow, ChatSessionFields, ChatSessionRow};

pub const DEFAULT_TITLE: &str = "New Strategy Session";
const TITLE_MAX_CHARS: usize = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/chat-sessions", get(list).post(create))
        .route("/api/auth/chat-sessions/{id}", get(detail).put(update).patch(update).delete(remove))
        .route("/api/auth/chat-sessions/{id}/end_session", post(end_session))
}

#[derive(Debug, Serialize)]
pub struct MessageView {
    pub id: i64,
    pub role: String,
    pub content: String,
    pub metadata: Value,
    pub tokens_used: i64,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<ChatMessageRow> for MessageView {
    fn from(row: ChatMessageRow) -> Self {
        Self {
            id: row.id,
            role: row.role,
            content: row.content,
            metadata: row.metadata.0,
            tokens_used: row.tokens_used,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: i64,
    pub session_id: String,
    pub username: String,
    pub ai_context: Option<i64>,
    pub ai_context_name: Option<String>,
    pub title: String,
    /// The conversation as the old API rendered it: role, content, timestamp.
    pub messages: Vec<Value>,
    pub generated_strategies: Value,
    pub message_count: i64,
    pub is_active: bool,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub updated_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_messages: Option<Vec<MessageView>>,
}

/// How many of each session's newest messages a list shows.
const LISTED_MESSAGES: i64 = 20;

/// A session with its messages rendered; `detailed` adds the message rows
/// and renders them all (a session holds at most `CHAT_MAX_SESSION_MESSAGES`),
/// a list only the newest [`LISTED_MESSAGES`] of each.
pub async fn session_view(state: &AppState, row: ChatSessionRow, detailed: bool) -> ApiResult<SessionView> {
    let messages = if detailed {
        state.store.chat_messages(row.id).await?
    } else {
        state.store.recent_chat_messages(row.id, LISTED_MESSAGES).await?
    };
    let rendered = messages
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content, "timestamp": api_core::time::iso8601(&m.created_at) }))
        .collect();
    Ok(SessionView {
        id: row.id,
        session_id: row.session_id,
        username: row.username,
        ai_context: row.ai_context_id,
        ai_context_name: row.ai_context_name,
        title: row.title,
        messages: rendered,
        generated_strategies: row.generated_strategies.0,
        message_count: row.message_count,
        is_active: row.is_active,
        created_at: row.created_at,
        updated_at: row.updated_at,
        chat_messages: detailed.then(|| messages.into_iter().map(MessageView::from).collect()),
    })
}

/// The writable fields; read-only ones a client echoes back are ignored.
#[derive(Debug, Deserialize)]
pub struct SessionChanges {
    title: Option<String>,
    /// `null` detaches the context.
    #[serde(default, with = "double_option")]
    ai_context: Option<Option<i64>>,
    is_active: Option<bool>,
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<i64>>, D::Error> {
        Option::<i64>::deserialize(deserializer).map(Some)
    }
}

/// Checks that a context may be attached to a chat: the caller's, and active.
pub async fn attachable_context(state: &AppState, owner: i64, id: i64, field: &str) -> ApiResult<()> {
    match state.store.ai_context(id, owner).await? {
        Some(context) if context.is_active => Ok(()),
        Some(_) => Err(ApiError::Validation(FieldErrors::single(field, "This AI context is inactive."))),
        None => Err(ApiError::Validation(FieldErrors::single(
            field,
            format!("Invalid pk \"{id}\" - object does not exist."),
        ))),
    }
}

async fn apply(state: &AppState, owner: i64, fields: &mut ChatSessionFields, changes: SessionChanges) -> ApiResult<()> {
    if let Some(title) = changes.title {
        fields.title = title.trim().to_string();
    }
    if let Some(context) = changes.ai_context {
        if let Some(id) = context {
            if fields.ai_context_id != Some(id) {
                attachable_context(state, owner, id, "ai_context").await?;
            }
        }
        fields.ai_context_id = context;
    }
    if let Some(active) = changes.is_active {
        fields.is_active = active;
    }
    let mut errors = FieldErrors::new();
    if fields.title.is_empty() {
        errors.add("title", "This field may not be blank.");
    }
    errors.check_length("title", &fields.title, TITLE_MAX_CHARS);
    errors.into_result()
}

async fn list(State(state): State<AppState>, user: AuthUser, page: PageRequest) -> ApiResult<Json<Page<SessionView>>> {
    let (count, rows) = state.store.chat_sessions_page(user.user_id, page.limit(), page.offset()).await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(session_view(&state, row, false).await?);
    }
    Ok(Json(page.into_page(count, views)?))
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<SessionChanges>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let mut fields = ChatSessionFields { title: DEFAULT_TITLE.to_string(), ai_context_id: None, is_active: true };
    apply(&state, user.user_id, &mut fields, changes).await?;
    let session_id = uuid::Uuid::new_v4().to_string();
    let row = state.store.create_chat_session(user.user_id, &session_id, &fields).await?;
    Ok((StatusCode::CREATED, Json(session_view(&state, row, true).await?)))
}

async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<SessionView>> {
    let row = state.store.chat_session(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(session_view(&state, row, true).await?))
}

async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<SessionChanges>,
) -> ApiResult<Json<SessionView>> {
    let current = state.store.chat_session(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let mut fields =
        ChatSessionFields { title: current.title, ai_context_id: current.ai_context_id, is_active: current.is_active };
    apply(&state, user.user_id, &mut fields, changes).await?;
    let row = state.store.update_chat_session(id, user.user_id, &fields).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(session_view(&state, row, true).await?))
}

async fn remove(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<StatusCode> {
    if state.store.delete_chat_session(id, user.user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

async fn end_session(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Value>> {
    let current = state.store.chat_session(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let fields = ChatSessionFields { title: current.title, ai_context_id: current.ai_context_id, is_active: false };
    let row = state.store.update_chat_session(id, user.user_id, &fields).await?.ok_or(ApiError::NotFound)?;
    let session = session_view(&state, row, true).await?;
    Ok(Json(json!({ "message": "Session ended", "session": session })))
}
