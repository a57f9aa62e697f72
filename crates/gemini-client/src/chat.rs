//! The common case, typed: a system instruction, a conversation and a
//! generation config in; text and usage out.

use serde_json::{json, Value};

use crate::classify::GeminiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Model,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    pub temperature: Option<f64>,
    pub max_output_tokens: Option<u32>,
    /// e.g. `application/json`, with `response_schema` for a shape.
    pub response_mime_type: Option<String>,
    pub response_schema: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub config: GenerationConfig,
}

impl ChatRequest {
    /// The `GenerateContentRequest` JSON.
    pub fn to_body(&self) -> Value {
        let contents: Vec<Value> = self
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::User => "user",
                    Role::Model => "model",
                };
                json!({ "role": role, "parts": [{ "text": m.text }] })
            })
            .collect();
        let mut body = json!({ "contents": contents });
        if let Some(system) = &self.system {
            body["systemInstruction"] = json!({ "parts": [{ "text": system }] });
        }
        let mut config = serde_json::Map::new();
        if let Some(t) = self.config.temperature {
            config.insert("temperature".into(), json!(t));
        }
        if let Some(n) = self.config.max_output_tokens {
            config.insert("maxOutputTokens".into(), json!(n));
        }
        if let Some(mime) = &self.config.response_mime_type {
            config.insert("responseMimeType".into(), json!(mime));
        }
        if let Some(schema) = &self.config.response_schema {
            config.insert("responseSchema".into(), schema.clone());
        }
        if !config.is_empty() {
            body["generationConfig"] = Value::Object(config);
        }
        body
    }
}

/// ⌈characters / 4⌉ of every text in a request body: the estimate reserved
/// at admission and reconciled with `usageMetadata.promptTokenCount`.
pub fn estimate_tokens(body: &Value) -> u64 {
    fn chars(value: &Value) -> u64 {
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| if k == "text" { v.as_str().map_or(0, |s| s.chars().count() as u64) } else { chars(v) })
                .sum(),
            Value::Array(items) => items.iter().map(chars).sum(),
            _ => 0,
        }
    }
    let contents = chars(&body["contents"]);
    let system = chars(&body["systemInstruction"]) + chars(&body["system_instruction"]);
    (contents + system).div_ceil(4)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatResponse {
    pub text: String,
    pub prompt_tokens: Option<u64>,
    pub candidate_tokens: Option<u64>,
    pub finish_reason: Option<String>,
}

/// The most recent of `turns` (oldest first) whose text fits `budget`
/// tokens, at about four characters a token; oldest first.
pub fn recent_turns(turns: Vec<Message>, budget: u64) -> Vec<Message> {
    let mut kept = Vec::new();
    let mut spent = 0;
    for turn in turns.into_iter().rev() {
        let cost = (turn.text.chars().count() as u64).div_ceil(4);
        if spent + cost > budget {
            break;
        }
        spent += cost;
        kept.push(turn);
    }
    kept.reverse();
    kept
}

/// Reads the text and usage of a `GenerateContentResponse`.
pub fn parse_answer(body: &Value) -> Result<ChatResponse, GeminiError> {
    let candidate = body["candidates"].get(0).ok_or(GeminiError::Empty)?;
    let text: String = candidate["content"]["parts"]
        .as_array()
        .map(|parts| parts.iter().filter_map(|p| p["text"].as_str()).collect())
        .unwrap_or_default();
    let usage = &body["usageMetadata"];
    Ok(ChatResponse {
        text,
        prompt_tokens: usage["promptTokenCount"].as_u64(),
        candidate_tokens: usage["candidatesTokenCount"].as_u64(),
        finish_reason: candidate["finishReason"].as_str().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_becomes_googles_json() {
        let request = ChatRequest {
            system: Some("Be brief.".into()),
            messages: vec![
                Message { role: Role::User, text: "hi".into() },
                Message { role: Role::Model, text: "hello".into() },
                Message { role: Role::User, text: "and RSI?".into() },
            ],
            config: GenerationConfig {
                temperature: Some(0.3),
                response_mime_type: Some("application/json".into()),
                ..Default::default()
            },
        };
        let body = request.to_body();
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(body["contents"][1]["role"], "model");
        assert_eq!(body["contents"][2]["parts"][0]["text"], "and RSI?");
        assert_eq!(body["generationConfig"]["responseMimeType"], "application/json");
        // "Be brief." (9) + "hi" (2) + "hello" (5) + "and RSI?" (8) = 24 chars -> 6 tokens.
        assert_eq!(estimate_tokens(&body), 6);
    }
}
