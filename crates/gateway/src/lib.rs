//! The SDK gateway: the key pool behind the APIs the world's code already
//! speaks, so an existing SDK uses it by changing its base URL.
//!
//! - [`google`]: Gemini's own REST API under `/v1beta/`, wire-identical to
//!   Google's: request bodies pass through as JSON values, answers and
//!   errors come back in Google's shapes.
//! - [`openai`]: OpenAI's chat completions and models under `/v1/`,
//!   translated to Gemini's native API and back.
//!
//! Every call goes through the one executor (fair use, admission, failover,
//! waiting, `Retry-After`), as the app's own features do. Callers present
//! a personal API token (`/api/auth/api-tokens/`), never a login JWT.

pub mod auth;
pub mod google;
pub mod openai;

use std::time::Duration;

use api_core::AppState;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Json, Response};
use axum::Router;
use serde_json::Value;

/// The gateway's routes. They authenticate on their own (API tokens), so
/// they sit beside the public routes, not behind the JWT gate.
pub fn routes() -> Router<AppState> {
    Router::new().nest("/v1beta", google::routes()).nest("/v1", openai::routes())
}

/// A wait in whole seconds, rounded up and at least 1: a client that waits
/// that long finds room.
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

pub(crate) fn set_retry_after(response: &mut Response, wait: Duration) {
    if let Ok(value) = HeaderValue::from_str(&retry_after_seconds(wait).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
}

/// A whole answer, with `Server-Timing: upstream;dur=<ms>`: the time spent
/// waiting on Google, so a client (or a benchmark) can tell it from the
/// time spent in the gateway.
pub(crate) fn answered(body: Value, upstream: Duration) -> Response {
    let mut response = Json(body).into_response();
    let timing = format!("upstream;dur={:.3}", upstream.as_secs_f64() * 1e3);
    if let Ok(value) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert(HeaderName::from_static("server-timing"), value);
    }
    response
}
