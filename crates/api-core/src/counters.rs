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

/// How this replica's secret store answered its last refresh: the
/// dashboard's banner and the metrics read it.
#[derive(Debug, Default)]
pub struct SecretStoreStatus {
    /// The store and its address (never a credential); `None` for a local
    /// source (the environment, a file), which a refresh cannot fail to read.
    store: Option<String>,
    /// Since when (ms since the epoch) it has failed, or 0.
    failing_since_ms: AtomicU64,
    failures: AtomicU64,
}

impl SecretStoreStatus {
    pub fn new(store: Option<String>) -> Self {
        Self { store, ..Self::default() }
    }

    /// The store a refresh reads, when it is one that can fail.
    pub fn store(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// A refresh failed at `now_ms`.
    pub fn failed(&self, now_ms: u64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let _ = self.failing_since_ms.compare_exchange(0, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn answered(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// Since when the store has not answered, if it is failing now.
    pub fn failing_since_ms(&self) -> Option<u64> {
        Some(self.failing_since_ms.load(Ordering::Relaxed)).filter(|since| *since > 0)
    }

    /// Refreshes that failed since start-up.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
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
