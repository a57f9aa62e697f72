//! What this replica did that operators count, for the metrics: the
//! refusals users see (429), the alerts it posted.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

#[derive(Debug, Default)]
pub struct OperatorCounters {
    too_many_requests: AtomicU64,
    alerts_sent: AtomicU64,
    alerts_failed: AtomicU64,
}

impl OperatorCounters {
    /// Responses answered 429 (fair use, throttles, a full pool, too many streams).
    pub fn too_many_requests(&self) -> u64 {
        self.too_many_requests.load(Ordering::Relaxed)
    }

    /// Alert webhook deliveries: (sent, failed after every retry).
    pub fn alert_deliveries(&self) -> (u64, u64) {
        (self.alerts_sent.load(Ordering::Relaxed), self.alerts_failed.load(Ordering::Relaxed))
    }

    pub fn count_alert_delivery(&self, delivered: bool) {
        let counter = if delivered { &self.alerts_sent } else { &self.alerts_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Middleware: counts every response by the status operators watch.
pub async fn count_responses(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        state.counters.too_many_requests.fetch_add(1, Ordering::Relaxed);
    }
    response
}
