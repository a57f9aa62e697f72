//! `POST /api/auth/chat/`: one turn of a conversation through the key pool.
//!
//! The user's message is stored before the upstream call, so nothing is
//! lost: on failure it is marked `metadata.status = "failed"` and the answer
//! names the cause (429 with `Retry-After`, 502/504, 503).
//!
//! With `?stream=true` or `Accept: text/event-stream` the reply streams as
//! `delta` events and ends with `done` (the non-streaming body). Failures
//! before the stream opens keep their status codes; later ones end it with
//! an `error` event. A stream the client leaves, that upstream abandons or
//! that shutdown cuts short is saved as far as it got, marked
//! `metadata.status = "incomplete"` with the reason.

use api_core::stream_slots::StreamSlot;
use api_core::streaming::{self, SendFailed};
use api_core::turn::{Conversation, PendingTurn, Reply};
use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, Begun, FieldErrors, Idempotency};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gemini_client::{CallSpec, ChatRequest, ExecStream, GenerationConfig, Message, Role};
use key_rotation::config::Workload;
use serde::Deserialize;
use serde_json::{json, Value};
use store::conversations::{ChatMessageRow, ChatSessionFields, ChatSessionRow};
use store::{Store, StoreResult};
use tokio::sync::mpsc;

pub const DEFAULT_CHAT_TITLE: &str = "Strategy Development Session";

const ASSISTANT_ROLE: &str = "You are AlgoAgent, an assistant for developing trading strategies. \
Ask clarifying questions when the goal is unclear, suggest approaches, write backtesting.py code \
when the strategy is well defined, and explain concepts plainly.";

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/auth/chat", post(chat))
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct ChatTurn {
    message: String,
    session_id: Option<String>,
    ai_context_id: Option<i64>,
    title: Option<String>,
}

/// The most recent completed turns that fit the budget, oldest first.
fn history_within_budget(messages: &[ChatMessageRow], budget: u64) -> Vec<Message> {
    api_core::history::history_within_budget(
        messages.iter().map(|row| (row.role.as_str(), row.content.as_str(), &row.metadata.0)),
        budget,
    )
}

/// `POST /api/auth/chat/`, with an optional `Idempotency-Key`: a retry with
/// the same key and body gets the first answer instead of spending quota
/// twice and duplicating messages. An attempt that fails, or a stream that
/// ends incomplete, releases the key.
async fn chat(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ApiJson(turn): ApiJson<ChatTurn>,
) -> ApiResult<Response> {
    let stream = streaming::wants_stream(query.as_deref(), &headers)?;
    let claim = match Idempotency::begin(&state, user.user_id, &headers, "chat", &turn, stream).await? {
        Begun::Run(claim) => claim,
        Begun::Replay(answer) => return Ok(answer),
    };
    // A stream's slot is taken before anything is stored or sent upstream.
    let slot = match stream.then(|| state.stream_slots.acquire(user.user_id)).transpose() {
        Ok(slot) => slot,
        Err(err) => {
            claim.release(&state).await?;
            return Err(err);
        }
    };
    let prepared = match PreparedTurn::prepare(&state, user, turn).await {
        Ok(prepared) => prepared,
        Err(err) => {
            claim.release(&state).await?;
            return Err(err);
        }
    };
    if let Some(slot) = slot {
        let opened = open_stream(&state, prepared, claim.clone(), slot).await;
        if opened.is_err() {
            claim.release(&state).await?;
        }
        return opened;
    }
    let task_state = state.clone();
    let answer = api_core::run_detached(&state, Some(claim), async move { prepared.answer(&task_state).await }).await?;
    Ok(Json(answer).into_response())
}

/// Where this chat keeps its messages.
struct ChatSessionMessages(i64);

impl Conversation for ChatSessionMessages {
    async fn add(&self, store: &Store, role: &str, text: &str, metadata: &Value, tokens: i64) -> StoreResult<i64> {
        Ok(store.add_chat_message(self.0, role, text, metadata, tokens).await?.id)
    }

    async fn finish(&self, store: &Store, id: i64, metadata: &Value, tokens: i64) -> StoreResult<()> {
        store.finish_chat_message(id, metadata, tokens).await
    }
}

/// A turn whose user message is stored and whose upstream call is ready.
struct PreparedTurn {
    session: ChatSessionRow,
    text: String,
    pending: PendingTurn<ChatSessionMessages>,
    spec: CallSpec,
}

impl PreparedTurn {
    async fn prepare(state: &AppState, user: AuthUser, turn: ChatTurn) -> ApiResult<PreparedTurn> {
        let limits = &state.chat;
        let text = turn.message.trim().to_string();
        let mut errors = FieldErrors::new();
        if text.is_empty() {
            errors.add("message", "This field may not be blank.");
        } else if text.chars().count() > limits.max_message_chars {
            errors
                .add("message", format!("Ensure this field has no more than {} characters.", limits.max_message_chars));
        }
        errors.into_result()?;

        let session = match &turn.session_id {
            Some(public_id) => {
                state.store.chat_session_by_public_id(public_id, user.user_id).await?.ok_or(ApiError::NotFound)?
            }
            None => {
                let title =
                    turn.title.as_deref().map(str::trim).filter(|t| !t.is_empty()).unwrap_or(DEFAULT_CHAT_TITLE);
                let fields = ChatSessionFields { title: title.to_string(), ai_context_id: None, is_active: true };
                state.store.create_chat_session(user.user_id, &uuid::Uuid::new_v4().to_string(), &fields).await?
            }
        };
        api_core::turn::check_room(state, session.message_count)?;
        let mut context_id = session.ai_context_id;
        if let Some(id) = turn.ai_context_id {
            crate::sessions::attachable_context(state, user.user_id, id, "ai_context_id").await?;
            if context_id != Some(id) {
                let fields = ChatSessionFields {
                    title: session.title.clone(),
                    ai_context_id: Some(id),
                    is_active: session.is_active,
                };
                state.store.update_chat_session(session.id, user.user_id, &fields).await?;
                context_id = Some(id);
            }
        }

        let system = system_instruction(state, user.user_id, context_id).await?;
        let history = state.store.recent_chat_messages(session.id, api_core::history::HISTORY_ROWS).await?;
        let mut messages = history_within_budget(&history, limits.history_tokens);
        messages.push(Message { role: Role::User, text: text.clone() });

        let pending = PendingTurn::store(&state.store, ChatSessionMessages(session.id), &text).await?;
        let request = ChatRequest { system: Some(system), messages, config: GenerationConfig::default() };
        let spec = CallSpec::for_user(format!("user:{}", user.user_id), Workload::Light, request.to_body());
        Ok(PreparedTurn { session, text, pending, spec })
    }

    /// The non-streaming answer.
    async fn answer(self, state: &AppState) -> ApiResult<Value> {
        let reply = self.pending.generate(state, &self.spec).await?;
        Ok(self.body(&reply))
    }

    fn body(&self, reply: &Reply) -> Value {
        json!({
            "session_id": self.session.session_id,
            "title": self.session.title,
            "user_message": self.text,
            "ai_response": reply.text,
        })
    }
}

async fn system_instruction(state: &AppState, user_id: i64, context_id: Option<i64>) -> ApiResult<String> {
    let mut system = ASSISTANT_ROLE.to_string();
    let Some(id) = context_id else {
        return Ok(system);
    };
    let Some(context) = state.store.ai_context(id, user_id).await? else {
        return Ok(system);
    };
    if !context.instructions.trim().is_empty() {
        system.push_str(&format!("\n\nInstructions for this conversation:\n{}", context.instructions.trim()));
    }
    if let Some(profile) = state.store.profile_of_user(user_id).await? {
        if !profile.trading_goals.trim().is_empty() {
            system.push_str(&format!("\n\nThe user's trading goals: {}", profile.trading_goals.trim()));
        }
        if !profile.strategy_preferences.trim().is_empty() {
            system.push_str(&format!("\nThe user's strategy preferences: {}", profile.strategy_preferences.trim()));
        }
    }
    Ok(system)
}

/// Opens the upstream stream (failures so far keep their status codes) and
/// hands it to a relay task that outlives the response.
async fn open_stream(
    state: &AppState,
    turn: PreparedTurn,
    claim: Idempotency,
    slot: StreamSlot,
) -> ApiResult<Response> {
    let upstream = match state.gemini.stream(&turn.spec).await {
        Ok(upstream) => upstream,
        Err(err) => return Err(turn.pending.failed(&state.store, err).await),
    };
    let (events, receiver) = mpsc::channel(32);
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let state = task_state;
        claim.hold(&state, relay(&state, turn, upstream, events, &claim)).await;
        drop(slot);
    });
    Ok(streaming::response(receiver))
}

/// Why a stream stopped.
enum StreamEnd {
    Finished,
    ClientLeft,
    /// The client stopped reading: giving up frees the upstream call.
    ClientStalled,
    ShuttingDown,
    IdleTimeout,
    UpstreamFailed,
}

impl StreamEnd {
    fn reason(&self) -> &'static str {
        match self {
            StreamEnd::Finished => "finished",
            StreamEnd::ClientLeft => "client_disconnected",
            StreamEnd::ClientStalled => "client_stalled",
            StreamEnd::ShuttingDown => "server_shutdown",
            StreamEnd::IdleTimeout => "stream_idle_timeout",
            StreamEnd::UpstreamFailed => "upstream_error",
        }
    }

    /// The `error` event the client is sent, if it is still there.
    fn error_event(&self) -> Option<Event> {
        let message = match self {
            StreamEnd::Finished | StreamEnd::ClientLeft => return None,
            StreamEnd::ClientStalled => "The client stopped reading; the partial reply was saved.".to_string(),
            StreamEnd::ShuttingDown => "The server is shutting down; the partial reply was saved.".to_string(),
            StreamEnd::IdleTimeout => "Gemini stopped sending; the partial reply was saved.".to_string(),
            StreamEnd::UpstreamFailed => "Gemini failed mid-answer; the partial reply was saved.".to_string(),
        };
        Some(streaming::error(&message, self.reason()))
    }
}

async fn relay(
    state: &AppState,
    turn: PreparedTurn,
    mut upstream: ExecStream,
    events: mpsc::Sender<Event>,
    claim: &Idempotency,
) {
    let mut reply = Reply::default();
    let idle_limit = state.chat.stream_idle_timeout;
    let end = loop {
        let next = tokio::select! {
            biased;
            () = state.tasks.shutting_down() => break StreamEnd::ShuttingDown,
            () = events.closed() => break StreamEnd::ClientLeft,
            next = tokio::time::timeout(idle_limit, upstream.next()) => next,
        };
        match next {
            Err(_) => break StreamEnd::IdleTimeout,
            Ok(None) => break StreamEnd::Finished,
            Ok(Some(Err(err))) => {
                tracing::info!(error = %err, "the upstream stream failed mid-answer");
                break StreamEnd::UpstreamFailed;
            }
            Ok(Some(Ok(chunk))) => {
                let piece = reply.absorb(&chunk);
                if piece.is_empty() {
                    continue;
                }
                match streaming::send(&events, streaming::delta(&piece), &state.tasks).await {
                    Ok(()) => {}
                    Err(SendFailed::ClientGone) => break StreamEnd::ClientLeft,
                    Err(SendFailed::ClientStalled) => break StreamEnd::ClientStalled,
                    Err(SendFailed::ShuttingDown) => break StreamEnd::ShuttingDown,
                }
            }
        }
    };
    let model = upstream.model.clone();
    // Abandon upstream now: a reply nobody will read costs nothing more.
    drop(upstream);
    let metadata = match &end {
        StreamEnd::Finished => json!({ "status": "ok", "model": model }),
        other => json!({ "status": "incomplete", "reason": other.reason(), "model": model }),
    };
    let recorded = turn.pending.record(&state.store, &reply, &metadata).await.map(|()| turn.body(&reply));
    let finished = matches!(end, StreamEnd::Finished);
    tracing::info!(reason = end.reason(), chars = reply.text.chars().count(), "chat stream ended");
    let last_event = match (&recorded, end.error_event()) {
        (Err(err), _) => {
            tracing::error!(error = %err, "could not store a streamed reply");
            Some(streaming::error("The reply could not be stored.", "storage_error"))
        }
        (Ok(body), None) if finished => Some(streaming::done(body)),
        (Ok(_), event) => event,
    };
    // A failure to settle is logged; the client already has its answer.
    let _ = claim.settle(state, recorded.as_ref().ok().filter(|_| finished)).await;
    if let Some(event) = last_event {
        streaming::send_last(&events, event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use store::Json as Stored;

    fn row(role: &str, content: &str, status: &str) -> ChatMessageRow {
        ChatMessageRow {
            id: 0,
            session_id: 1,
            role: role.into(),
            content: content.into(),
            metadata: Stored(json!({ "status": status })),
            tokens_used: 0,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn history_keeps_the_most_recent_turns_that_fit_and_skips_failures() {
        let rows = [
            row("user", &"a".repeat(400), "ok"),      // 100 tokens
            row("assistant", &"b".repeat(400), "ok"), // 100
            row("user", &"c".repeat(40), "failed"),   // skipped
            row("user", &"d".repeat(200), "ok"),      // 50
            row("assistant", &"e".repeat(200), "ok"), // 50
        ];
        let kept = history_within_budget(&rows, 200);
        let texts: Vec<char> = kept.iter().map(|m| m.text.chars().next().unwrap()).collect();
        assert_eq!(texts, ['b', 'd', 'e'], "the newest that fit, oldest first");
        assert_eq!(kept[0].role, Role::Model);
        assert!(history_within_budget(&rows, 10).is_empty());
    }
}
