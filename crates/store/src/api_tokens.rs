//! Personal API tokens: what the SDK gateway accepts instead of a login.
//! Rows hold a token's SHA-256, never the token.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::{on_pool, Store, StoreResult};

/// A token as its owner lists it.
#[derive(Debug, Clone, FromRow)]
pub struct ApiTokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token as operators list it: with its owner's name.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct OwnedApiTokenRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Whom a presented token speaks for, if it is live: not expired, and its
/// user active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct ApiTokenOwner {
    pub token_id: i64,
    pub user_id: i64,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewApiToken<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub prefix: &'a str,
    pub token_hash: &'a str,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, user_id, name, prefix, created_at, expires_at, last_used_at";

impl Store {
    pub async fn create_api_token(&self, token: &NewApiToken<'_>) -> StoreResult<ApiTokenRow> {
        let sql = format!(
            "INSERT INTO api_tokens (user_id, name, prefix, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        );
        let row = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(token.user_id)
            .bind(token.name)
            .bind(token.prefix)
            .bind(token.token_hash)
            .bind(token.created_at)
            .bind(token.expires_at)
            .fetch_one(pool)
            .await)?;
        Ok(row)
    }

    /// The user's tokens, newest first (expired ones included, so their
    /// owner sees why a client stopped working).
    pub async fn api_tokens(&self, user_id: i64) -> StoreResult<Vec<ApiTokenRow>> {
        let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY id DESC");
        let rows = on_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Every user's tokens, most recently used first, for operators.
    pub async fn all_api_tokens(&self, limit: i64) -> StoreResult<Vec<OwnedApiTokenRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as(
            "SELECT t.id, t.user_id, u.username, t.name, t.prefix, t.created_at, t.expires_at, t.last_used_at \
             FROM api_tokens t JOIN users u ON u.id = t.user_id \
             ORDER BY t.last_used_at IS NULL, t.last_used_at DESC, t.id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Deletes any user's token (an operator's revocation).
    pub async fn delete_any_api_token(&self, token_id: i64) -> StoreResult<bool> {
        let deleted = on_pool!(self, pool => sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(token_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))?;
        Ok(deleted)
    }

    /// Deletes one of the user's tokens; `false` when it has no such token.
    pub async fn delete_api_token(&self, user_id: i64, token_id: i64) -> StoreResult<bool> {
        let deleted = on_pool!(self, pool => sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
            .bind(token_id)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))?;
        Ok(deleted)
    }

    /// The owner of the token with this hash, if the token is live at `now`.
    pub async fn api_token_owner(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<ApiTokenOwner>> {
        let row = on_pool!(self, pool => sqlx::query_as(
            "SELECT t.id AS token_id, t.user_id FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) AND u.is_active",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Records when tokens were last used (a batch, written now and then).
    pub async fn touch_api_tokens(&self, used: &[(i64, DateTime<Utc>)]) -> StoreResult<()> {
        for (token_id, at) in used {
            on_pool!(self, pool => sqlx::query(
                "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(*token_id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        }
        Ok(())
    }
}
