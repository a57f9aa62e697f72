//! `/api/strategies/chat/`: conversations about strategies, looked up by
//! their public `chat_<16 hex>` id and owner-scoped.
//!
//! As in the auth chat, nothing is lost: the user's message is stored
//! before the upstream call and marked `failed` with the cause when it
//! fails, and the answer carries the failure's own status.

use api_core::turn::{Conversation, PendingTurn};
use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use gemini_client::chat::parse_answer;
use gemini_client::{CallSpec, ChatRequest, ExecError, GenerationConfig, Message, Role};
use key_rotation::config::Workload;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::strategy_chat::{StrategyChatMessageRow, StrategyChatRow};
use store::{Store, StoreResult};

pub const MESSAGE_MAX_CHARS: usize = 8_000;
/// `messages/` pages: their default and largest size.
const DEFAULT_MESSAGES: i64 = 100;
const MAX_MESSAGES: i64 = 500;
/// How much of a strategy's code goes into the prompt.
const STRATEGY_CODE_CHARS: usize = 4_000;

const ASSISTANT_ROLE: &str = "You are AlgoAgent's strategy assistant. Help the trader refine this trading strategy: \
ask clarifying questions, point out missing entry, exit and risk rules, and suggest concrete, testable changes.";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/chat", get(list))
        .route("/api/strategies/chat/chat", post(chat))
        .route("/api/strategies/chat/{session_id}", get(detail))
        .route("/api/strategies/chat/{session_id}/messages", get(messages))
        .route("/api/strategies/chat/{session_id}/summarize", post(summarize))
        .route("/api/strategies/chat/{session_id}/clear", post(clear))
        .route("/api/strategies/chat/{session_id}/deactivate", post(deactivate))
}

#[derive(Debug, Serialize)]
pub struct MessageView {
    pub id: i64,
    pub role: String,
    pub content: String,
    pub metadata: Value,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<StrategyChatMessageRow> for MessageView {
    fn from(row: StrategyChatMessageRow) -> Self {
        Self { id: row.id, role: row.role, content: row.content, metadata: row.metadata.0, created_at: row.created_at }
    }
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub title: String,
    pub strategy: Option<i64>,
    pub is_active: bool,
    pub context_summary: String,
    pub message_count: i64,
    pub model_name: String,
    pub temperature: f64,
    pub max_tokens: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageView>>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

fn session_view(row: StrategyChatRow, messages: Option<Vec<StrategyChatMessageRow>>) -> SessionView {
    SessionView {
        session_id: row.session_id,
        title: row.title,
        strategy: row.strategy_id,
        is_active: row.is_active,
        context_summary: row.context_summary,
        message_count: row.message_count,
        model_name: row.model_name,
        temperature: row.temperature,
        max_tokens: row.max_tokens,
        messages: messages.map(|rows| rows.into_iter().map(MessageView::from).collect()),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

async fn session(state: &AppState, user: AuthUser, session_id: &str) -> ApiResult<StrategyChatRow> {
    state.store.strategy_chat(session_id, user.user_id).await?.ok_or(ApiError::NotFound)
}

async fn list(State(state): State<AppState>, user: AuthUser, page: PageRequest) -> ApiResult<Json<Page<SessionView>>> {
    let (count, rows) = state.store.strategy_chats_page(user.user_id, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(|row| session_view(row, None)).collect())?))
}

async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    Path(session_id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let row = session(&state, user, &session_id).await?;
    let messages = state.store.strategy_chat_messages(row.id).await?;
    Ok(Json(session_view(row, Some(messages))))
}

#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// The newest `limit` messages (default 100, at most 500), oldest first;
/// `before=<message id>` pages back from there.
async fn messages(
    State(state): State<AppState>,
    user: AuthUser,
    Path(session_id): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    let mut errors = FieldErrors::new();
    let limit = match query.limit.as_deref() {
        None => DEFAULT_MESSAGES,
        Some(text) => text.parse::<i64>().ok().filter(|n| (1..=MAX_MESSAGES).contains(n)).unwrap_or_else(|| {
            errors.add("limit", format!("Ensure this value is a whole number from 1 to {MAX_MESSAGES}."));
            0
        }),
    };
    let before = match query.before.as_deref() {
        None => None,
        Some(text) => text.parse::<i64>().ok().or_else(|| {
            errors.add("before", "A valid message id is required.");
            None
        }),
    };
    errors.into_result()?;
    let row = session(&state, user, &session_id).await?;
    let messages: Vec<MessageView> = state
        .store
        .strategy_chat_messages_page(row.id, limit, before)
        .await?
        .into_iter()
        .map(MessageView::from)
        .collect();
    Ok(Json(json!({ "session_id": row.session_id, "count": messages.len(), "messages": messages })))
}

#[derive(Debug, Deserialize)]
pub struct ChatTurn {
    message: Option<String>,
    session_id: Option<String>,
    strategy_id: Option<i64>,
    #[serde(default = "default_true")]
    use_context: bool,
}

fn default_true() -> bool {
    true
}

/// The earlier turns that count as history: answered ones, as Gemini turns.
fn history(rows: &[StrategyChatMessageRow], budget: u64) -> Vec<Message> {
    api_core::history::history_within_budget(
        rows.iter().map(|row| (row.role.as_str(), row.content.as_str(), &row.metadata.0)),
        budget,
    )
}

async fn chat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(turn): ApiJson<ChatTurn>,
) -> ApiResult<Json<Value>> {
    let text = turn.message.as_deref().map(str::trim).unwrap_or_default().to_string();
    let mut errors = FieldErrors::new();
    if text.is_empty() {
        errors.add("message", "This field is required.");
    }
    errors.check_length("message", &text, MESSAGE_MAX_CHARS);
    errors.into_result()?;
    let strategy = match turn.strategy_id {
        Some(id) => Some(state.store.strategy(id, user.user_id).await?.ok_or_else(|| {
            ApiError::Validation(FieldErrors::single(
                "strategy_id",
                format!("Invalid pk \"{id}\" - object does not exist."),
            ))
        })?),
        None => None,
    };
    let row = match &turn.session_id {
        Some(id) => session(&state, user, id).await?,
        None => {
            let id = format!("chat_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
            let title = strategy.as_ref().map_or_else(|| text.chars().take(50).collect(), |s| s.name.clone());
            state.store.create_strategy_chat(user.user_id, &id, &title, strategy.as_ref().map(|s| s.id)).await?
        }
    };
    if !row.is_active {
        return Err(ApiError::bad_request("This chat session is inactive; start a new one"));
    }
    api_core::turn::check_room(&state, row.message_count)?;
    let strategy = match (strategy, row.strategy_id) {
        (Some(strategy), _) => Some(strategy),
        (None, Some(id)) => state.store.strategy(id, user.user_id).await?,
        (None, None) => None,
    };

    let mut system = ASSISTANT_ROLE.to_string();
    let mut context_used = false;
    if turn.use_context {
        if let Some(strategy) = &strategy {
            let code: String = strategy.strategy_code.chars().take(STRATEGY_CODE_CHARS).collect();
            system.push_str(&format!(
                "\n\nThe strategy \"{}\" (status {}): {}\nIts definition:\n{code}",
                strategy.name, strategy.status, strategy.description
            ));
            context_used = true;
        }
        if !row.context_summary.is_empty() {
            system.push_str(&format!("\n\nSummary of the conversation so far: {}", row.context_summary));
            context_used = true;
        }
    }
    let earlier = state.store.strategy_chat_messages_page(row.id, api_core::history::HISTORY_ROWS, None).await?;
    let earlier_count = row.message_count;
    let mut turns = if turn.use_context { history(&earlier, state.chat.history_tokens) } else { Vec::new() };
    context_used |= !turns.is_empty();
    turns.push(Message { role: Role::User, text: text.clone() });

    let pending = PendingTurn::store(&state.store, StrategyChatMessages(row.id), &text).await?;
    let request = ChatRequest { system: Some(system), messages: turns, config: GenerationConfig::default() };
    let spec = CallSpec::for_user(format!("user:{}", user.user_id), Workload::Light, request.to_body());
    let task_state = state.clone();
    let answer = api_core::run_detached(&state, None, async move {
        let reply = pending.generate(&task_state, &spec).await?;
        Ok(json!({
            "session_id": row.session_id,
            "message": reply.text,
            "message_count": earlier_count + 2,
            "context_used": context_used,
        }))
    })
    .await?;
    Ok(Json(answer))
}

/// Where strategy chat keeps its messages: token counts live in the
/// metadata (`tokens_used`), as the old app stored them.
struct StrategyChatMessages(i64);

impl Conversation for StrategyChatMessages {
    async fn add(&self, store: &Store, role: &str, text: &str, metadata: &Value, tokens: i64) -> StoreResult<i64> {
        store.add_strategy_chat_message(self.0, role, text, &with_tokens(metadata, tokens)).await
    }

    async fn finish(&self, store: &Store, id: i64, metadata: &Value, tokens: i64) -> StoreResult<()> {
        store.finish_strategy_chat_message(id, &with_tokens(metadata, tokens)).await
    }
}

fn with_tokens(metadata: &Value, tokens: i64) -> Value {
    let mut metadata = metadata.clone();
    if tokens > 0 {
        metadata["tokens_used"] = json!(tokens);
    }
    metadata
}

/// An AI summary of the conversation, kept as the session's context.
async fn summarize(
    State(state): State<AppState>,
    user: AuthUser,
    Path(session_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = session(&state, user, &session_id).await?;
    let earlier = state.store.strategy_chat_messages_page(row.id, api_core::history::HISTORY_ROWS, None).await?;
    let mut turns = history(&earlier, state.chat.history_tokens);
    if turns.is_empty() {
        return Err(ApiError::bad_request("There is nothing to summarize yet"));
    }
    turns.push(Message {
        role: Role::User,
        text: "Summarize this conversation about the strategy in a few sentences: the rules agreed so far and the \
               open questions."
            .into(),
    });
    let request = ChatRequest {
        system: Some("You summarize trading-strategy conversations faithfully and briefly.".into()),
        messages: turns,
        config: GenerationConfig::default(),
    };
    let spec = CallSpec::for_user(format!("user:{}", user.user_id), Workload::Light, request.to_body());
    let task_state = state.clone();
    let work = async move {
        let completed = task_state.gemini.generate(&spec).await.map_err(ApiError::Ai)?;
        let summary = parse_answer(&completed.body).map_err(|err| ApiError::Ai(ExecError::Rejected(err)))?.text;
        task_state.store.set_strategy_chat_summary(row.id, &summary).await?;
        Ok(json!({ "session_id": row.session_id, "summary": summary }))
    };
    Ok(Json(api_core::run_detached(&state, None, work).await?))
}

async fn clear(
    State(state): State<AppState>,
    user: AuthUser,
    Path(session_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = session(&state, user, &session_id).await?;
    let deleted = state.store.clear_strategy_chat(row.id).await?;
    Ok(Json(json!({ "message": "Chat cleared", "session_id": row.session_id, "deleted_messages": deleted })))
}

async fn deactivate(
    State(state): State<AppState>,
    user: AuthUser,
    Path(session_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = session(&state, user, &session_id).await?;
    state.store.deactivate_strategy_chat(row.id).await?;
    Ok(Json(json!({ "message": "Session deactivated", "session_id": row.session_id, "is_active": false })))
}
