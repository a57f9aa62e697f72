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
