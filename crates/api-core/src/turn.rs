//! One turn of a conversation through the key pool, written once for every
//! chat: the user's message is stored (`pending`) before the call, so
//! nothing is lost; then the reply is stored and the message finished, or
//! the message is marked `failed` with the cause and the client answered
//! with the executor's own status.

use std::future::Future;

use gemini_client::chat::parse_answer;
use gemini_client::{CallSpec, ExecError};
use serde_json::{json, Value};
use store::{Store, StoreResult};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Where a chat keeps its messages; each chat has tables of its own.
pub trait Conversation: Send + Sync {
    /// Stores a message of `role` and returns its id.
    fn add(
        &self,
        store: &Store,
        role: &str,
        text: &str,
        metadata: &Value,
        tokens: i64,
    ) -> impl Future<Output = StoreResult<i64>> + Send;

    /// Rewrites a stored message's metadata and token count.
    fn finish(
        &self,
        store: &Store,
        id: i64,
        metadata: &Value,
        tokens: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// What upstream produced, whole or in part.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    pub text: String,
    pub prompt_tokens: Option<u64>,
    pub reply_tokens: Option<u64>,
}

impl Reply {
    /// Adds one `GenerateContentResponse` (a whole answer or a stream
    /// chunk) and returns its new text. Usage counts are cumulative.
    pub fn absorb(&mut self, chunk: &Value) -> String {
        let usage = &chunk["usageMetadata"];
        self.prompt_tokens = usage["promptTokenCount"].as_u64().or(self.prompt_tokens);
        self.reply_tokens = usage["candidatesTokenCount"].as_u64().or(self.reply_tokens);
        let piece = parse_answer(chunk).map(|answer| answer.text).unwrap_or_default();
        self.text.push_str(&piece);
        piece
    }
}

/// Refuses a turn that would take a session past its message cap
/// (`CHAT_MAX_SESSION_MESSAGES`): the user message and its reply.
pub fn check_room(state: &AppState, message_count: i64) -> ApiResult<()> {
    let cap = state.chat.max_session_messages;
    if message_count + 2 > cap {
        return Err(ApiError::bad_request(format!(
            "This session has reached its limit of {cap} messages; start a new session"
        )));
    }
    Ok(())
}

fn stored_tokens(count: Option<u64>) -> i64 {
    i64::try_from(count.unwrap_or(0)).unwrap_or(i64::MAX)
}

/// A turn whose user message is stored and awaits its reply.
pub struct PendingTurn<C> {
    pub conversation: C,
    pub user_message: i64,
}

impl<C: Conversation> PendingTurn<C> {
    /// Stores the user's message before any upstream call.
    pub async fn store(store: &Store, conversation: C, text: &str) -> StoreResult<Self> {
        let user_message = conversation.add(store, "user", text, &json!({ "status": "pending" }), 0).await?;
        Ok(Self { conversation, user_message })
    }

    /// Marks the user's message failed with the cause; the error is what
    /// the client is answered.
    pub async fn failed(&self, store: &Store, err: ExecError) -> ApiError {
        // Clients read the stored message: the public text, not upstream's.
        tracing::info!(error = %err, "a chat turn failed");
        let metadata = json!({ "status": "failed", "error": err.public_message(), "code": err.code() });
        match self.conversation.finish(store, self.user_message, &metadata, 0).await {
            Ok(()) => ApiError::Ai(err),
            Err(store_err) => store_err.into(),
        }
    }

    /// Stores the reply (complete or not, as `metadata` says) and finishes
    /// the user's message.
    pub async fn record(&self, store: &Store, reply: &Reply, metadata: &Value) -> StoreResult<()> {
        let finished = json!({ "status": "ok" });
        self.conversation.finish(store, self.user_message, &finished, stored_tokens(reply.prompt_tokens)).await?;
        self.conversation.add(store, "assistant", &reply.text, metadata, stored_tokens(reply.reply_tokens)).await?;
        Ok(())
    }

    /// The whole non-streamed turn: the call, then the reply stored or the
    /// message marked failed.
    pub async fn generate(&self, state: &AppState, spec: &CallSpec) -> ApiResult<Reply> {
        let completed = match state.gemini.generate(spec).await {
            Ok(completed) => completed,
            Err(err) => return Err(self.failed(&state.store, err).await),
        };
        if let Err(err) = parse_answer(&completed.body) {
            return Err(self.failed(&state.store, ExecError::Rejected(err)).await);
        }
        let mut reply = Reply::default();
        reply.absorb(&completed.body);
        self.record(&state.store, &reply, &json!({ "status": "ok", "model": completed.model })).await?;
        Ok(reply)
    }
}
