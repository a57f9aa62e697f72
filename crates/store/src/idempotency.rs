//! Idempotency keys: the first request with a key does the work; retries
//! with the same key and body get its answer back.

use chrono::{DateTime, Utc};
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
    /// retries cannot both do the work. An unsettled claim last refreshed
    /// before `abandoned_before` was left by a process that died: it is
    /// taken over, by a conditional update only one request can win.
    pub async fn claim_idempotency_key(
        &self,
        user_id: i64,
        key: &str,
        request: &str,
        abandoned_before: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        let now = Utc::now();
        let inserted = on_pool!(self, pool => sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, request, touched_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(key)
        .bind(request)
        .bind(now)
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
            Some(_) => {
                let taken_over = on_pool!(self, pool => sqlx::query(
                    "UPDATE idempotency_keys SET touched_at = $1 \
                     WHERE user_id = $2 AND key = $3 AND status_code IS NULL AND touched_at < $4",
                )
                .bind(now)
                .bind(user_id)
                .bind(key)
                .bind(abandoned_before)
                .execute(pool)
                .await
                .map(|done| done.rows_affected()))?;
                if taken_over > 0 {
                    Claim::New
                } else {
                    Claim::InProgress
                }
            }
        })
    }

    /// Marks a claim as still being worked on.
    pub async fn refresh_idempotency_key(&self, user_id: i64, key: &str) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE idempotency_keys SET touched_at = $1 WHERE user_id = $2 AND key = $3 AND status_code IS NULL",
        )
        .bind(Utc::now())
        .bind(user_id)
        .bind(key)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Deletes claims older than `before`: answers past their keeping time,
    /// and claims abandoned long ago. Returns how many.
    pub async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let removed = on_pool!(self, pool => sqlx::query("DELETE FROM idempotency_keys WHERE touched_at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(removed)
    }

    pub async fn complete_idempotency_key(
        &self,
        user_id: i64,
        key: &str,
        status: u16,
        body: &Value,
    ) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE idempotency_keys SET status_code = $1, response = $2, touched_at = $3 WHERE user_id = $4 AND key = $5",
        )
        .bind(i32::from(status))
        .bind(Json(body))
        .bind(Utc::now())
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
