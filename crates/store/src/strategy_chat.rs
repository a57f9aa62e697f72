//! Strategy chat sessions (looked up by their public `chat_<16 hex>` id,
//! owner-scoped) and their messages.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{on_pool, Store, StoreResult};

#[derive(Debug, Clone, FromRow)]
pub struct StrategyChatRow {
    pub id: i64,
    pub session_id: String,
    pub user_id: i64,
    pub strategy_id: Option<i64>,
    pub title: String,
    pub is_active: bool,
    pub context_summary: String,
    pub model_name: String,
    pub temperature: f64,
    pub max_tokens: i32,
    pub message_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct StrategyChatMessageRow {
    pub id: i64,
    pub role: String,
    pub content: String,
    pub metadata: Json<Value>,
    pub created_at: DateTime<Utc>,
}

const SESSION_SELECT: &str = "SELECT s.id, s.session_id, s.user_id, s.strategy_id, s.title, s.is_active, \
     s.context_summary, s.model_name, s.temperature, s.max_tokens, \
     (SELECT COUNT(*) FROM strategy_chat_messages m WHERE m.session_id = s.id) AS message_count, \
     s.created_at, s.updated_at FROM strategy_chat_sessions s";

impl Store {
    pub async fn create_strategy_chat(
        &self,
        owner_id: i64,
        session_id: &str,
        title: &str,
        strategy_id: Option<i64>,
    ) -> StoreResult<StrategyChatRow> {
        let now = Utc::now();
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO strategy_chat_sessions (session_id, user_id, strategy_id, title, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(session_id)
        .bind(owner_id)
        .bind(strategy_id)
        .bind(title)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        self.strategy_chat(session_id, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// A session by its public id, visible only to its owner.
    pub async fn strategy_chat(&self, session_id: &str, owner_id: i64) -> StoreResult<Option<StrategyChatRow>> {
        let sql = format!("{SESSION_SELECT} WHERE s.session_id = $1 AND s.user_id = $2");
        let row =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(session_id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    pub async fn add_strategy_chat_message(
        &self,
        session: i64,
        role: &str,
        content: &str,
        metadata: &Value,
    ) -> StoreResult<i64> {
        let now = Utc::now();
        let id: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO strategy_chat_messages (session_id, role, content, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(session)
        .bind(role)
        .bind(content)
        .bind(Json(metadata))
        .bind(now)
        .fetch_one(pool)
        .await)?;
        on_pool!(self, pool => sqlx::query("UPDATE strategy_chat_sessions SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(session)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(id.0)
    }

    /// One page of the owner's sessions, most recently active first.
    pub async fn strategy_chats_page(
        &self,
        owner_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<StrategyChatRow>)> {
        let sql =
            format!("{SESSION_SELECT} WHERE s.user_id = $1 ORDER BY s.updated_at DESC, s.id DESC LIMIT $2 OFFSET $3");
        self.owner_page("SELECT COUNT(*) FROM strategy_chat_sessions WHERE user_id = $1", &sql, owner_id, limit, offset)
            .await
    }

    /// Settles a message stored before its upstream call.
    pub async fn finish_strategy_chat_message(&self, id: i64, metadata: &Value) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("UPDATE strategy_chat_messages SET metadata = $1 WHERE id = $2")
            .bind(Json(metadata))
            .bind(id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Deletes every message of a session and its summary.
    pub async fn clear_strategy_chat(&self, session: i64) -> StoreResult<u64> {
        let deleted = on_pool!(self, pool => sqlx::query("DELETE FROM strategy_chat_messages WHERE session_id = $1")
            .bind(session)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        self.update_strategy_chat(session, "context_summary = $1", "").await?;
        Ok(deleted)
    }

    pub async fn set_strategy_chat_summary(&self, session: i64, summary: &str) -> StoreResult<()> {
        self.update_strategy_chat(session, "context_summary = $1", summary).await
    }

    pub async fn deactivate_strategy_chat(&self, session: i64) -> StoreResult<()> {
        let sql = "UPDATE strategy_chat_sessions SET is_active = FALSE, updated_at = $1 WHERE id = $2";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(Utc::now())
            .bind(session)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// `assignment` is one of this module's constants, never input.
    async fn update_strategy_chat(&self, session: i64, assignment: &'static str, value: &str) -> StoreResult<()> {
        let sql = format!("UPDATE strategy_chat_sessions SET {assignment}, updated_at = $2 WHERE id = $3");
        on_pool!(self, pool => sqlx::query(&sql)
            .bind(value)
            .bind(Utc::now())
            .bind(session)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Ties a session to the strategy it produced.
    pub async fn link_strategy_chat(&self, session: i64, strategy_id: i64) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("UPDATE strategy_chat_sessions SET strategy_id = $1 WHERE id = $2")
            .bind(strategy_id)
            .bind(session)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// The newest `limit` messages of a session older than message
    /// `before` (when given), oldest first.
    pub async fn strategy_chat_messages_page(
        &self,
        session: i64,
        limit: i64,
        before: Option<i64>,
    ) -> StoreResult<Vec<StrategyChatMessageRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as(
            "SELECT * FROM (SELECT id, role, content, metadata, created_at FROM strategy_chat_messages \
             WHERE session_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3) AS page ORDER BY id",
        )
        .bind(session)
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// A session's messages, oldest first.
    pub async fn strategy_chat_messages(&self, session: i64) -> StoreResult<Vec<StrategyChatMessageRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, role, content, metadata, created_at FROM strategy_chat_messages WHERE session_id = $1 ORDER BY id",
        )
        .bind(session)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }
}
