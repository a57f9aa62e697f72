//! What the operators' dashboard keeps: the key pool's rotation history and
//! the dashboard's login sessions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;

use crate::{on_pool, Store, StoreResult};

/// One entry of the rotation history.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct RotationEventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub key_id: Option<String>,
    pub project: Option<String>,
    pub model: Option<String>,
    pub detail: String,
    pub actor: String,
}

/// An event to record (its id is the database's).
#[derive(Debug, Clone)]
pub struct NewRotationEvent {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub key_id: Option<String>,
    pub project: Option<String>,
    pub model: Option<String>,
    pub detail: String,
    pub actor: String,
}

/// Which events a history page shows; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub key_id: Option<String>,
    pub project: Option<String>,
    pub kind: Option<String>,
}

/// A live dashboard session with the user behind it.
#[derive(Debug, Clone, FromRow)]
pub struct AdminSessionRow {
    pub user_id: i64,
    pub username: String,
    pub role: String,
    pub is_active: bool,
    pub csrf_token: String,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

const EVENT_MATCH: &str = "(CAST($1 AS TEXT) IS NULL OR key_id = $1) \
     AND (CAST($2 AS TEXT) IS NULL OR project = $2) \
     AND (CAST($3 AS TEXT) IS NULL OR kind = $3)";

impl Store {
    /// Records events in one transaction.
    pub async fn insert_rotation_events(&self, events: &[NewRotationEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for event in events {
                sqlx::query(
                    "INSERT INTO rotation_events (at, kind, key_id, project, model, detail, actor) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(event.at)
                .bind(&event.kind)
                .bind(&event.key_id)
                .bind(&event.project)
                .bind(&event.model)
                .bind(&event.detail)
                .bind(&event.actor)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// One page of the history, newest first, with the count of all matches.
    pub async fn rotation_events_page(
        &self,
        filter: &EventFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<RotationEventRow>)> {
        let count_sql = format!("SELECT COUNT(*) FROM rotation_events WHERE {EVENT_MATCH}");
        let rows_sql = format!(
            "SELECT id, at, kind, key_id, project, model, detail, actor FROM rotation_events \
             WHERE {EVENT_MATCH} ORDER BY at DESC, id DESC LIMIT $4 OFFSET $5"
        );
        let page = on_pool!(self, pool => {
            let count: (i64,) = sqlx::query_as(&count_sql)
                .bind(&filter.key_id)
                .bind(&filter.project)
                .bind(&filter.kind)
                .fetch_one(pool)
                .await?;
            let rows: Vec<RotationEventRow> = sqlx::query_as(&rows_sql)
                .bind(&filter.key_id)
                .bind(&filter.project)
                .bind(&filter.kind)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            Ok::<_, sqlx::Error>((count.0, rows))
        })?;
        Ok(page)
    }

    /// Deletes events older than `before`; returns how many.
    pub async fn purge_rotation_events(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = on_pool!(self, pool => sqlx::query("DELETE FROM rotation_events WHERE at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(done)
    }

    pub async fn create_admin_session(
        &self,
        token_hash: &str,
        user_id: i64,
        csrf_token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO admin_sessions (token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The session behind a cookie's token hash, if it has not expired.
    pub async fn admin_session(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<AdminSessionRow>> {
        let row = on_pool!(self, pool => sqlx::query_as(
            "SELECT s.user_id, u.username, u.role, u.is_active, s.csrf_token, s.last_seen_at, s.expires_at \
             FROM admin_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    pub async fn touch_admin_session(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("UPDATE admin_sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn delete_admin_session(&self, token_hash: &str) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Deletes sessions past their lifetime or idle since `idle_before`.
    pub async fn purge_admin_sessions(&self, now: DateTime<Utc>, idle_before: DateTime<Utc>) -> StoreResult<u64> {
        let done = on_pool!(self, pool => sqlx::query(
            "DELETE FROM admin_sessions WHERE expires_at <= $1 OR last_seen_at < $2",
        )
        .bind(now)
        .bind(idle_before)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done)
    }
}
