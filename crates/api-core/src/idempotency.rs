//! `Idempotency-Key` on the endpoints that spend quota (chat, code
//! generation): the first request with a key does the work; a retry with the
//! same key and body gets its answer back, without a second upstream call
//! or duplicated rows. A failed attempt releases the key so a retry runs.
//!
//! - A retry while the work still runs waits for it (within its own request
//!   timeout) and gets the same answer.
//! - The work runs detached from its request ([`crate::tasks`]) and keeps
//!   its claim fresh while it runs; a claim that nobody refreshed for
//!   `REQUEST_TIMEOUT_SECS` was left by a process that died, and the next
//!   request with the key takes it over.
//! - Completed keys are kept for [`KEEP_COMPLETED`], then purged.
//!
//! Keys are per user. The stored request names the route, so one key
//! cannot replay one endpoint's answer on another.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use store::idempotency::Claim;
use tokio::time::Instant;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::streaming;

const KEY_MAX_CHARS: usize = 255;
/// How long a completed key keeps its answer for retries.
pub const KEEP_COMPLETED: Duration = Duration::from_secs(24 * 3600);
/// How often a waiting retry looks at the claim again.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// A waiting retry gives up this long before its own request timeout, so
/// it answers with a status rather than being cut off.
const WAIT_MARGIN: Duration = Duration::from_secs(2);

/// The claim a request holds on its key, if it sent one.
#[derive(Debug, Clone)]
pub struct Idempotency {
    user_id: i64,
    key: Option<String>,
}

/// What to do with a request that may repeat an earlier one.
pub enum Begun {
    /// Do the work, then settle the claim.
    Run(Idempotency),
    /// Done before: this is the earlier answer.
    Replay(Response),
}

fn key_of(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.chars().count() <= KEY_MAX_CHARS)
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key must be 1 to 255 visible characters"))
}

impl Idempotency {
    /// Claims the request's key, if any. `route` and `request` identify the
    /// request; a replay answers as a single `done` event when `stream`.
    pub async fn begin(
        state: &AppState,
        user_id: i64,
        headers: &HeaderMap,
        route: &str,
        request: &impl Serialize,
        stream: bool,
    ) -> ApiResult<Begun> {
        let Some(key) = key_of(headers)? else {
            return Ok(Begun::Run(Self { user_id, key: None }));
        };
        let request = format!("{route}\n{}", serde_json::to_string(request).map_err(ApiError::internal)?);
        let give_up = Instant::now() + state.request_timeout.saturating_sub(WAIT_MARGIN);
        loop {
            let abandoned_before = chrono::Utc::now() - state.request_timeout;
            match state.store.claim_idempotency_key(user_id, &key, &request, abandoned_before).await? {
                Claim::New => return Ok(Begun::Run(Self { user_id, key: Some(key) })),
                Claim::Replay { body, .. } if stream => {
                    return Ok(Begun::Replay(streaming::single(streaming::done(&body))))
                }
                Claim::Replay { status, body } => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    return Ok(Begun::Replay((status, Json(body)).into_response()));
                }
                Claim::Mismatch => {
                    return Err(ApiError::bad_request("This Idempotency-Key was already used with a different request"))
                }
                // Another request runs this work: wait for its answer.
                Claim::InProgress if Instant::now() + WAIT_POLL < give_up => tokio::time::sleep(WAIT_POLL).await,
                Claim::InProgress => {
                    return Err(ApiError::Conflict(
                        "A request with this Idempotency-Key is still in progress; retry shortly".into(),
                    ))
                }
            }
        }
    }

    /// Runs `work` while keeping the claim fresh, so that no other request
    /// takes it over as abandoned while the work is still running.
    pub async fn hold<T>(&self, state: &AppState, work: impl Future<Output = T>) -> T {
        let Some(key) = &self.key else {
            return work.await;
        };
        let every = (state.request_timeout / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        let work = std::pin::pin!(work);
        let mut work = work;
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = ticks.tick() => {
                    if let Err(err) = state.store.refresh_idempotency_key(self.user_id, key).await {
                        tracing::warn!(error = %err, "could not refresh an idempotency claim");
                    }
                }
            }
        }
    }

    /// Keeps `body` as the answer for retries.
    pub async fn complete(&self, state: &AppState, status: StatusCode, body: &Value) -> ApiResult<()> {
        if let Some(key) = &self.key {
            state.store.complete_idempotency_key(self.user_id, key, status.as_u16(), body).await?;
        }
        Ok(())
    }

    /// Gives the key back after a failure, so a retry runs again.
    pub async fn release(&self, state: &AppState) -> ApiResult<()> {
        if let Some(key) = &self.key {
            state.store.release_idempotency_key(self.user_id, key).await?;
        }
        Ok(())
    }

    /// Completes with `body` when the work finished, releases otherwise.
    pub async fn settle(&self, state: &AppState, finished: Option<&Value>) -> ApiResult<()> {
        let settled = match finished {
            Some(body) => self.complete(state, StatusCode::OK, body).await,
            None => self.release(state).await,
        };
        if let Err(err) = &settled {
            tracing::error!(error = %err, "could not settle an idempotency key");
        }
        settled
    }
}
