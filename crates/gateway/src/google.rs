//! Gemini's REST API under `/v1beta/`, as Google serves it: the models the
//! pool serves, `generateContent`, `streamGenerateContent` (SSE with
//! `alt=sse`, else one JSON array) and `countTokens`.
//!
//! The model asked for is the model called: the executor picks among the
//! keys serving it, with no spill to another family. Bodies pass through
//! as JSON values, so fields this server does not know survive; answers
//! come back as Google wrote them, a safety block included (a 200 with its
//! `finishReason`, as from Google, never counted against a key).

use std::convert::Infallible;
use std::time::Duration;

use api_core::stream_slots::StreamSlot;
use api_core::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gemini_client::{CallSpec, ExecError, ExecStream, GeminiError};
use key_rotation::config::Workload;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{caller, Caller, Refusal};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/models", get(list_models))
        .route("/models/{name}", get(get_model).post(model_method))
        .fallback(|| async { GoogleError::new(StatusCode::NOT_FOUND, "Method not found.") })
}

/// An error as Google writes it: `{"error":{code,message,status,details}}`.
#[derive(Debug, thiserror::Error)]
#[error("{code} {message}")]
pub struct GoogleError {
    code: StatusCode,
    message: String,
    details: Vec<Value>,
    retry_after: Option<Duration>,
}

impl GoogleError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Vec::new(), retry_after: None }
    }

    fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!(
                "models/{model} is not found for API version v1beta, or is not supported for generateContent. \
                 Call ListModels to see the list of available models and their supported methods."
            ),
        )
    }

    /// Google's canonical status name for an HTTP code.
    fn status(&self) -> &'static str {
        match self.code.as_u16() {
            400 | 413 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            409 => "ABORTED",
            429 => "RESOURCE_EXHAUSTED",
            499 => "CANCELLED",
            501 => "UNIMPLEMENTED",
            503 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            _ => "INTERNAL",
        }
    }

    fn body(&self) -> Value {
        json!({"error": {
            "code": self.code.as_u16(),
            "message": self.message,
            "status": self.status(),
            "details": self.details,
        }})
    }
}

impl IntoResponse for GoogleError {
    fn into_response(self) -> Response {
        let mut response = (self.code, Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            crate::set_retry_after(&mut response, wait);
        }
        response
    }
}

impl From<Refusal> for GoogleError {
    fn from(refusal: Refusal) -> Self {
        let code = match refusal {
            Refusal::Missing => StatusCode::FORBIDDEN,
            Refusal::Invalid => StatusCode::BAD_REQUEST,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut error = Self::new(code, refusal.message());
        if refusal == Refusal::Invalid {
            error.details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }));
        }
        error
    }
}

impl From<ExecError> for GoogleError {
    fn from(err: ExecError) -> Self {
        match err {
            ExecError::NoKeyForModel(model) | ExecError::Rejected(GeminiError::ModelNotFound(model)) => {
                Self::model_not_found(&model)
            }
            ExecError::TooLarge { estimated, max_tpm } => Self::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "The input token count ({estimated}) exceeds the maximum number of tokens allowed ({max_tpm})."
                ),
            ),
            ExecError::UserLimited { retry_after } | ExecError::PoolFull { retry_after } => {
                let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, err_message(&err));
                error.details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{}s", crate::retry_after_seconds(retry_after)),
                }));
                error.retry_after = Some(retry_after);
                error
            }
            // Google's own answer to the caller's request: relayed as it is.
            ExecError::Rejected(GeminiError::BadRequest { status, message, body }) => {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let mut error = Self::new(code, body["error"]["message"].as_str().unwrap_or(&message));
                if let Some(details) = body["error"]["details"].as_array() {
                    error.details.clone_from(details);
                }
                error
            }
            ExecError::DeadlineExceeded | ExecError::Upstream { last: GeminiError::TimedOut, .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, err_message(&err))
            }
            ExecError::Rejected(_) => Self::new(StatusCode::BAD_REQUEST, err_message(&err)),
            ExecError::NoKeys | ExecError::Unusable | ExecError::Backend(_) | ExecError::Upstream { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, err_message(&err))
            }
        }
    }
}

fn err_message(err: &ExecError) -> String {
    format!("{}.", err.public_message())
}

/// The caller, or Google's refusal.
pub struct GoogleCaller(pub Caller);

impl FromRequestParts<AppState> for GoogleCaller {
    type Rejection = GoogleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(GoogleCaller(caller(state, parts).await?))
    }
}

/// The models the pool serves, in the order keys.json names them.
pub(crate) fn served_models(state: &AppState) -> Vec<String> {
    let mut models: Vec<String> = Vec::new();
    for key in state.pool.config().keys.iter().filter(|key| key.active) {
        if !models.contains(&key.model) {
            models.push(key.model.clone());
        }
    }
    models
}

/// A model in Google's shape. Limits are those of the current Gemini
/// models; the pool knows names, not Google's catalogue.
fn model_resource(model: &str) -> Value {
    let display: Vec<String> = model
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
        })
        .collect();
    json!({
        "name": format!("models/{model}"),
        "version": "001",
        "displayName": display.join(" "),
        "description": format!("{} through the AlgoAgent key pool", display.join(" ")),
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": true,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    page_size: Option<usize>,
    page_token: Option<String>,
}

async fn list_models(
    State(state): State<AppState>,
    GoogleCaller(_): GoogleCaller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, GoogleError> {
    let models = served_models(&state);
    let size = query.page_size.unwrap_or(50).clamp(1, 1000);
    let start = match query.page_token.as_deref().filter(|token| !token.is_empty()) {
        None => 0,
        Some(token) => token
            .parse::<usize>()
            .ok()
            .filter(|start| *start <= models.len())
            .ok_or_else(|| GoogleError::new(StatusCode::BAD_REQUEST, "Invalid page token."))?,
    };
    let page: Vec<Value> = models.iter().skip(start).take(size).map(|model| model_resource(model)).collect();
    let mut body = json!({ "models": page });
    if start + size < models.len() {
        body["nextPageToken"] = json!((start + size).to_string());
    }
    Ok(Json(body))
}

async fn get_model(
    State(state): State<AppState>,
    GoogleCaller(_): GoogleCaller,
    Path(name): Path<String>,
) -> Result<Json<Value>, GoogleError> {
    if served_models(&state).contains(&name) {
        Ok(Json(model_resource(&name)))
    } else {
        Err(GoogleError::model_not_found(&name))
    }
}

#[derive(Debug, Deserialize)]
struct MethodQuery {
    alt: Option<String>,
}

/// `POST models/{model}:{method}`.
async fn model_method(
    State(state): State<AppState>,
    GoogleCaller(caller): GoogleCaller,
    Path(name): Path<String>,
    Query(query): Query<MethodQuery>,
    body: Bytes,
) -> Result<Response, GoogleError> {
    let Some((model, method)) = name.split_once(':') else {
        return Err(GoogleError::new(StatusCode::NOT_FOUND, format!("Method not found: POST models/{name}.")));
    };
    let body: Value = serde_json::from_slice(&body).ok().filter(Value::is_object).ok_or_else(|| {
        GoogleError::new(StatusCode::BAD_REQUEST, "Invalid JSON payload received: expected an object.")
    })?;
    let spec = CallSpec {
        user: Some(caller.fair_use_key()),
        api_token: Some(caller.token_id),
        sticky: false,
        workload: Workload::Light,
        model: Some(model.to_string()),
        allow_spill: false,
        body,
        deadline: None,
    };
    match method {
        "generateContent" => {
            let completed = state.gemini.generate_as_is(&spec).await?;
            Ok(crate::answered(completed.body, completed.upstream))
        }
        "streamGenerateContent" => {
            // `USER_MAX_STREAMS`, as for the app's streams; the slot lives
            // as long as the response body.
            let slot = state.stream_slots.acquire(caller.user_id).map_err(|err| {
                GoogleError::new(StatusCode::TOO_MANY_REQUESTS, format!("{err}: close one before opening another."))
            })?;
            let stream = state.gemini.stream_as_is(&spec).await?;
            let idle = state.chat.stream_idle_timeout;
            Ok(if query.alt.as_deref() == Some("sse") {
                sse(stream, slot, idle)
            } else {
                json_array(stream, idle).await
            })
        }
        "countTokens" => Ok(Json(state.gemini.count_tokens(&spec).await?).into_response()),
        _ => Err(GoogleError::new(StatusCode::NOT_FOUND, format!("Method not found: {method}."))),
    }
}

/// The next chunk, or the error that ends the stream.
async fn next_chunk(stream: &mut ExecStream, idle: Duration) -> Option<Result<Value, GoogleError>> {
    match tokio::time::timeout(idle, stream.next()).await {
        Err(_) => Some(Err(GoogleError::new(StatusCode::GATEWAY_TIMEOUT, "The model stopped sending."))),
        Ok(None) => None,
        Ok(Some(Ok(chunk))) => Some(Ok(chunk)),
        Ok(Some(Err(err))) => {
            tracing::info!(error = %err, "a gateway stream failed after its first chunk");
            Some(Err(GoogleError::new(StatusCode::SERVICE_UNAVAILABLE, "The AI service failed mid-stream.")))
        }
    }
}

/// `alt=sse`: each chunk as a `data:` event, as Google frames them. After
/// the first byte nothing is resent: a failure ends the stream with an
/// error event.
fn sse(stream: ExecStream, slot: StreamSlot, idle: Duration) -> Response {
    let events = futures::stream::unfold(Some((stream, slot)), move |state| async move {
        let (mut stream, slot) = state?;
        let (event, rest) = match next_chunk(&mut stream, idle).await {
            None => return None,
            Some(Ok(chunk)) => (chunk, Some((stream, slot))),
            Some(Err(err)) => (err.body(), None),
        };
        Some((Ok::<_, Infallible>(Bytes::from(format!("data: {event}\r\n\r\n"))), rest))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Without `alt=sse` Google answers one JSON array of the chunks.
async fn json_array(mut stream: ExecStream, idle: Duration) -> Response {
    let mut chunks = Vec::new();
    while let Some(chunk) = next_chunk(&mut stream, idle).await {
        match chunk {
            Ok(chunk) => chunks.push(chunk),
            Err(err) => {
                chunks.push(err.body());
                break;
            }
        }
    }
    Json(Value::Array(chunks)).into_response()
}
