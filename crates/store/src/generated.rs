//! What runs over a strategy leaves behind: generated code (in its own
//! table, never in `strategies.strategy_code`), validation runs, and
//! backtest results. All owner-scoped.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{on_pool, Store, StoreError, StoreResult};

#[derive(Debug, Clone, FromRow)]
pub struct GeneratedCodeRow {
    pub id: i64,
    pub user_id: i64,
    pub strategy_id: Option<i64>,
    pub strategy_name: String,
    pub file_name: String,
    pub code: String,
    pub source: String,
    pub validation_status: String,
    pub problems: Json<Value>,
    pub fix_attempts: i32,
    pub fix_history: Json<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct GeneratedCodeFields {
    pub strategy_id: Option<i64>,
    pub strategy_name: String,
    pub file_name: String,
    pub code: String,
    pub source: &'static str,
    pub validation_status: &'static str,
    pub problems: Value,
    pub fix_attempts: i32,
    pub fix_history: Value,
}

#[derive(Debug, Clone, FromRow)]
pub struct ValidationRow {
    pub id: i64,
    pub user_id: i64,
    pub strategy_id: i64,
    pub validation_type: String,
    pub status: String,
    pub errors: Json<Value>,
    pub warnings: Json<Value>,
    pub details: Json<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ValidationFields {
    pub strategy_id: i64,
    pub validation_type: &'static str,
    pub status: String,
    pub errors: Value,
    pub warnings: Value,
    pub details: Value,
}

#[derive(Debug, Clone, FromRow)]
pub struct PerformanceRow {
    pub id: i64,
    pub user_id: i64,
    pub strategy_id: i64,
    pub symbol: String,
    pub timeframe: String,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub initial_capital: Option<f64>,
    pub final_value: Option<f64>,
    pub total_return: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub win_rate: Option<f64>,
    pub total_trades: Option<i32>,
    pub metrics: Json<Value>,
    pub created_at: DateTime<Utc>,
}

/// A backtest's result on a strategy, for `performance`.
#[derive(Debug, Clone)]
pub struct NewPerformance<'a> {
    pub user_id: i64,
    pub strategy_id: i64,
    pub symbol: &'a str,
    pub timeframe: &'a str,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub initial_capital: Option<f64>,
    pub final_value: Option<f64>,
    pub total_return: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub win_rate: Option<f64>,
    pub total_trades: Option<i32>,
    pub metrics: &'a Value,
    pub created_at: DateTime<Utc>,
}

const CODE_SELECT: &str =
    "SELECT id, user_id, strategy_id, strategy_name, file_name, code, source, validation_status, \
     problems, fix_attempts, fix_history, created_at FROM generated_code";
const VALIDATION_SELECT: &str = "SELECT id, user_id, strategy_id, validation_type, status, errors, warnings, details, \
     created_at FROM strategy_validations";
const PERFORMANCE_SELECT: &str = "SELECT id, user_id, strategy_id, symbol, timeframe, period_start, period_end, \
     initial_capital, final_value, total_return, sharpe_ratio, max_drawdown, win_rate, total_trades, metrics, created_at \
     FROM strategy_performance";

fn missing() -> StoreError {
    StoreError::Database(sqlx::Error::RowNotFound)
}

/// `WHERE user_id = $1`, narrowed to one strategy (`$4`) when given; the
/// page's limit and offset are `$2` and `$3`.
fn scoped(select: &str, strategy_id: Option<i64>) -> (String, String) {
    let table = select.rsplit(' ').next().unwrap_or_default();
    let narrow = if strategy_id.is_some() { " AND strategy_id = $4" } else { "" };
    (
        format!("SELECT COUNT(*) FROM {table} WHERE user_id = $1{}", narrow.replace("$4", "$2")),
        format!("{select} WHERE user_id = $1{narrow} ORDER BY id DESC LIMIT $2 OFFSET $3"),
    )
}

impl Store {
    pub async fn create_generated_code(
        &self,
        owner_id: i64,
        fields: &GeneratedCodeFields,
    ) -> StoreResult<GeneratedCodeRow> {
        let id: (i64,) = on_pool!(self, pool => sqlx::query_as(
            "INSERT INTO generated_code (user_id, strategy_id, strategy_name, file_name, code, source, validation_status, \
             problems, fix_attempts, fix_history, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             RETURNING id",
        )
        .bind(owner_id)
        .bind(fields.strategy_id)
        .bind(&fields.strategy_name)
        .bind(&fields.file_name)
        .bind(&fields.code)
        .bind(fields.source)
        .bind(fields.validation_status)
        .bind(Json(&fields.problems))
        .bind(fields.fix_attempts)
        .bind(Json(&fields.fix_history))
        .bind(Utc::now())
        .fetch_one(pool)
        .await)?;
        self.generated_code(id.0, owner_id).await?.ok_or_else(missing)
    }

    /// Records `summary` under `parameters.generated_code` of the owner's
    /// strategy, leaving its other parameters as they are.
    pub async fn note_generated_code(&self, strategy_id: i64, owner_id: i64, summary: &Value) -> StoreResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let current: Option<(Json<Value>,)> =
                sqlx::query_as("SELECT parameters FROM strategies WHERE id = $1 AND user_id = $2")
                    .bind(strategy_id)
                    .bind(owner_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((Json(mut parameters),)) = current {
                if !parameters.is_object() {
                    parameters = Value::Object(serde_json::Map::new());
                }
                parameters["generated_code"] = summary.clone();
                sqlx::query("UPDATE strategies SET parameters = $1, updated_at = $2 WHERE id = $3 AND user_id = $4")
                    .bind(Json(&parameters))
                    .bind(Utc::now())
                    .bind(strategy_id)
                    .bind(owner_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(())
    }

    pub async fn generated_code(&self, id: i64, owner_id: i64) -> StoreResult<Option<GeneratedCodeRow>> {
        let sql = format!("{CODE_SELECT} WHERE id = $1 AND user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// The newest code generated for the owner's strategy.
    pub async fn latest_generated_code(
        &self,
        strategy_id: i64,
        owner_id: i64,
    ) -> StoreResult<Option<GeneratedCodeRow>> {
        let sql = format!("{CODE_SELECT} WHERE strategy_id = $1 AND user_id = $2 ORDER BY id DESC LIMIT 1");
        let row =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(strategy_id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// Records a validation run on the owner's strategy and its time.
    pub async fn record_validation(&self, owner_id: i64, fields: &ValidationFields) -> StoreResult<ValidationRow> {
        let now = Utc::now();
        let id: (i64,) = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: (i64,) = sqlx::query_as(
                "INSERT INTO strategy_validations (user_id, strategy_id, validation_type, status, errors, warnings, \
                 details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(owner_id)
            .bind(fields.strategy_id)
            .bind(fields.validation_type)
            .bind(&fields.status)
            .bind(Json(&fields.errors))
            .bind(Json(&fields.warnings))
            .bind(Json(&fields.details))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE strategies SET last_validated = $1 WHERE id = $2 AND user_id = $3")
                .bind(now)
                .bind(fields.strategy_id)
                .bind(owner_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(id)
        })?;
        self.validation(id.0, owner_id).await?.ok_or_else(missing)
    }

    pub async fn validation(&self, id: i64, owner_id: i64) -> StoreResult<Option<ValidationRow>> {
        let sql = format!("{VALIDATION_SELECT} WHERE id = $1 AND user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the owner's validation runs, newest first, of one strategy when given.
    pub async fn validations_page(
        &self,
        owner_id: i64,
        strategy_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<ValidationRow>)> {
        self.narrowed_page(VALIDATION_SELECT, owner_id, strategy_id, limit, offset).await
    }

    pub async fn record_performance(&self, row: &NewPerformance<'_>) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO strategy_performance (user_id, strategy_id, symbol, timeframe, period_start, period_end, \
             initial_capital, final_value, total_return, sharpe_ratio, max_drawdown, win_rate, total_trades, metrics, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(row.user_id)
        .bind(row.strategy_id)
        .bind(row.symbol)
        .bind(row.timeframe)
        .bind(row.period_start)
        .bind(row.period_end)
        .bind(row.initial_capital)
        .bind(row.final_value)
        .bind(row.total_return)
        .bind(row.sharpe_ratio)
        .bind(row.max_drawdown)
        .bind(row.win_rate)
        .bind(row.total_trades)
        .bind(Json(row.metrics))
        .bind(row.created_at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn performance(&self, id: i64, owner_id: i64) -> StoreResult<Option<PerformanceRow>> {
        let sql = format!("{PERFORMANCE_SELECT} WHERE id = $1 AND user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the owner's backtest results, newest first, of one strategy when given.
    pub async fn performance_page(
        &self,
        owner_id: i64,
        strategy_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<PerformanceRow>)> {
        self.narrowed_page(PERFORMANCE_SELECT, owner_id, strategy_id, limit, offset).await
    }

    async fn narrowed_page<R>(
        &self,
        select: &'static str,
        owner_id: i64,
        strategy_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<R>)>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + Send
            + Unpin,
    {
        let (count_sql, rows_sql) = scoped(select, strategy_id);
        let Some(strategy_id) = strategy_id else {
            return self.owner_page(&count_sql, &rows_sql, owner_id, limit, offset).await;
        };
        let (count, rows) = on_pool!(self, pool => {
            let count: (i64,) =
                sqlx::query_as(&count_sql).bind(owner_id).bind(strategy_id).fetch_one(pool).await?;
            let rows: Vec<R> = sqlx::query_as(&rows_sql)
                .bind(owner_id)
                .bind(limit)
                .bind(offset)
                .bind(strategy_id)
                .fetch_all(pool)
                .await?;
            Ok::<_, sqlx::Error>((count.0, rows))
        })?;
        Ok((count, rows))
    }
}

/// A strategy's latest backtest result (one row per strategy).
#[derive(Debug, Clone, FromRow)]
pub struct LatestResultRow {
    pub id: i64,
    pub user_id: i64,
    pub strategy_id: i64,
    pub symbol: String,
    pub timeframe: String,
    pub period: String,
    pub initial_balance: f64,
    pub commission: f64,
    pub total_trades: i32,
    pub winning_trades: i32,
    pub losing_trades: i32,
    pub win_rate: f64,
    pub net_profit: f64,
    pub total_return_pct: f64,
    pub final_equity: Option<f64>,
    pub max_drawdown: f64,
    pub sharpe_ratio: Option<f64>,
    pub trades: sqlx::types::Json<Value>,
    pub equity_curve: sqlx::types::Json<Value>,
    pub run_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What replaces a strategy's latest result.
#[derive(Debug, Clone)]
pub struct LatestResult {
    pub symbol: String,
    pub timeframe: String,
    pub period: String,
    pub initial_balance: f64,
    pub commission: f64,
    pub total_trades: i32,
    pub winning_trades: i32,
    pub losing_trades: i32,
    pub win_rate: f64,
    pub net_profit: f64,
    pub total_return_pct: f64,
    pub final_equity: Option<f64>,
    pub max_drawdown: f64,
    pub sharpe_ratio: Option<f64>,
    pub trades: Value,
    pub equity_curve: Value,
    pub run_id: Option<String>,
}

const LATEST_RESULT_SELECT: &str = "SELECT id, user_id, strategy_id, symbol, timeframe, period, initial_balance, \
     commission, total_trades, winning_trades, losing_trades, win_rate, net_profit, total_return_pct, final_equity, \
     max_drawdown, sharpe_ratio, trades, equity_curve, run_id, created_at, updated_at FROM latest_backtest_results";

impl Store {
    /// Replaces the strategy's latest result (the owner's strategy only:
    /// the caller has checked it).
    pub async fn save_latest_result(
        &self,
        owner_id: i64,
        strategy_id: i64,
        result: &LatestResult,
    ) -> StoreResult<LatestResultRow> {
        let now = Utc::now();
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO latest_backtest_results (user_id, strategy_id, symbol, timeframe, period, initial_balance, \
             commission, total_trades, winning_trades, losing_trades, win_rate, net_profit, total_return_pct, \
             final_equity, max_drawdown, sharpe_ratio, trades, equity_curve, run_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20) \
             ON CONFLICT (strategy_id) DO UPDATE SET symbol = excluded.symbol, timeframe = excluded.timeframe, \
             period = excluded.period, initial_balance = excluded.initial_balance, commission = excluded.commission, \
             total_trades = excluded.total_trades, winning_trades = excluded.winning_trades, \
             losing_trades = excluded.losing_trades, win_rate = excluded.win_rate, net_profit = excluded.net_profit, \
             total_return_pct = excluded.total_return_pct, final_equity = excluded.final_equity, \
             max_drawdown = excluded.max_drawdown, sharpe_ratio = excluded.sharpe_ratio, trades = excluded.trades, \
             equity_curve = excluded.equity_curve, run_id = excluded.run_id, updated_at = excluded.updated_at",
        )
        .bind(owner_id)
        .bind(strategy_id)
        .bind(&result.symbol)
        .bind(&result.timeframe)
        .bind(&result.period)
        .bind(result.initial_balance)
        .bind(result.commission)
        .bind(result.total_trades)
        .bind(result.winning_trades)
        .bind(result.losing_trades)
        .bind(result.win_rate)
        .bind(result.net_profit)
        .bind(result.total_return_pct)
        .bind(result.final_equity)
        .bind(result.max_drawdown)
        .bind(result.sharpe_ratio)
        .bind(sqlx::types::Json(&result.trades))
        .bind(sqlx::types::Json(&result.equity_curve))
        .bind(&result.run_id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        self.latest_result(strategy_id, owner_id).await?.ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    pub async fn latest_result(&self, strategy_id: i64, owner_id: i64) -> StoreResult<Option<LatestResultRow>> {
        let sql = format!("{LATEST_RESULT_SELECT} WHERE strategy_id = $1 AND user_id = $2");
        let row =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(strategy_id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    pub async fn latest_results_page(
        &self,
        owner_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<LatestResultRow>)> {
        let sql =
            format!("{LATEST_RESULT_SELECT} WHERE user_id = $1 ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3");
        let (count, rows) = on_pool!(self, pool => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM latest_backtest_results WHERE user_id = $1")
                .bind(owner_id)
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query_as(&sql).bind(owner_id).bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }
}
