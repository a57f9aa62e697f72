//! `POST /api/auth/chat/`: one turn of a conversation through the key pool.
//!
//! The user's message is stored before the upstream call, so nothing is
//! lost: on failure it is marked `metadata.status = "failed"` and the answer
//! names the cause (429 with `Retry-After`, 502/504, 503).

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gemini_client::chat::parse_answer;
use gemini_client::{CallSpec, ChatRequest, GenerationConfig, Message, Role};
use key_rotation::config::Workload;
use serde::Deserialize;
use serde_json::{json, Value};
use store::conversations::{ChatMessageRow, ChatSessionFields};
use store::idempotency::Claim;

pub const DEFAULT_CHAT_TITLE: &str = "Strategy Development Session";
pub const MAX_MESSAGE_CHARS: usize = 8_000;
pub const MAX_SESSION_MESSAGES: i64 = 500;

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

fn tokens_of(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The most recent completed turns that fit the budget, oldest first.
fn history_within_budget(messages: &[ChatMessageRow], budget: u64) -> Vec<Message> {
    let mut kept = Vec::new();
    let mut spent = 0;
    for row in messages.iter().rev() {
        if row.metadata.0["status"] == "failed" || row.role == "system" {
            continue;
        }
        let cost = tokens_of(&row.content);
        if spent + cost > budget {
            break;
        }
        spent += cost;
        let role = if row.role == "assistant" { Role::Model } else { Role::User };
        kept.push(Message { role, text: row.content.clone() });
    }
    kept.reverse();
    kept
}

const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

/// `POST /api/auth/chat/`, with an optional `Idempotency-Key`: a retry with
/// the same key and body gets the first answer instead of spending quota
/// twice and duplicating messages. A failed attempt releases the key.
async fn chat(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(turn): ApiJson<ChatTurn>,
) -> ApiResult<Response> {
    let key = match headers.get("idempotency-key") {
        None => return Ok(Json(converse(&state, user, turn).await?).into_response()),
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.chars().count() <= IDEMPOTENCY_KEY_MAX_CHARS)
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_request("Idempotency-Key must be 1 to 255 visible characters"))?,
    };
    let request = serde_json::to_string(&turn).map_err(ApiError::internal)?;
    match state.store.claim_idempotency_key(user.user_id, &key, &request).await? {
        Claim::New => {}
        Claim::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return Ok((status, Json(body)).into_response());
        }
        Claim::InProgress => {
            return Err(ApiError::Conflict("A request with this Idempotency-Key is still in progress".into()))
        }
        Claim::Mismatch => {
            return Err(ApiError::bad_request("This Idempotency-Key was already used with a different request"))
        }
    }
    match converse(&state, user, turn).await {
        Ok(body) => {
            state.store.complete_idempotency_key(user.user_id, &key, 200, &body).await?;
            Ok(Json(body).into_response())
        }
        Err(err) => {
            state.store.release_idempotency_key(user.user_id, &key).await?;
            Err(err)
        }
    }
}

async fn converse(state: &AppState, user: AuthUser, turn: ChatTurn) -> ApiResult<Value> {
    let text = turn.message.trim().to_string();
    let mut errors = FieldErrors::new();
    if text.is_empty() {
        errors.add("message", "This field may not be blank.");
    } else if text.chars().count() > MAX_MESSAGE_CHARS {
        errors.add("message", format!("Ensure this field has no more than {MAX_MESSAGE_CHARS} characters."));
    }
    errors.into_result()?;

    let session = match &turn.session_id {
        Some(public_id) => {
            state.store.chat_session_by_public_id(public_id, user.user_id).await?.ok_or(ApiError::NotFound)?
        }
        None => {
            let title = turn.title.as_deref().map(str::trim).filter(|t| !t.is_empty()).unwrap_or(DEFAULT_CHAT_TITLE);
            let fields = ChatSessionFields { title: title.to_string(), ai_context_id: None, is_active: true };
            state.store.create_chat_session(user.user_id, &uuid::Uuid::new_v4().to_string(), &fields).await?
        }
    };
    if session.message_count + 2 > MAX_SESSION_MESSAGES {
        return Err(ApiError::bad_request(format!(
            "This session has reached its limit of {MAX_SESSION_MESSAGES} messages; start a new session"
        )));
    }
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

    let mut system = ASSISTANT_ROLE.to_string();
    if let Some(id) = context_id {
        if let Some(context) = state.store.ai_context(id, user.user_id).await? {
            if !context.instructions.trim().is_empty() {
                system.push_str(&format!("\n\nInstructions for this conversation:\n{}", context.instructions.trim()));
            }
            if let Some(profile) = state.store.profile_of_user(user.user_id).await? {
                if !profile.trading_goals.trim().is_empty() {
                    system.push_str(&format!("\n\nThe user's trading goals: {}", profile.trading_goals.trim()));
                }
                if !profile.strategy_preferences.trim().is_empty() {
                    system.push_str(&format!(
                        "\nThe user's strategy preferences: {}",
                        profile.strategy_preferences.trim()
                    ));
                }
            }
        }
    }
    let history = state.store.chat_messages(session.id).await?;
    let mut messages = history_within_budget(&history, state.chat_history_tokens);
    messages.push(Message { role: Role::User, text: text.clone() });

    // Stored before the call: whatever happens upstream, the message is kept.
    let user_row = state.store.add_chat_message(session.id, "user", &text, &json!({ "status": "pending" }), 0).await?;
    let request = ChatRequest { system: Some(system), messages, config: GenerationConfig::default() };
    let spec = CallSpec {
        user: Some(format!("user:{}", user.user_id)),
        sticky: true,
        workload: Workload::Light,
        model: None,
        allow_spill: true,
        body: request.to_body(),
        deadline: None,
    };
    let completed = match state.gemini.generate(&spec).await {
        Ok(completed) => completed,
        Err(err) => {
            let metadata = json!({ "status": "failed", "error": err.to_string() });
            state.store.finish_chat_message(user_row.id, &metadata, 0).await?;
            return Err(ApiError::Ai(err));
        }
    };
    let answer = parse_answer(&completed.body).map_err(|err| ApiError::Ai(gemini_client::ExecError::Rejected(err)))?;
    let prompt_tokens = i64::try_from(answer.prompt_tokens.unwrap_or(0)).unwrap_or(i64::MAX);
    let reply_tokens = i64::try_from(answer.candidate_tokens.unwrap_or(0)).unwrap_or(i64::MAX);
    state.store.finish_chat_message(user_row.id, &json!({ "status": "ok" }), prompt_tokens).await?;
    state
        .store
        .add_chat_message(
            session.id,
            "assistant",
            &answer.text,
            &json!({ "status": "ok", "model": completed.model }),
            reply_tokens,
        )
        .await?;
    Ok(json!({
        "session_id": session.session_id,
        "title": session.title,
        "user_message": text,
        "ai_response": answer.text,
    }))
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
