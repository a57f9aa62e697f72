//! Idempotency keys: the first request with a key does the work; retries
//! with the same key and body get its answer back.

use chrono::Utc;
use serde_json::Value;
use sqlx::types::Json;

use crate::{on_pool, Store, StoreError, StoreResult};

#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nobody used this key: go ahead, then `complete` or `release` it.
    New,
    /// Done before: answer with this.
    Replay { status: u16, body: Value },
    /// Another request with this key is still running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

impl Store {
    /// Claims `key` for `user` and `request` (its canonical form, compared
    /// exactly). The insert itself decides who runs, so two concurrent
    /// retries cannot both do the work.
    pub async fn claim_idempotency_key(&self, user_id: i64, key: &str, request: &str) -> StoreResult<Claim> {
        let inserted = on_pool!(self, pool => sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(key)
        .bind(request)
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(|_| ()));
        match inserted.map_err(StoreError::from) {
            Ok(()) => return Ok(Claim::New),
            Err(StoreError::UniqueViolation) => {}
            Err(err) => return Err(err),
        }
        let existing: Option<(String, Option<i32>, Option<Json<Value>>)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT request, status_code, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(pool)
        .await)?;
        Ok(match existing {
            // Released between our insert and this read: the caller may retry.
            None => Claim::InProgress,
            Some((stored, _, _)) if stored != request => Claim::Mismatch,
            Some((_, Some(status), Some(Json(body)))) => {
                Claim::Replay { status: u16::try_from(status).unwrap_or(200), body }
            }
            Some(_) => Claim::InProgress,
        })
    }

    pub async fn complete_idempotency_key(
        &self,
        user_id: i64,
        key: &str,
        status: u16,
        body: &Value,
    ) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE idempotency_keys SET status_code = $1, response = $2 WHERE user_id = $3 AND key = $4",
        )
        .bind(i32::from(status))
        .bind(Json(body))
        .bind(user_id)
        .bind(key)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Gives the key back after a failure, so a retry runs again.
    pub async fn release_idempotency_key(&self, user_id: i64, key: &str) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2")
            .bind(user_id)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }
}
