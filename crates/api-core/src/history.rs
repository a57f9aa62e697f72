//! Stored conversation turns as Gemini history, shared by every chat.

use gemini_client::chat::recent_turns;
use gemini_client::{Message, Role};
use serde_json::Value;

/// How many of a conversation's newest rows are read to build its history:
/// the token budget decides what is sent, and this bounds what is read.
pub const HISTORY_ROWS: i64 = 200;

/// Stored turns `(role, content, metadata)`, oldest first, as Gemini
/// history: the answered ones (not `metadata.status = "failed"`, not
/// `system`, not empty), the most recent that fit `budget` tokens.
pub fn history_within_budget<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>,
    budget: u64,
) -> Vec<Message> {
    let turns = rows
        .into_iter()
        .filter(|(role, content, metadata)| metadata["status"] != "failed" && *role != "system" && !content.is_empty())
        .map(|(role, content, _)| Message {
            role: if role == "assistant" { Role::Model } else { Role::User },
            text: content.to_string(),
        })
        .collect();
    recent_turns(turns, budget)
}
