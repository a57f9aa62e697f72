//! The one error type of the `/api` surface and its JSON rendering.
//!
//! Bodies keep the Django REST Framework shapes existing clients parse
//! (`{"field": [..]}`, `{"error", "details"}`, `{"detail"}`) and add a stable
//! machine-readable `code`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use store::StoreError;

/// Field name → messages, rendered as DRF's `{"field": ["message"]}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn messages(&self, field: &str) -> Option<&[String]> {
        self.0.get(field).map(Vec::as_slice)
    }

    /// DRF's `max_length` message when `value` is longer than `max` characters.
    pub fn check_length(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.add(field, format!("Ensure this field has no more than {max} characters."));
        }
    }

    /// A size bound in bytes, for fields whose parsers are bounded by size
    /// (code): the message names the limit and the size seen.
    pub fn check_bytes(&mut self, field: &str, value: &str, max: usize) {
        if value.len() > max {
            self.add(field, format!("Ensure this field is at most {max} bytes long (it is {} bytes).", value.len()));
        }
    }

    /// `Ok(())` when empty, so validators can end with `errors.into_result()?`.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
        }
    }
}

/// `field: message; field: message`, for a text that names what is wrong.
impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (field, messages) in &self.0 {
            for message in messages {
                if !first {
                    f.write_str("; ")?;
                }
                write!(f, "{field}: {message}")?;
                first = false;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed: {0:?}")]
    Validation(FieldErrors),
    #[error("bad request: {message}")]
    BadRequest { message: String, details: Option<String> },
    /// A 400 whose body is a whole verdict the client needs, such as a
    /// failed strategy validation with its issues. It must be an object.
    #[error("rejected: {0}")]
    Rejected(Value),
    #[error("authentication credentials were not provided")]
    NotAuthenticated,
    #[error("token not valid")]
    TokenNotValid,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("permission denied")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("throttled for {retry_after:?}")]
    Throttled { retry_after: Duration },
    /// The user already holds `limit` event streams open.
    #[error("too many open streams (at most {limit})")]
    TooManyStreams { limit: u32 },
    #[error("request timed out")]
    Timeout,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Too much work of one kind at once (password hashing): 503 with a
    /// `Retry-After`, never an unbounded queue.
    #[error("busy; retry after {retry_after:?}")]
    Busy { retry_after: Duration },
    /// An AI call that produced no answer: the executor's error, rendered
    /// with its own status (429 with `Retry-After`, 413, 502, 503, 504, or
    /// the caller's own 4xx) and a body naming the cause.
    #[error("AI call failed: {0}")]
    Ai(gemini_client::ExecError),
    /// Anything the client did not cause. Logged in full, answered generically.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest { message: message.into(), details: None }
    }

    pub fn bad_request_with_details(message: impl Into<String>, details: impl Into<String>) -> Self {
        ApiError::BadRequest { message: message.into(), details: Some(details.into()) }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest { .. } | ApiError::Rejected(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAuthenticated | ApiError::TokenNotValid | ApiError::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Throttled { .. } | ApiError::TooManyStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Ai(err) => StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code clients may switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "invalid",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Rejected(_) => "rejected",
            ApiError::NotAuthenticated => "not_authenticated",
            ApiError::TokenNotValid => "token_not_valid",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Forbidden => "permission_denied",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Throttled { .. } => "throttled",
            ApiError::TooManyStreams { .. } => "too_many_streams",
            ApiError::Timeout => "request_timeout",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Busy { .. } => "busy",
            ApiError::Ai(err) => err.code(),
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The error's message as the client sees it, for answers that carry
    /// a failure inside a success (an interrupted fix loop, say).
    pub fn public_message(&self) -> String {
        let body = self.body();
        body["error"].as_str().or(body["detail"].as_str()).unwrap_or(self.code()).to_string()
    }

    /// The body as one line of text, for channels without a status line
    /// or JSON errors of their own (a WebSocket's `error` message).
    pub fn message(&self) -> String {
        if let ApiError::Validation(fields) = self {
            return fields
                .0
                .iter()
                .map(|(field, messages)| format!("{field}: {}", messages.join(" ")))
                .collect::<Vec<_>>()
                .join("; ");
        }
        let body = self.body();
        let text = body["error"].as_str().or(body["detail"].as_str()).map_or_else(|| self.to_string(), str::to_string);
        match body["details"].as_str() {
            Some(details) => format!("{text} ({details})"),
            None => text,
        }
    }

    pub(crate) fn body(&self) -> Value {
        let code = self.code();
        match self {
            ApiError::Validation(fields) => {
                let mut body: Map<String, Value> =
                    fields.0.iter().map(|(field, messages)| (field.clone(), json!(messages))).collect();
                // DRF's shape is the contract: a field named `code` keeps its
                // messages, and the machine-readable code gives way.
                body.entry("code").or_insert_with(|| json!(code));
                Value::Object(body)
            }
            ApiError::Rejected(verdict) => {
                let mut body = verdict.as_object().cloned().unwrap_or_default();
                body.entry("code").or_insert_with(|| json!(code));
                Value::Object(body)
            }
            ApiError::BadRequest { message, details } => match details {
                Some(details) => json!({ "error": message, "details": details, "code": code }),
                None => json!({ "error": message, "code": code }),
            },
            ApiError::NotAuthenticated => {
                json!({ "detail": "Authentication credentials were not provided.", "code": code })
            }
            ApiError::TokenNotValid => {
                json!({ "detail": "Token is invalid or expired", "code": code })
            }
            ApiError::InvalidCredentials => json!({ "error": "Invalid credentials", "code": code }),
            ApiError::Forbidden => {
                json!({ "detail": "You do not have permission to perform this action.", "code": code })
            }
            ApiError::NotFound => json!({ "detail": "Not found.", "code": code }),
            ApiError::MethodNotAllowed => json!({ "detail": "Method not allowed.", "code": code }),
            ApiError::Conflict(message) => json!({ "error": message, "code": code }),
            ApiError::PayloadTooLarge => json!({ "error": "Request body too large", "code": code }),
            ApiError::UnsupportedMediaType => json!({
                "error": "Unsupported media type",
                "details": "Send the body as JSON with Content-Type: application/json",
                "code": code,
            }),
            ApiError::Throttled { retry_after } => json!({
                "detail": format!(
                    "Request was throttled. Expected available in {} seconds.",
                    retry_after_secs(*retry_after)
                ),
                "code": code,
            }),
            ApiError::TooManyStreams { limit } => json!({
                "error": format!("You already have {limit} streams open; wait for one to finish"),
                "code": code,
            }),
            ApiError::Timeout => json!({ "error": "Request timed out", "code": code }),
            ApiError::Unavailable(message) => json!({ "error": message, "code": code }),
            ApiError::Busy { .. } => json!({ "error": "The server is busy; try again shortly", "code": code }),
            ApiError::Ai(err) => {
                // The upstream's own text is logged, never answered.
                let mut body = json!({ "error": err.public_message(), "details": code, "code": code });
                if let Some(retry_after) = err.retry_after() {
                    body["retry_after"] = json!(retry_after_secs(retry_after));
                }
                body
            }
            ApiError::Internal(_) => json!({ "error": "Internal server error", "code": code }),
        }
    }
}

/// `Retry-After` is whole seconds; rounding up keeps a client that obeys it
/// from arriving a moment too early.
pub fn retry_after_secs(retry_after: Duration) -> u64 {
    let secs = retry_after.as_secs();
    if retry_after.subsec_nanos() > 0 || secs == 0 {
        secs + 1
    } else {
        secs
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if let ApiError::Internal(err) = &self {
            tracing::error!(error = format!("{err:#}"), "internal error");
        }
        if let ApiError::Ai(err) = &self {
            tracing::info!(status = status.as_u16(), error = %err, "AI call answered with an error");
        }
        let retry_after = match &self {
            ApiError::Throttled { retry_after } | ApiError::Busy { retry_after } => Some(*retry_after),
            // When a stream ends is unknown; a second is a fair first wait.
            ApiError::TooManyStreams { .. } => Some(Duration::from_secs(1)),
            ApiError::Ai(err) => err.retry_after(),
            _ => None,
        };
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(retry_after) = retry_after {
            let value = HeaderValue::from(retry_after_secs(retry_after));
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<gemini_client::ExecError> for ApiError {
    fn from(err: gemini_client::ExecError) -> Self {
        ApiError::Ai(err)
    }
}

impl From<key_rotation::limiter::LimiterError> for ApiError {
    fn from(err: key_rotation::limiter::LimiterError) -> Self {
        tracing::warn!(error = %err, "the key pool's shared state is unreachable");
        ApiError::Unavailable("the key pool's shared state is unreachable; try again shortly".into())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            // Callers that expect a conflict map it to a field error first;
            // one that reaches here is still the client's doing, not a 500.
            StoreError::UniqueViolation => ApiError::Conflict("Resource already exists".into()),
            other => ApiError::Internal(other.into()),
        }
    }
}

/// Fallback for paths no router matched.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Fallback for a known path asked with a method it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_named_code_keeps_its_messages() {
        let body = ApiError::Validation(FieldErrors::single("code", "This field is required.")).body();
        assert_eq!(body["code"], json!(["This field is required."]));
        let body = ApiError::Validation(FieldErrors::single("name", "This field is required.")).body();
        assert_eq!(body["code"], "invalid");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(0)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_millis(3001)), 4);
    }

    #[test]
    fn ai_failures_keep_their_status_and_retry_after() {
        use gemini_client::ExecError;
        let full = ApiError::Ai(ExecError::PoolFull { retry_after: Duration::from_millis(37_200) });
        assert_eq!(full.status_code(), StatusCode::TOO_MANY_REQUESTS);
        let response = full.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "38");
        let none = ApiError::Ai(ExecError::NoKeys);
        assert_eq!(none.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(none.body()["error"], "no API keys configured");
        assert_eq!(ApiError::Ai(ExecError::DeadlineExceeded).status_code(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            ApiError::Ai(ExecError::TooLarge { estimated: 10, max_tpm: 5 }).status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn field_errors_render_as_drf_lists_with_a_code() {
        let mut errors = FieldErrors::new();
        errors.add("password", "too short");
        errors.add("password", "too common");
        let body = ApiError::Validation(errors).body();
        assert_eq!(body, json!({"password": ["too short", "too common"], "code": "invalid"}));
    }
}
