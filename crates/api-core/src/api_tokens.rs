//! Personal API tokens, the SDK gateway's credential: 256 random bits
//! behind a recognisable prefix, stored as a SHA-256 and looked up by it.
//! A slow password hash has no place here: it would cost every gateway
//! call milliseconds, and a 256-bit random value needs no stretching.
//!
//! A token is accepted as `x-goog-api-key`, `?key=` or `Authorization:
//! Bearer`, as Google's and OpenAI's SDKs send it. Checks are cached for
//! [`CACHE_TTL`], which is how long another replica may still accept a
//! revoked token; this replica forgets a token the moment it revokes it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use store::api_tokens::ApiTokenOwner;
use store::{Store, StoreResult};

/// What every token starts with, for people and secret scanners to spot.
pub const TOKEN_PREFIX: &str = "aat_";
/// How many of a token's first characters a list shows.
pub const SHOWN_CHARS: usize = 8;
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// `last_used_at` is written at most this often per token.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Past this many cached tokens, stale entries are swept.
const SWEEP_AT: usize = 10_000;

/// A new token: the value to show once, and what to store.
pub struct IssuedToken {
    pub token: String,
    pub prefix: String,
    pub hash: String,
}

pub fn issue() -> IssuedToken {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    IssuedToken { prefix: token.chars().take(SHOWN_CHARS).collect(), hash: hash(&token), token }
}

pub fn hash(token: &str) -> String {
    crate::bytes::hex(&Sha256::digest(token.as_bytes()))
}

/// The token a gateway request presents, wherever the SDK put it.
pub fn presented<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    if let Some(token) = header("x-goog-api-key").filter(|token| !token.is_empty()) {
        return Some(token);
    }
    if let Some(token) = crate::auth::bearer_token(headers) {
        return Some(token);
    }
    query?.split('&').find_map(|pair| pair.strip_prefix("key=")).filter(|token| !token.is_empty())
}

#[derive(Default)]
struct Cached {
    /// Hash → (owner if live, when checked).
    owners: HashMap<String, (Option<ApiTokenOwner>, Instant)>,
    /// Token id → when its use was last written.
    touched: HashMap<i64, Instant>,
}

#[derive(Default)]
pub struct ApiTokenCheck {
    cached: Mutex<Cached>,
}

impl ApiTokenCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whom `token` speaks for, if it is live; notes the use.
    pub async fn owner(&self, store: &Store, token: &str) -> StoreResult<Option<ApiTokenOwner>> {
        let hash = hash(token);
        let cached = self.lock().owners.get(&hash).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(owner, _)| *owner);
        let owner = match cached {
            Some(owner) => owner,
            None => {
                let owner = store.api_token_owner(&hash, Utc::now()).await?;
                let mut cached = self.lock();
                if cached.owners.len() >= SWEEP_AT {
                    cached.owners.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                }
                cached.owners.insert(hash, (owner, Instant::now()));
                owner
            }
        };
        if let Some(owner) = owner {
            self.note_use(store, owner.token_id);
        }
        Ok(owner)
    }

    /// Records the use off the request's path, at most once a minute per
    /// token and replica: a last-used time needs no more precision.
    fn note_use(&self, store: &Store, token_id: i64) {
        {
            let mut cached = self.lock();
            if cached.touched.get(&token_id).is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
                return;
            }
            if cached.touched.len() >= SWEEP_AT {
                cached.touched.retain(|_, at| at.elapsed() < TOUCH_EVERY);
            }
            cached.touched.insert(token_id, Instant::now());
        }
        let store = store.clone();
        let at: DateTime<Utc> = Utc::now();
        tokio::spawn(async move {
            if let Err(err) = store.touch_api_tokens(&[(token_id, at)]).await {
                tracing::debug!(error = %err, token_id, "could not record an API token's use");
            }
        });
    }

    /// Forgets every cached check, after this replica revoked a token.
    pub fn forget_all(&self) {
        self.lock().owners.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_token_is_prefixed_random_and_stored_only_as_its_hash() {
        let first = issue();
        let second = issue();
        assert!(first.token.starts_with(TOKEN_PREFIX) && first.token.len() == TOKEN_PREFIX.len() + 43);
        assert_ne!(first.token, second.token);
        assert_eq!(first.prefix, &first.token[..SHOWN_CHARS]);
        assert_eq!(first.hash, hash(&first.token));
        assert!(!first.hash.contains(&first.token[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn a_token_is_found_where_each_sdk_puts_it() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers, Some("alt=sse&key=aat_q")), Some("aat_q"));
        assert_eq!(presented(&headers, Some("alt=sse")), None);
        headers.insert("authorization", HeaderValue::from_static("Bearer aat_b"));
        assert_eq!(presented(&headers, Some("key=aat_q")), Some("aat_b"));
        headers.insert("x-goog-api-key", HeaderValue::from_static("aat_g"));
        assert_eq!(presented(&headers, None), Some("aat_g"));
    }
}
