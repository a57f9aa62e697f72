//! `Idempotency-Key` on the endpoints that spend quota (chat, code
//! generation): the first request with a key does the work; a retry with the
//! same key and body gets its answer back, without a second upstream call
//! or duplicated rows. A failed attempt releases the key so a retry runs.
//!
//! Keys are per user. The stored request names the route, so one key
//! cannot replay one endpoint's answer on another.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use store::idempotency::Claim;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::streaming;

const KEY_MAX_CHARS: usize = 255;

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
        match state.store.claim_idempotency_key(user_id, &key, &request).await? {
            Claim::New => Ok(Begun::Run(Self { user_id, key: Some(key) })),
            Claim::Replay { body, .. } if stream => Ok(Begun::Replay(streaming::single(streaming::done(&body)))),
            Claim::Replay { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                Ok(Begun::Replay((status, Json(body)).into_response()))
            }
            Claim::InProgress => {
                Err(ApiError::Conflict("A request with this Idempotency-Key is still in progress".into()))
            }
            Claim::Mismatch => {
                Err(ApiError::bad_request("This Idempotency-Key was already used with a different request"))
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

    /// Completes with `body` when the work finished, releases otherwise; for
    /// stream tasks, where a failure can only be logged.
    pub async fn settle(&self, state: &AppState, finished: Option<&Value>) {
        let settled = match finished {
            Some(body) => self.complete(state, StatusCode::OK, body).await,
            None => self.release(state).await,
        };
        if let Err(err) = settled {
            tracing::error!(error = %err, "could not settle an idempotency key");
        }
    }

    /// Settles after a non-streaming answer: an error releases the key.
    pub async fn finish(&self, state: &AppState, answer: ApiResult<Value>) -> ApiResult<Json<Value>> {
        match answer {
            Ok(body) => {
                self.complete(state, StatusCode::OK, &body).await?;
                Ok(Json(body))
            }
            Err(err) => {
                self.release(state).await?;
                Err(err)
            }
        }
    }
}
