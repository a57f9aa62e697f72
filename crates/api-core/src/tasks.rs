//! Work that outlives the request that asked for it.
//!
//! An AI call is paid for when it is made. If it ran inside the request
//! future, a client that gave up (or the request timeout) would drop it
//! half-way: the user's message left `pending`, generated code never
//! stored, an Idempotency-Key claimed forever. So every AI call runs in a
//! task of its own, tracked here; the request awaits its result, and the
//! task finishes, stores and settles whether or not anyone still waits.
//! At shutdown the tasks are told to end, save what they can, and are
//! waited for.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{ApiError, ApiResult};
use crate::idempotency::Idempotency;
use crate::state::AppState;

/// The detached tasks of this process, and the signal that ends them at
/// shutdown.
#[derive(Clone, Default)]
pub struct DetachedTasks {
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl DetachedTasks {
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task.instrument(tracing::Span::current()));
    }

    /// Resolves when the server begins to shut down.
    pub async fn shutting_down(&self) {
        self.shutdown.cancelled().await;
    }

    /// Whether the server has begun to shut down.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Tells every task to save its work and end.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits, at most `limit`, for every task to finish. Returns whether
    /// they all did.
    pub async fn drained(&self, limit: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }

    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

/// Runs `work` detached from the request and answers with its result. The
/// task settles the request's `claim` (if it sent an Idempotency-Key)
/// itself, completed with the answer or released on failure, so a retry
/// with the same key finds the answer even when this request is gone.
/// Shutdown ends the work with a 503 and releases the key.
pub async fn run_detached<W>(state: &AppState, claim: Option<Idempotency>, work: W) -> ApiResult<Value>
where
    W: Future<Output = ApiResult<Value>> + Send + 'static,
{
    let (answer, answered) = oneshot::channel();
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let state = task_state;
        let work = async {
            match &claim {
                Some(claim) => claim.hold(&state, work).await,
                None => work.await,
            }
        };
        let outcome = tokio::select! {
            biased;
            () = state.tasks.shutting_down() => {
                Err(ApiError::Unavailable("The server is shutting down; nothing was stored. Retry.".into()))
            }
            outcome = work => outcome,
        };
        let settled = match &claim {
            Some(claim) => claim.settle(&state, outcome.as_ref().ok()).await,
            None => Ok(()),
        };
        let outcome = match (outcome, settled) {
            (Ok(_), Err(err)) => Err(err),
            (outcome, _) => outcome,
        };
        // Nobody may be waiting any more; the work is stored either way.
        let _ = answer.send(outcome);
    });
    answered
        .await
        .unwrap_or_else(|_| Err(ApiError::internal(anyhow::anyhow!("a detached task ended without answering"))))
}
