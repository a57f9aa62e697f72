//! AI contexts: saved instructions and data a chat can run with.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{on_pool, Store, StoreResult};

#[derive(Debug, Clone, FromRow)]
pub struct AiContextRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub session_name: String,
    pub instructions: String,
    pub context_data: Json<Value>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
}

/// The writable fields of an AI context, applied as a whole.
#[derive(Debug, Clone)]
pub struct AiContextFields {
    pub session_name: String,
    pub instructions: String,
    pub context_data: Value,
    pub is_active: bool,
}

impl From<&AiContextRow> for AiContextFields {
    fn from(row: &AiContextRow) -> Self {
        Self {
            session_name: row.session_name.clone(),
            instructions: row.instructions.clone(),
            context_data: row.context_data.0.clone(),
            is_active: row.is_active,
        }
    }
}

const CONTEXT_SELECT: &str = "SELECT c.id, c.user_id, u.username, c.session_name, c.instructions, c.context_data, \
     c.is_active, c.created_at, c.updated_at, c.last_used FROM ai_contexts c JOIN users u ON u.id = c.user_id";

impl Store {
    pub async fn create_ai_context(&self, owner_id: i64, fields: &AiContextFields) -> StoreResult<AiContextRow> {
        let now = Utc::now();
        let id: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO ai_contexts (user_id, session_name, instructions, context_data, is_active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        )
        .bind(owner_id)
        .bind(&fields.session_name)
        .bind(&fields.instructions)
        .bind(Json(&fields.context_data))
        .bind(fields.is_active)
        .bind(now)
        .fetch_one(pool)
        .await)?;
        self.ai_context(id.0, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// An AI context, visible only to its owner.
    pub async fn ai_context(&self, id: i64, owner_id: i64) -> StoreResult<Option<AiContextRow>> {
        let sql = format!("{CONTEXT_SELECT} WHERE c.id = $1 AND c.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the owner's contexts, newest first, with the total count.
    pub async fn ai_contexts_page(
        &self,
        owner_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<AiContextRow>)> {
        let sql = format!("{CONTEXT_SELECT} WHERE c.user_id = $1 ORDER BY c.id DESC LIMIT $2 OFFSET $3");
        self.owner_page("SELECT COUNT(*) FROM ai_contexts WHERE user_id = $1", &sql, owner_id, limit, offset).await
    }

    /// Overwrites the writable fields; `None` when the context is not the owner's.
    pub async fn update_ai_context(
        &self,
        id: i64,
        owner_id: i64,
        fields: &AiContextFields,
    ) -> StoreResult<Option<AiContextRow>> {
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE ai_contexts SET session_name = $1, instructions = $2, context_data = $3, is_active = $4, updated_at = $5 \
             WHERE id = $6 AND user_id = $7",
        )
        .bind(&fields.session_name)
        .bind(&fields.instructions)
        .bind(Json(&fields.context_data))
        .bind(fields.is_active)
        .bind(Utc::now())
        .bind(id)
        .bind(owner_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.ai_context(id, owner_id).await
    }

    /// Sets `is_active`; activating also records the use. `None` when not the owner's.
    pub async fn set_ai_context_active(
        &self,
        id: i64,
        owner_id: i64,
        active: bool,
    ) -> StoreResult<Option<AiContextRow>> {
        let now = Utc::now();
        let sql = if active {
            "UPDATE ai_contexts SET is_active = $1, updated_at = $2, last_used = $2 WHERE id = $3 AND user_id = $4"
        } else {
            "UPDATE ai_contexts SET is_active = $1, updated_at = $2 WHERE id = $3 AND user_id = $4"
        };
        let updated = on_pool!(self, pool => sqlx::query(sql)
            .bind(active)
            .bind(now)
            .bind(id)
            .bind(owner_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.ai_context(id, owner_id).await
    }

    /// Deletes the owner's context. Returns whether there was one.
    pub async fn delete_ai_context(&self, id: i64, owner_id: i64) -> StoreResult<bool> {
        self.delete_owned("ai_contexts", id, owner_id).await
    }
}

/// A chat session with its context's name and message count.
#[derive(Debug, Clone, FromRow)]
pub struct ChatSessionRow {
    pub id: i64,
    pub session_id: String,
    pub user_id: i64,
    pub username: String,
    pub ai_context_id: Option<i64>,
    pub ai_context_name: Option<String>,
    pub title: String,
    pub generated_strategies: Json<Value>,
    pub is_active: bool,
    pub message_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct ChatMessageRow {
    pub id: i64,
    pub session_id: i64,
    pub role: String,
    pub content: String,
    pub metadata: Json<Value>,
    pub tokens_used: i64,
    pub created_at: DateTime<Utc>,
}

/// The writable fields of a chat session.
#[derive(Debug, Clone)]
pub struct ChatSessionFields {
    pub title: String,
    pub ai_context_id: Option<i64>,
    pub is_active: bool,
}

const SESSION_SELECT: &str = "SELECT s.id, s.session_id, s.user_id, u.username, s.ai_context_id, \
     c.session_name AS ai_context_name, s.title, s.generated_strategies, s.is_active, \
     (SELECT COUNT(*) FROM chat_messages m WHERE m.session_id = s.id) AS message_count, \
     s.created_at, s.updated_at \
     FROM chat_sessions s JOIN users u ON u.id = s.user_id LEFT JOIN ai_contexts c ON c.id = s.ai_context_id";

impl Store {
    /// A new session with a fresh public `session_id`.
    pub async fn create_chat_session(
        &self,
        owner_id: i64,
        session_id: &str,
        fields: &ChatSessionFields,
    ) -> StoreResult<ChatSessionRow> {
        let now = Utc::now();
        let id: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO chat_sessions (session_id, user_id, ai_context_id, title, is_active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        )
        .bind(session_id)
        .bind(owner_id)
        .bind(fields.ai_context_id)
        .bind(&fields.title)
        .bind(fields.is_active)
        .bind(now)
        .fetch_one(pool)
        .await)?;
        self.chat_session(id.0, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// A session by its integer id, visible only to its owner.
    pub async fn chat_session(&self, id: i64, owner_id: i64) -> StoreResult<Option<ChatSessionRow>> {
        let sql = format!("{SESSION_SELECT} WHERE s.id = $1 AND s.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// A session by its public `session_id`, visible only to its owner.
    pub async fn chat_session_by_public_id(
        &self,
        session_id: &str,
        owner_id: i64,
    ) -> StoreResult<Option<ChatSessionRow>> {
        let sql = format!("{SESSION_SELECT} WHERE s.session_id = $1 AND s.user_id = $2");
        let row =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(session_id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    pub async fn chat_sessions_page(
        &self,
        owner_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<ChatSessionRow>)> {
        let sql = format!("{SESSION_SELECT} WHERE s.user_id = $1 ORDER BY s.id DESC LIMIT $2 OFFSET $3");
        self.owner_page("SELECT COUNT(*) FROM chat_sessions WHERE user_id = $1", &sql, owner_id, limit, offset).await
    }

    /// Overwrites the writable fields; `None` when the session is not the owner's.
    pub async fn update_chat_session(
        &self,
        id: i64,
        owner_id: i64,
        fields: &ChatSessionFields,
    ) -> StoreResult<Option<ChatSessionRow>> {
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE chat_sessions SET title = $1, ai_context_id = $2, is_active = $3, updated_at = $4 \
             WHERE id = $5 AND user_id = $6",
        )
        .bind(&fields.title)
        .bind(fields.ai_context_id)
        .bind(fields.is_active)
        .bind(Utc::now())
        .bind(id)
        .bind(owner_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.chat_session(id, owner_id).await
    }

    pub async fn delete_chat_session(&self, id: i64, owner_id: i64) -> StoreResult<bool> {
        self.delete_owned("chat_sessions", id, owner_id).await
    }

    /// Appends a message to a session (the caller has checked ownership).
    pub async fn add_chat_message(
        &self,
        session: i64,
        role: &str,
        content: &str,
        metadata: &Value,
        tokens_used: i64,
    ) -> StoreResult<ChatMessageRow> {
        let now = Utc::now();
        let row = on_pool!(self, pool => {
            let row: ChatMessageRow = sqlx::query_as(
                "INSERT INTO chat_messages (session_id, role, content, metadata, tokens_used, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(session)
            .bind(role)
            .bind(content)
            .bind(Json(metadata))
            .bind(tokens_used)
            .bind(now)
            .fetch_one(pool)
            .await?;
            sqlx::query("UPDATE chat_sessions SET updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(session)
                .execute(pool)
                .await?;
            Ok::<_, sqlx::Error>(row)
        })?;
        Ok(row)
    }

    /// Records what became of a message (its status, tokens).
    pub async fn finish_chat_message(&self, id: i64, metadata: &Value, tokens_used: i64) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("UPDATE chat_messages SET metadata = $1, tokens_used = $2 WHERE id = $3")
            .bind(Json(metadata))
            .bind(tokens_used)
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// A session's newest `limit` messages, oldest first.
    pub async fn recent_chat_messages(&self, session: i64, limit: i64) -> StoreResult<Vec<ChatMessageRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as(
            "SELECT * FROM (SELECT * FROM chat_messages WHERE session_id = $1 ORDER BY id DESC LIMIT $2) AS recent \
             ORDER BY id",
        )
        .bind(session)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// A session's messages, oldest first.
    pub async fn chat_messages(&self, session: i64) -> StoreResult<Vec<ChatMessageRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as(
            "SELECT * FROM chat_messages WHERE session_id = $1 ORDER BY id",
        )
        .bind(session)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }
}
