//! OpenAI's chat completions under `/v1/`, translated to Gemini's native
//! `generateContent` (not Google's own OpenAI layer, whose quirks would
//! leak through) and back.
//!
//! Request: `system`/`developer` messages become `systemInstruction`;
//! images come as data URLs; assistant `tool_calls` become `functionCall`
//! parts beside the text; `tool` messages become `functionResponse` parts,
//! their function named by looking the call id up in the conversation;
//! `tools`, `tool_choice`, `max_tokens`/`max_completion_tokens`,
//! `temperature`, `top_p`, `stop`, `n` and `response_format` map onto
//! Gemini's fields.
//!
//! Answer: one choice per candidate; call ids are synthesized; the finish
//! reason is `tool_calls` when a call appeared (anywhere in a stream),
//! `content_filter` for safety stops, `length` at the token limit; usage
//! is counted once (Gemini's stream reports it cumulatively).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api_core::stream_slots::StreamSlot;
use api_core::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gemini_client::{CallSpec, ExecError, ExecStream, GeminiError};
use key_rotation::config::Workload;
use serde_json::{json, Map, Value};

use crate::auth::{caller, Caller, Refusal};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/models", get(list_models))
        .route("/chat/completions", post(chat_completions))
        .fallback(|| async { OpenAiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "Unknown request URL.") })
}

/// An error as OpenAI writes it: `{"error":{message,type,param,code}}`.
#[derive(Debug, thiserror::Error)]
#[error("{status} {message}")]
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<String>,
    code: Option<&'static str>,
    retry_after: Option<Duration>,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), param: None, code: None, retry_after: None }
    }

    fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self { param: Some(param.into()), ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }

    fn model_not_found(model: &str) -> Self {
        Self {
            code: Some("model_not_found"),
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist or you do not have access to it."),
            )
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            crate::set_retry_after(&mut response, wait);
        }
        response
    }
}

impl From<Refusal> for OpenAiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Missing | Refusal::Invalid => Self {
                code: Some("invalid_api_key"),
                ..Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", refusal.message())
            },
            Refusal::Unavailable => Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", refusal.message()),
        }
    }
}

impl From<ExecError> for OpenAiError {
    fn from(err: ExecError) -> Self {
        let message = format!("{}.", err.public_message());
        match err {
            ExecError::NoKeyForModel(model) | ExecError::Rejected(GeminiError::ModelNotFound(model)) => {
                Self::model_not_found(&model)
            }
            ExecError::UserLimited { retry_after } | ExecError::PoolFull { retry_after } => Self {
                code: Some("rate_limit_exceeded"),
                retry_after: Some(retry_after),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "requests", message)
            },
            ExecError::TooLarge { .. } => {
                Self { code: Some("context_length_exceeded"), ..Self::invalid("messages", message) }
            }
            ExecError::Rejected(GeminiError::BadRequest { status, body, .. }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let upstream = body["error"]["message"].as_str().unwrap_or(&message).to_string();
                Self::new(status, "invalid_request_error", upstream)
            }
            ExecError::Rejected(_) => Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message),
            ExecError::DeadlineExceeded | ExecError::Upstream { last: GeminiError::TimedOut, .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message)
            }
            ExecError::NoKeys | ExecError::Unusable | ExecError::Backend(_) | ExecError::Upstream { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            }
        }
    }
}

/// The caller, or OpenAI's refusal.
pub struct OpenAiCaller(pub Caller);

impl FromRequestParts<AppState> for OpenAiCaller {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(OpenAiCaller(caller(state, parts).await?))
    }
}

async fn list_models(State(state): State<AppState>, OpenAiCaller(_): OpenAiCaller) -> Json<Value> {
    let data: Vec<Value> = crate::google::served_models(&state)
        .into_iter()
        .map(|model| json!({"id": model, "object": "model", "created": 0, "owned_by": "google"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{:024x}", rand::random::<u128>() >> 32)
}

async fn chat_completions(
    State(state): State<AppState>,
    OpenAiCaller(caller): OpenAiCaller,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let request: Value = serde_json::from_slice(&body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| OpenAiError::invalid("body", "We could not parse the JSON body of your request."))?;
    let model = request["model"]
        .as_str()
        .filter(|model| !model.is_empty())
        .ok_or_else(|| OpenAiError::invalid("model", "you must provide a model parameter"))?
        .to_string();
    let gemini_body = translate_request(&request)?;
    let spec = CallSpec {
        user: Some(caller.fair_use_key()),
        api_token: Some(caller.token_id),
        sticky: false,
        workload: Workload::Light,
        model: Some(model.clone()),
        allow_spill: false,
        body: gemini_body,
        deadline: None,
    };
    if request["stream"].as_bool() == Some(true) {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        // `USER_MAX_STREAMS`, as for the app's streams; the slot lives as
        // long as the response body.
        let slot = state.stream_slots.acquire(caller.user_id).map_err(|err| OpenAiError {
            code: Some("too_many_streams"),
            ..OpenAiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", format!("{err}: close one first."))
        })?;
        let stream = state.gemini.stream_as_is(&spec).await?;
        return Ok(sse(stream, slot, model, include_usage, state.chat.stream_idle_timeout));
    }
    let completed = state.gemini.generate_as_is(&spec).await?;
    Ok(crate::answered(completion(&completed.body, &model), completed.upstream))
}

// ---- request ------------------------------------------------------------

/// The Gemini `generateContent` body for an OpenAI chat request.
fn translate_request(request: &Value) -> Result<Value, OpenAiError> {
    let messages = request["messages"]
        .as_array()
        .filter(|messages| !messages.is_empty())
        .ok_or_else(|| OpenAiError::invalid("messages", "messages must be a non-empty array"))?;
    // Call id → function name, from the assistant turns, for tool results.
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        let (gemini_role, parts) = match role {
            "system" | "developer" => {
                system.extend(content_parts(&message["content"], i)?);
                continue;
            }
            "user" => ("user", content_parts(&message["content"], i)?),
            "assistant" => {
                let mut parts =
                    if message["content"].is_null() { Vec::new() } else { content_parts(&message["content"], i)? };
                for (j, call) in message["tool_calls"].as_array().into_iter().flatten().enumerate() {
                    let param = format!("messages[{i}].tool_calls[{j}]");
                    let name = call["function"]["name"]
                        .as_str()
                        .ok_or_else(|| OpenAiError::invalid(&param, "a tool call needs function.name"))?;
                    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let args: Value = serde_json::from_str(if arguments.trim().is_empty() { "{}" } else { arguments })
                        .map_err(|_| OpenAiError::invalid(&param, "function.arguments must be a JSON string"))?;
                    if let Some(id) = call["id"].as_str() {
                        call_names.insert(id.to_string(), name.to_string());
                    }
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                ("model", parts)
            }
            "tool" | "function" => {
                let name = match role {
                    "function" => message["name"].as_str().map(str::to_string),
                    _ => message["tool_call_id"].as_str().and_then(|id| call_names.get(id).cloned()),
                }
                .ok_or_else(|| {
                    OpenAiError::invalid(
                        format!("messages[{i}].tool_call_id"),
                        "tool_call_id does not name a tool call of an earlier assistant message",
                    )
                })?;
                let text = text_of(&message["content"]);
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(object)) => Value::Object(object),
                    Ok(other) => json!({ "content": other }),
                    Err(_) => json!({ "content": text }),
                };
                ("user", vec![json!({"functionResponse": {"name": name, "response": response}})])
            }
            other => {
                return Err(OpenAiError::invalid(format!("messages[{i}].role"), format!("unsupported role `{other}`")))
            }
        };
        // Gemini wants turns to alternate: consecutive turns of one role join.
        match contents.last_mut() {
            Some(last) if last["role"] == gemini_role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.extend(parts);
                }
            }
            _ => contents.push(json!({"role": gemini_role, "parts": parts})),
        }
    }
    if contents.is_empty() {
        return Err(OpenAiError::invalid("messages", "messages must hold at least one user message"));
    }
    let mut body = json!({ "contents": contents });
    if !system.is_empty() {
        body["systemInstruction"] = json!({ "parts": system });
    }
    if let Some(tools) = request["tools"].as_array().filter(|tools| !tools.is_empty()) {
        let declarations: Vec<Value> = tools
            .iter()
            .filter(|tool| tool["type"].as_str().unwrap_or("function") == "function")
            .map(|tool| {
                let function = &tool["function"];
                let mut declaration = json!({ "name": function["name"] });
                if let Some(description) = function["description"].as_str() {
                    declaration["description"] = json!(description);
                }
                if function["parameters"].is_object() {
                    declaration["parametersJsonSchema"] = function["parameters"].clone();
                }
                declaration
            })
            .collect();
        body["tools"] = json!([{ "functionDeclarations": declarations }]);
    }
    if let Some(config) = tool_config(&request["tool_choice"])? {
        body["toolConfig"] = config;
    }
    let config = generation_config(request)?;
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }
    Ok(body)
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|part| part["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// A message's content as Gemini parts: text, and images as data URLs.
fn content_parts(content: &Value, i: usize) -> Result<Vec<Value>, OpenAiError> {
    match content {
        Value::String(text) => Ok(vec![json!({ "text": text })]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match part["type"].as_str() {
                Some("text") => Ok(json!({ "text": part["text"].as_str().unwrap_or_default() })),
                Some("image_url") => {
                    let url =
                        part["image_url"]["url"].as_str().or_else(|| part["image_url"].as_str()).unwrap_or_default();
                    let param = format!("messages[{i}].content[{j}].image_url");
                    let (mime, data) =
                        url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")).ok_or_else(|| {
                            OpenAiError::invalid(&param, "images must be data URLs (data:<mime>;base64,<data>)")
                        })?;
                    Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
                }
                other => Err(OpenAiError::invalid(
                    format!("messages[{i}].content[{j}].type"),
                    format!("unsupported content part type {}", other.unwrap_or("(none)")),
                )),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(OpenAiError::invalid(format!("messages[{i}].content"), "content must be a string or an array")),
    }
}

fn tool_config(choice: &Value) -> Result<Option<Value>, OpenAiError> {
    let (mode, allowed) = match choice {
        Value::Null => return Ok(None),
        Value::String(choice) => match choice.as_str() {
            "none" => ("NONE", None),
            "auto" => ("AUTO", None),
            "required" => ("ANY", None),
            _ => return Err(OpenAiError::invalid("tool_choice", "expected none, auto, required or a function")),
        },
        Value::Object(_) => {
            let name = choice["function"]["name"]
                .as_str()
                .ok_or_else(|| OpenAiError::invalid("tool_choice", "a named tool choice needs function.name"))?;
            ("ANY", Some(name))
        }
        _ => return Err(OpenAiError::invalid("tool_choice", "expected a string or an object")),
    };
    let mut calling = json!({ "mode": mode });
    if let Some(name) = allowed {
        calling["allowedFunctionNames"] = json!([name]);
    }
    Ok(Some(json!({ "functionCallingConfig": calling })))
}

fn generation_config(request: &Value) -> Result<Map<String, Value>, OpenAiError> {
    let mut config = Map::new();
    let number = |name: &str| -> Result<Option<f64>, OpenAiError> {
        match &request[name] {
            Value::Null => Ok(None),
            Value::Number(n) => Ok(n.as_f64()),
            _ => Err(OpenAiError::invalid(name, format!("{name} must be a number"))),
        }
    };
    let limit = request.get("max_completion_tokens").filter(|v| !v.is_null()).or_else(|| request.get("max_tokens"));
    if let Some(limit) = limit.filter(|v| !v.is_null()) {
        let limit = limit
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| OpenAiError::invalid("max_tokens", "max_tokens must be a positive integer"))?;
        config.insert("maxOutputTokens".into(), json!(limit));
    }
    if let Some(temperature) = number("temperature")? {
        config.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = number("top_p")? {
        config.insert("topP".into(), json!(top_p));
    }
    match &request["stop"] {
        Value::Null => {}
        Value::String(stop) => {
            config.insert("stopSequences".into(), json!([stop]));
        }
        Value::Array(stops) if stops.iter().all(Value::is_string) => {
            config.insert("stopSequences".into(), json!(stops));
        }
        _ => return Err(OpenAiError::invalid("stop", "stop must be a string or an array of strings")),
    }
    if let Some(n) = request.get("n").filter(|v| !v.is_null()) {
        let n =
            n.as_u64().filter(|n| (1..=8).contains(n)).ok_or_else(|| OpenAiError::invalid("n", "n must be 1 to 8"))?;
        if n > 1 {
            config.insert("candidateCount".into(), json!(n));
        }
    }
    match request["response_format"]["type"].as_str() {
        None | Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            let schema = &request["response_format"]["json_schema"]["schema"];
            if !schema.is_object() {
                return Err(OpenAiError::invalid("response_format", "json_schema needs a schema object"));
            }
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseSchema".into(), gemini_schema(schema));
        }
        Some(other) => {
            return Err(OpenAiError::invalid("response_format", format!("unsupported response_format type {other}")))
        }
    }
    Ok(config)
}

/// A JSON Schema narrowed to the OpenAPI subset `responseSchema` takes.
fn gemini_schema(schema: &Value) -> Value {
    const KEPT: [&str; 16] = [
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "items",
        "anyOf",
        "minimum",
        "maximum",
        "title",
        "propertyOrdering",
        "pattern",
    ];
    match schema {
        Value::Object(object) => {
            let mut kept = Map::new();
            for (key, value) in object {
                if !KEPT.contains(&key.as_str()) {
                    continue;
                }
                let value = match key.as_str() {
                    "properties" => Value::Object(
                        value.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), gemini_schema(v))).collect(),
                    ),
                    "items" => gemini_schema(value),
                    "anyOf" => Value::Array(value.as_array().into_iter().flatten().map(gemini_schema).collect()),
                    _ => value.clone(),
                };
                kept.insert(key.clone(), value);
            }
            Value::Object(kept)
        }
        other => other.clone(),
    }
}

// ---- answer -------------------------------------------------------------

fn finish_reason(gemini: Option<&str>, called: bool) -> Option<&'static str> {
    let reason = gemini?;
    Some(match reason {
        _ if called => "tool_calls",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ => "stop",
    })
}

/// A candidate's text and its calls (with synthesized ids).
fn candidate_message(candidate: &Value) -> (Option<String>, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate["content"]["parts"].as_array().into_iter().flatten() {
        if part["thought"].as_bool() == Some(true) {
            continue;
        }
        if let Some(piece) = part["text"].as_str() {
            text.push_str(piece);
        }
        if let Some(call) = part.get("functionCall") {
            calls.push(json!({
                "id": random_id("call_"),
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": call.get("args").cloned().unwrap_or_else(|| json!({})).to_string(),
                },
            }));
        }
    }
    ((!text.is_empty()).then_some(text), calls)
}

fn usage(gemini: &Value) -> Value {
    let metadata = &gemini["usageMetadata"];
    let prompt = metadata["promptTokenCount"].as_u64().unwrap_or(0);
    let completion =
        metadata["candidatesTokenCount"].as_u64().unwrap_or(0) + metadata["thoughtsTokenCount"].as_u64().unwrap_or(0);
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// A whole `chat.completion`.
fn completion(gemini: &Value, model: &str) -> Value {
    let candidates = gemini["candidates"].as_array().cloned().unwrap_or_default();
    let choices: Vec<Value> = if candidates.is_empty() {
        // A blocked prompt: no candidate, one filtered choice.
        vec![json!({
            "index": 0,
            "message": { "role": "assistant", "content": null, "refusal": null },
            "finish_reason": "content_filter",
            "logprobs": null,
        })]
    } else {
        candidates
            .iter()
            .enumerate()
            .map(|(i, candidate)| {
                let (text, calls) = candidate_message(candidate);
                let mut message = json!({ "role": "assistant", "content": text, "refusal": null });
                if !calls.is_empty() {
                    message["tool_calls"] = json!(calls);
                }
                let reason = finish_reason(candidate["finishReason"].as_str().or(Some("STOP")), !calls.is_empty());
                json!({
                    "index": candidate["index"].as_u64().unwrap_or(i as u64),
                    "message": message,
                    "finish_reason": reason,
                    "logprobs": null,
                })
            })
            .collect()
    };
    json!({
        "id": random_id("chatcmpl-"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": choices,
        "usage": usage(gemini),
        "system_fingerprint": null,
    })
}

/// What a stream has said so far, per choice.
struct StreamState {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Choices whose role went out, and which have called a function.
    started: Vec<bool>,
    called: Vec<bool>,
    /// Gemini's usage is cumulative: the last one seen is the total.
    last_usage: Option<Value>,
    finished: bool,
}

impl StreamState {
    /// One `chat.completion.chunk` event with these choices (and usage).
    fn event(&self, choices: &[Value], usage: Option<&Value>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage.clone();
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    fn chunk(&self, choice: &Value) -> Bytes {
        self.event(std::slice::from_ref(choice), None)
    }

    fn slot(&mut self, index: usize) {
        if self.started.len() <= index {
            self.started.resize(index + 1, false);
            self.called.resize(index + 1, false);
        }
    }

    /// The OpenAI chunks for one Gemini chunk.
    fn translate(&mut self, gemini: &Value) -> Vec<Bytes> {
        if gemini.get("usageMetadata").is_some() {
            self.last_usage = Some(usage(gemini));
        }
        let mut out = Vec::new();
        let candidates = gemini["candidates"].as_array().cloned().unwrap_or_default();
        if candidates.is_empty() && gemini["promptFeedback"]["blockReason"].is_string() {
            self.slot(0);
            let delta = json!({ "role": "assistant", "content": null });
            out.push(
                self.chunk(&json!({"index": 0, "delta": delta, "finish_reason": "content_filter", "logprobs": null})),
            );
            self.finished = true;
            return out;
        }
        for (position, candidate) in candidates.iter().enumerate() {
            let index = candidate["index"].as_u64().map_or(position, |i| i as usize);
            self.slot(index);
            let (text, calls) = candidate_message(candidate);
            let mut delta = Map::new();
            if !self.started[index] {
                delta.insert("role".into(), json!("assistant"));
                self.started[index] = true;
            }
            if let Some(text) = text {
                delta.insert("content".into(), json!(text));
            } else if delta.contains_key("role") {
                delta.insert("content".into(), json!(""));
            }
            if !calls.is_empty() {
                self.called[index] = true;
                let calls: Vec<Value> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut call)| {
                        call["index"] = json!(i);
                        call
                    })
                    .collect();
                delta.insert("tool_calls".into(), json!(calls));
            }
            let reason = finish_reason(candidate["finishReason"].as_str(), self.called[index]);
            if !delta.is_empty() || reason.is_some() {
                out.push(self.chunk(&json!({
                    "index": index,
                    "delta": Value::Object(delta),
                    "finish_reason": reason,
                    "logprobs": null,
                })));
            }
        }
        out
    }

    /// The usage chunk and `[DONE]`.
    fn close(&self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.include_usage {
            let none = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
            out.push(self.event(&[], Some(self.last_usage.as_ref().unwrap_or(&none))));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
}

/// A streamed completion: OpenAI's SSE chunks, then `[DONE]`. Nothing is
/// resent after the first byte: a failure ends the stream with an error
/// event, as OpenAI's API does.
fn sse(stream: ExecStream, slot: StreamSlot, model: String, include_usage: bool, idle: Duration) -> Response {
    let state = StreamState {
        id: random_id("chatcmpl-"),
        created: unix_now(),
        model,
        include_usage,
        started: Vec::new(),
        called: Vec::new(),
        last_usage: None,
        finished: false,
    };
    let events = futures::stream::unfold(Some((stream, state, slot)), move |running| async move {
        let (mut stream, mut state, slot) = running?;
        let batch = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                let mut batch = state.translate(&chunk);
                if state.finished {
                    batch.extend(state.close());
                    return Some((futures::stream::iter(batch.into_iter().map(Ok::<_, Infallible>)), None));
                }
                batch
            }
            Ok(None) => {
                return Some((futures::stream::iter(state.close().into_iter().map(Ok)), None));
            }
            Ok(Some(Err(_))) | Err(_) => {
                let error =
                    OpenAiError::new(StatusCode::BAD_GATEWAY, "server_error", "The AI service failed mid-stream.");
                let batch = vec![Bytes::from(format!("data: {}\n\n", error.body()))];
                return Some((futures::stream::iter(batch.into_iter().map(Ok)), None));
            }
        };
        Some((futures::stream::iter(batch.into_iter().map(Ok)), Some((stream, state, slot))))
    });
    use futures::StreamExt;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events.flatten()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tools_images_and_system_turns_translates() {
        let request = json!({
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use tools."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image, and the weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ]},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 3}"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "max_completion_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": "END", "n": 2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                "type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}}}},
        });
        let body = translate_request(&request).unwrap();
        assert_eq!(body["systemInstruction"]["parts"], json!([{"text": "Be brief."}, {"text": "Use tools."}]));
        assert_eq!(body["contents"][0]["parts"][1]["inlineData"]["mimeType"], "image/png");
        assert_eq!(body["contents"][1]["role"], "model");
        assert_eq!(body["contents"][1]["parts"][0]["text"], "Let me look.");
        assert_eq!(
            body["contents"][1]["parts"][1]["functionCall"],
            json!({"name": "weather", "args": {"city": "Oslo"}})
        );
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "weather", "response": {"temp": 3}})
        );
        assert_eq!(
            body["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY", "allowedFunctionNames": ["weather"]})
        );
        let config = &body["generationConfig"];
        assert_eq!((config["maxOutputTokens"].as_u64(), config["candidateCount"].as_u64()), (Some(100), Some(2)));
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert!(config["responseSchema"].get("additionalProperties").is_none(), "{config}");
    }

    #[test]
    fn a_tool_result_for_an_unknown_call_is_refused_with_its_param() {
        let request = json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_nowhere", "content": "x"},
        ]});
        let err = translate_request(&request).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[1].tool_call_id"));
    }

    #[test]
    fn a_stream_counts_usage_once_and_says_tool_calls_when_one_appeared() {
        let mut state = StreamState {
            id: "c".into(),
            created: 0,
            model: "m".into(),
            include_usage: true,
            started: Vec::new(),
            called: Vec::new(),
            last_usage: None,
            finished: false,
        };
        let call = json!({"candidates": [{"index": 0, "content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2}});
        let last = json!({"candidates": [{"index": 0, "content": {"parts": [{"text": "done"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4}});
        let mut text = String::new();
        for chunk in [call, last] {
            for bytes in state.translate(&chunk) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        for bytes in state.close() {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        assert!(text.contains("\"finish_reason\":\"tool_calls\""), "{text}");
        assert!(text.contains("\"total_tokens\":9") && !text.contains("\"total_tokens\":16"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
}
