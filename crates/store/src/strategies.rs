//! Strategies and their tags, owner-scoped. A strategy's `(name, version)`
//! and a tag's name are unique per owner: the insert itself says so, as
//! [`crate::StoreError::UniqueViolation`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{on_pool, Backend, Store, StoreResult};

#[derive(Debug, Clone, FromRow)]
pub struct StrategyRow {
    pub id: i64,
    pub user_id: i64,
    pub created_by_username: String,
    pub name: String,
    pub description: String,
    pub template_id: Option<i64>,
    pub template_name: Option<String>,
    pub strategy_code: String,
    pub parameters: Json<Value>,
    pub status: String,
    pub version: String,
    pub tags: Json<Vec<String>>,
    pub timeframe: String,
    pub risk_level: String,
    pub expected_return: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_validated: Option<DateTime<Utc>>,
    /// The status of the newest validation run, if any ran.
    pub validation_status: Option<String>,
    /// The newest backtest result's id, if any was written.
    pub performance_id: Option<i64>,
    pub performance_total_return: Option<f64>,
    pub performance_sharpe_ratio: Option<f64>,
    pub performance_max_drawdown: Option<f64>,
    pub performance_win_rate: Option<f64>,
    pub performance_total_trades: Option<i32>,
    pub performance_created_at: Option<DateTime<Utc>>,
}

/// The writable fields of a strategy, applied as a whole.
#[derive(Debug, Clone)]
pub struct StrategyFields {
    pub name: String,
    pub description: String,
    pub template_id: Option<i64>,
    pub strategy_code: String,
    pub parameters: Value,
    pub status: String,
    pub version: String,
    pub tags: Vec<String>,
    pub timeframe: String,
    pub risk_level: String,
    pub expected_return: Option<f64>,
    pub max_drawdown: Option<f64>,
}

impl From<&StrategyRow> for StrategyFields {
    fn from(row: &StrategyRow) -> Self {
        Self {
            name: row.name.clone(),
            description: row.description.clone(),
            template_id: row.template_id,
            strategy_code: row.strategy_code.clone(),
            parameters: row.parameters.0.clone(),
            status: row.status.clone(),
            version: row.version.clone(),
            tags: row.tags.0.clone(),
            timeframe: row.timeframe.clone(),
            risk_level: row.risk_level.clone(),
            expected_return: row.expected_return,
            max_drawdown: row.max_drawdown,
        }
    }
}

/// List filters; each one given narrows the list.
#[derive(Debug, Clone, Default)]
pub struct StrategyFilter {
    pub status: Option<String>,
    /// Strategies carrying every one of these tags.
    pub tags: Vec<String>,
    /// Name or description contains this, ignoring case.
    pub search: Option<String>,
    pub risk_level: Option<String>,
    pub timeframe: Option<String>,
    /// The category of the strategy's template.
    pub category: Option<String>,
}

const STRATEGY_SELECT: &str = "SELECT s.id, s.user_id, u.username AS created_by_username, s.name, s.description, \
     s.template_id, t.name AS template_name, s.strategy_code, s.parameters, s.status, s.version, s.tags, s.timeframe, \
     s.risk_level, s.expected_return, s.max_drawdown, s.created_at, s.updated_at, s.last_validated, \
     v.status AS validation_status, p.id AS performance_id, p.total_return AS performance_total_return, \
     p.sharpe_ratio AS performance_sharpe_ratio, p.max_drawdown AS performance_max_drawdown, \
     p.win_rate AS performance_win_rate, p.total_trades AS performance_total_trades, \
     p.created_at AS performance_created_at \
     FROM strategies s JOIN users u ON u.id = s.user_id LEFT JOIN strategy_templates t ON t.id = s.template_id \
     LEFT JOIN strategy_validations v ON v.id = (SELECT MAX(id) FROM strategy_validations WHERE strategy_id = s.id) \
     LEFT JOIN strategy_performance p ON p.id = (SELECT MAX(id) FROM strategy_performance WHERE strategy_id = s.id)";

#[derive(Debug, Clone, FromRow)]
pub struct TagRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub description: String,
    pub color: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TagFields {
    pub name: String,
    pub description: String,
    pub color: String,
}

const TAG_SELECT: &str = "SELECT id, user_id, name, description, color, created_at FROM strategy_tags";

impl Store {
    pub async fn create_strategy(&self, owner_id: i64, fields: &StrategyFields) -> StoreResult<StrategyRow> {
        let now = Utc::now();
        let id: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO strategies (user_id, name, description, template_id, strategy_code, parameters, status, version, \
             tags, timeframe, risk_level, expected_return, max_drawdown, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING id",
        )
        .bind(owner_id)
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.template_id)
        .bind(&fields.strategy_code)
        .bind(Json(&fields.parameters))
        .bind(&fields.status)
        .bind(&fields.version)
        .bind(Json(&fields.tags))
        .bind(&fields.timeframe)
        .bind(&fields.risk_level)
        .bind(fields.expected_return)
        .bind(fields.max_drawdown)
        .bind(now)
        .fetch_one(pool)
        .await)?;
        self.strategy(id.0, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// A strategy, visible only to its owner.
    pub async fn strategy(&self, id: i64, owner_id: i64) -> StoreResult<Option<StrategyRow>> {
        let sql = format!("{STRATEGY_SELECT} WHERE s.id = $1 AND s.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the owner's strategies matching `filter`, newest first,
    /// with the total count.
    pub async fn strategies_page(
        &self,
        owner_id: i64,
        filter: &StrategyFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<StrategyRow>)> {
        let mut conditions = vec!["s.user_id = $1".to_string()];
        let mut values: Vec<String> = Vec::new();
        if let Some(status) = &filter.status {
            values.push(status.clone());
            conditions.push(format!("s.status = ${}", values.len() + 1));
        }
        for (column, value) in
            [("s.risk_level", &filter.risk_level), ("s.timeframe", &filter.timeframe), ("t.category", &filter.category)]
        {
            if let Some(value) = value {
                values.push(value.clone());
                conditions.push(format!("{column} = ${}", values.len() + 1));
            }
        }
        for tag in &filter.tags {
            values.push(tag.clone());
            let elements = match self.backend() {
                Backend::Postgres => "jsonb_array_elements_text(s.tags) AS e(value)",
                Backend::Sqlite => "json_each(s.tags) AS e",
            };
            conditions.push(format!("EXISTS (SELECT 1 FROM {elements} WHERE e.value = ${})", values.len() + 1));
        }
        if let Some(search) = &filter.search {
            values.push(format!("%{}%", escape_like(&search.to_lowercase())));
            let n = values.len() + 1;
            conditions
                .push(format!("(LOWER(s.name) LIKE ${n} ESCAPE '\\' OR LOWER(s.description) LIKE ${n} ESCAPE '\\')"));
        }
        let filter_sql = conditions.join(" AND ");
        let count_sql = format!(
            "SELECT COUNT(*) FROM strategies s LEFT JOIN strategy_templates t ON t.id = s.template_id WHERE {filter_sql}"
        );
        let page_at = values.len() + 2;
        let rows_sql = format!(
            "{STRATEGY_SELECT} WHERE {filter_sql} ORDER BY s.created_at DESC, s.id DESC LIMIT ${page_at} OFFSET ${}",
            page_at + 1
        );
        let (count, rows) = on_pool!(self, pool => {
            let mut count = sqlx::query_as::<_, (i64,)>(&count_sql).bind(owner_id);
            let mut rows = sqlx::query_as::<_, StrategyRow>(&rows_sql).bind(owner_id);
            for value in &values {
                count = count.bind(value);
                rows = rows.bind(value);
            }
            let count = count.fetch_one(pool).await?;
            let rows = rows.bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count.0, rows))
        })?;
        Ok((count, rows))
    }

    /// Overwrites the writable fields; `None` when the strategy is not the owner's.
    pub async fn update_strategy(
        &self,
        id: i64,
        owner_id: i64,
        fields: &StrategyFields,
    ) -> StoreResult<Option<StrategyRow>> {
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE strategies SET name = $1, description = $2, template_id = $3, strategy_code = $4, parameters = $5, \
             status = $6, version = $7, tags = $8, timeframe = $9, risk_level = $10, expected_return = $11, \
             max_drawdown = $12, updated_at = $13 WHERE id = $14 AND user_id = $15",
        )
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.template_id)
        .bind(&fields.strategy_code)
        .bind(Json(&fields.parameters))
        .bind(&fields.status)
        .bind(&fields.version)
        .bind(Json(&fields.tags))
        .bind(&fields.timeframe)
        .bind(&fields.risk_level)
        .bind(fields.expected_return)
        .bind(fields.max_drawdown)
        .bind(Utc::now())
        .bind(id)
        .bind(owner_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.strategy(id, owner_id).await
    }

    /// Sets what a validation or a run found (`valid`, `invalid`,
    /// `executed`, `failed`, …); false when the strategy is not the owner's.
    pub async fn set_strategy_status(&self, id: i64, owner_id: i64, status: &str) -> StoreResult<bool> {
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE strategies SET status = $1, updated_at = $2 WHERE id = $3 AND user_id = $4",
        )
        .bind(status)
        .bind(Utc::now())
        .bind(id)
        .bind(owner_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }

    pub async fn delete_strategy(&self, id: i64, owner_id: i64) -> StoreResult<bool> {
        self.delete_owned("strategies", id, owner_id).await
    }

    /// Whether `owner_id` may attach template `id`: a system template, or
    /// one of their own.
    pub async fn template_visible(&self, id: i64, owner_id: i64) -> StoreResult<bool> {
        let sql = format!("SELECT COUNT(*) FROM strategy_templates t WHERE {TEMPLATE_VISIBLE} AND t.id = $2");
        let found: (i64,) = on_pool!(self, pool => sqlx::query_as(&sql).bind(owner_id).bind(id).fetch_one(pool).await)?;
        Ok(found.0 > 0)
    }

    pub async fn create_tag(&self, owner_id: i64, fields: &TagFields) -> StoreResult<TagRow> {
        let id: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO strategy_tags (user_id, name, description, color, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(owner_id)
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(&fields.color)
        .bind(Utc::now())
        .fetch_one(pool)
        .await)?;
        self.tag(id.0, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    pub async fn tag(&self, id: i64, owner_id: i64) -> StoreResult<Option<TagRow>> {
        let sql = format!("{TAG_SELECT} WHERE id = $1 AND user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the owner's tags, by name.
    pub async fn tags_page(&self, owner_id: i64, limit: i64, offset: i64) -> StoreResult<(i64, Vec<TagRow>)> {
        let sql = format!("{TAG_SELECT} WHERE user_id = $1 ORDER BY name, id LIMIT $2 OFFSET $3");
        self.owner_page("SELECT COUNT(*) FROM strategy_tags WHERE user_id = $1", &sql, owner_id, limit, offset).await
    }

    pub async fn update_tag(&self, id: i64, owner_id: i64, fields: &TagFields) -> StoreResult<Option<TagRow>> {
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE strategy_tags SET name = $1, description = $2, color = $3 WHERE id = $4 AND user_id = $5",
        )
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(&fields.color)
        .bind(id)
        .bind(owner_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.tag(id, owner_id).await
    }

    pub async fn delete_tag(&self, id: i64, owner_id: i64) -> StoreResult<bool> {
        self.delete_owned("strategy_tags", id, owner_id).await
    }
}

/// `%`, `_` and the escape itself match literally in a LIKE pattern.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

#[derive(Debug, Clone, FromRow)]
pub struct TemplateRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub category: String,
    pub template_code: String,
    pub parameters_schema: Json<Value>,
    pub is_active: bool,
    pub linked_strategy_id: Option<i64>,
    pub is_system_template: bool,
    pub latest_strategy_code: String,
    pub latest_parameters: Json<Value>,
    pub chat_history: Json<Value>,
    pub user_id: Option<i64>,
    pub created_by_username: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The writable fields of a template, applied as a whole.
#[derive(Debug, Clone)]
pub struct TemplateFields {
    pub name: String,
    pub description: String,
    pub category: String,
    pub template_code: String,
    pub parameters_schema: Value,
    pub is_active: bool,
    pub is_system_template: bool,
}

impl From<&TemplateRow> for TemplateFields {
    fn from(row: &TemplateRow) -> Self {
        Self {
            name: row.name.clone(),
            description: row.description.clone(),
            category: row.category.clone(),
            template_code: row.template_code.clone(),
            parameters_schema: row.parameters_schema.0.clone(),
            is_active: row.is_active,
            is_system_template: row.is_system_template,
        }
    }
}

const TEMPLATE_SELECT: &str = "SELECT t.id, t.name, t.description, t.category, t.template_code, t.parameters_schema, \
     t.is_active, t.linked_strategy_id, t.is_system_template, t.latest_strategy_code, t.latest_parameters, \
     t.chat_history, t.user_id, u.username AS created_by_username, t.created_at, t.updated_at \
     FROM strategy_templates t LEFT JOIN users u ON u.id = t.user_id";

/// Templates a user can see: the system ones and their own.
const TEMPLATE_VISIBLE: &str = "(t.is_system_template OR t.user_id = $1)";

impl Store {
    pub async fn create_template(&self, owner_id: i64, fields: &TemplateFields) -> StoreResult<TemplateRow> {
        let now = Utc::now();
        let id: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO strategy_templates (name, description, category, template_code, parameters_schema, is_active, \
             is_system_template, user_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(&fields.category)
        .bind(&fields.template_code)
        .bind(Json(&fields.parameters_schema))
        .bind(fields.is_active)
        .bind(fields.is_system_template)
        .bind(owner_id)
        .bind(now)
        .fetch_one(pool)
        .await)?;
        self.template(id.0, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// A template `viewer` can see.
    pub async fn template(&self, id: i64, viewer: i64) -> StoreResult<Option<TemplateRow>> {
        let sql = format!("{TEMPLATE_SELECT} WHERE {TEMPLATE_VISIBLE} AND t.id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(viewer).bind(id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the templates `viewer` can see, newest first; optionally one category.
    pub async fn templates_page(
        &self,
        viewer: i64,
        category: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<TemplateRow>)> {
        let filter = match category {
            Some(_) => format!("{TEMPLATE_VISIBLE} AND t.category = $4"),
            None => TEMPLATE_VISIBLE.to_string(),
        };
        let count_sql = format!("SELECT COUNT(*) FROM strategy_templates t WHERE {}", filter.replace("$4", "$2"));
        let rows_sql =
            format!("{TEMPLATE_SELECT} WHERE {filter} ORDER BY t.created_at DESC, t.id DESC LIMIT $2 OFFSET $3");
        let (count, rows) = on_pool!(self, pool => {
            let mut count = sqlx::query_as::<_, (i64,)>(&count_sql).bind(viewer);
            let mut rows = sqlx::query_as::<_, TemplateRow>(&rows_sql).bind(viewer).bind(limit).bind(offset);
            if let Some(category) = category {
                count = count.bind(category);
                rows = rows.bind(category);
            }
            let count = count.fetch_one(pool).await?;
            let rows = rows.fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count.0, rows))
        })?;
        Ok((count, rows))
    }

    /// The distinct non-empty categories of the templates `viewer` can see.
    pub async fn template_categories(&self, viewer: i64) -> StoreResult<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT t.category FROM strategy_templates t WHERE {TEMPLATE_VISIBLE} AND t.category <> '' ORDER BY t.category"
        );
        let rows: Vec<(String,)> = on_pool!(self, pool => sqlx::query_as(&sql).bind(viewer).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(category,)| category).collect())
    }

    /// Overwrites a template's writable fields. The caller decides who may.
    pub async fn update_template(&self, id: i64, fields: &TemplateFields) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE strategy_templates SET name = $1, description = $2, category = $3, template_code = $4, \
             parameters_schema = $5, is_active = $6, is_system_template = $7, updated_at = $8 WHERE id = $9",
        )
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(&fields.category)
        .bind(&fields.template_code)
        .bind(Json(&fields.parameters_schema))
        .bind(fields.is_active)
        .bind(fields.is_system_template)
        .bind(Utc::now())
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Copies a strategy's latest code and parameters into a template and links them.
    pub async fn sync_template(&self, id: i64, strategy: &StrategyRow) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE strategy_templates SET linked_strategy_id = $1, latest_strategy_code = $2, latest_parameters = $3, \
             updated_at = $4 WHERE id = $5",
        )
        .bind(strategy.id)
        .bind(&strategy.strategy_code)
        .bind(&strategy.parameters)
        .bind(Utc::now())
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    pub async fn delete_template(&self, id: i64) -> StoreResult<bool> {
        self.delete_by_id("strategy_templates", id).await
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct CommentRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub strategy_id: i64,
    pub parent_id: Option<i64>,
    pub content: String,
    pub rating: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct CommentFields {
    pub strategy_id: i64,
    pub parent_id: Option<i64>,
    pub content: String,
    pub rating: Option<i32>,
}

const COMMENT_SELECT: &str = "SELECT c.id, c.user_id, u.username, c.strategy_id, c.parent_id, c.content, c.rating, \
     c.created_at, c.updated_at FROM strategy_comments c JOIN users u ON u.id = c.user_id";

impl Store {
    pub async fn create_comment(&self, owner_id: i64, fields: &CommentFields) -> StoreResult<CommentRow> {
        let now = Utc::now();
        let id: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO strategy_comments (user_id, strategy_id, parent_id, content, rating, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        )
        .bind(owner_id)
        .bind(fields.strategy_id)
        .bind(fields.parent_id)
        .bind(&fields.content)
        .bind(fields.rating)
        .bind(now)
        .fetch_one(pool)
        .await)?;
        self.comment(id.0, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    pub async fn comment(&self, id: i64, owner_id: i64) -> StoreResult<Option<CommentRow>> {
        let sql = format!("{COMMENT_SELECT} WHERE c.id = $1 AND c.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the owner's comments, newest first.
    pub async fn comments_page(&self, owner_id: i64, limit: i64, offset: i64) -> StoreResult<(i64, Vec<CommentRow>)> {
        let sql = format!("{COMMENT_SELECT} WHERE c.user_id = $1 ORDER BY c.id DESC LIMIT $2 OFFSET $3");
        self.owner_page("SELECT COUNT(*) FROM strategy_comments WHERE user_id = $1", &sql, owner_id, limit, offset)
            .await
    }

    pub async fn update_comment(
        &self,
        id: i64,
        owner_id: i64,
        fields: &CommentFields,
    ) -> StoreResult<Option<CommentRow>> {
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE strategy_comments SET strategy_id = $1, parent_id = $2, content = $3, rating = $4, updated_at = $5 \
             WHERE id = $6 AND user_id = $7",
        )
        .bind(fields.strategy_id)
        .bind(fields.parent_id)
        .bind(&fields.content)
        .bind(fields.rating)
        .bind(Utc::now())
        .bind(id)
        .bind(owner_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.comment(id, owner_id).await
    }

    pub async fn delete_comment(&self, id: i64, owner_id: i64) -> StoreResult<bool> {
        self.delete_owned("strategy_comments", id, owner_id).await
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct VersionRow {
    pub id: i64,
    pub strategy_id: i64,
    pub commit_hash: String,
    pub kind: String,
    pub message: String,
    pub tag: Option<String>,
    pub code: String,
    pub parameters: Json<Value>,
    pub created_at: DateTime<Utc>,
}

/// A version to record.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub commit_hash: &'a str,
    /// `deploy` or `rollback`.
    pub kind: &'static str,
    pub message: &'a str,
    pub tag: Option<&'a str>,
    pub code: &'a str,
    pub parameters: &'a Value,
}

const VERSION_SELECT: &str =
    "SELECT id, strategy_id, commit_hash, kind, message, tag, code, parameters, created_at FROM strategy_versions";

impl Store {
    pub async fn record_version(
        &self,
        owner_id: i64,
        strategy_id: i64,
        version: &NewVersion<'_>,
    ) -> StoreResult<VersionRow> {
        let sql =
            "INSERT INTO strategy_versions (user_id, strategy_id, commit_hash, kind, message, tag, code, parameters, \
                   created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                   RETURNING id, strategy_id, commit_hash, kind, message, tag, code, parameters, created_at";
        let row = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(owner_id)
            .bind(strategy_id)
            .bind(version.commit_hash)
            .bind(version.kind)
            .bind(version.message)
            .bind(version.tag)
            .bind(version.code)
            .bind(Json(version.parameters))
            .bind(Utc::now())
            .fetch_one(pool)
            .await)?;
        Ok(row)
    }

    /// The strategy's versions, newest first.
    pub async fn versions(&self, strategy_id: i64, owner_id: i64, limit: i64) -> StoreResult<Vec<VersionRow>> {
        let sql = format!("{VERSION_SELECT} WHERE strategy_id = $1 AND user_id = $2 ORDER BY id DESC LIMIT $3");
        let rows = on_pool!(self, pool => sqlx::query_as(&sql).bind(strategy_id).bind(owner_id).bind(limit).fetch_all(pool).await)?;
        Ok(rows)
    }
}
