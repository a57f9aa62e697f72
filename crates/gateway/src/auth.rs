//! Who is calling the gateway: the owner of a personal API token, sent as
//! `x-goog-api-key`, `?key=` or `Authorization: Bearer`. None of the three
//! goes further: upstream calls are built from scratch with a pool key.

use api_core::api_tokens::{presented, TOKEN_PREFIX};
use api_core::AppState;
use axum::http::request::Parts;

/// A caller proven by a live API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub token_id: i64,
}

impl Caller {
    /// Whose fair use this call spends: the same as the user's app calls.
    pub fn fair_use_key(&self) -> String {
        format!("user:{}", self.user_id)
    }
}

/// Why a gateway call was not let in. Each surface words it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token at all.
    Missing,
    /// Not a live API token: unknown, deleted, expired, its user
    /// deactivated, or a login JWT (which is for `/api/` only).
    Invalid,
    /// The token could not be checked (the database is away).
    Unavailable,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "Missing API token: send a personal API token (from /api/auth/api-tokens/) as x-goog-api-key, ?key= or Authorization: Bearer."
            }
            Refusal::Invalid => {
                "API token not valid: it is unknown, revoked or expired (login tokens are for /api/ only; create an API token at /api/auth/api-tokens/)."
            }
            Refusal::Unavailable => "The API token could not be checked; try again shortly.",
        }
    }
}

pub async fn caller(state: &AppState, parts: &Parts) -> Result<Caller, Refusal> {
    let token = presented(&parts.headers, parts.uri.query()).ok_or(Refusal::Missing)?;
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(Refusal::Invalid);
    }
    match state.api_tokens.owner(&state.store, token).await {
        Ok(Some(owner)) => {
            tracing::Span::current().record("user_id", owner.user_id);
            Ok(Caller { user_id: owner.user_id, token_id: owner.token_id })
        }
        Ok(None) => Err(Refusal::Invalid),
        Err(err) => {
            tracing::warn!(error = %err, "could not check an API token");
            Err(Refusal::Unavailable)
        }
    }
}
