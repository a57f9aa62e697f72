//! Counts of what this replica answered, for the metrics: the refusals
//! users see (429) are the ones operators alert on.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

#[derive(Debug, Default)]
pub struct ResponseCounters {
    too_many_requests: AtomicU64,
}

impl ResponseCounters {
    /// Responses answered 429 (fair use, throttles, a full pool, too many streams).
    pub fn too_many_requests(&self) -> u64 {
        self.too_many_requests.load(Ordering::Relaxed)
    }
}

/// Middleware: counts every response by the status operators watch.
pub async fn count_responses(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        state.responses.too_many_requests.fetch_add(1, Ordering::Relaxed);
    }
    response
}
