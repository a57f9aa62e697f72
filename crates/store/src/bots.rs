//! Bot verification (the old `BotPerformance`): one row per strategy,
//! written as its verification runs end.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::{on_pool, Store, StoreResult};

#[derive(Debug, Clone, FromRow)]
pub struct BotRow {
    pub id: i64,
    pub user_id: i64,
    pub strategy_id: i64,
    pub strategy_name: String,
    pub verification_status: String,
    pub trades_threshold: i32,
    pub symbol: Option<String>,
    pub total_return: Option<f64>,
    pub total_trades: Option<i32>,
    pub win_rate: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub last_run_id: Option<String>,
    pub message: String,
    pub last_tested_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a verification (or its start) sets.
#[derive(Debug, Clone, Default)]
pub struct BotVerification {
    pub verification_status: String,
    pub trades_threshold: i32,
    pub symbol: Option<String>,
    pub total_return: Option<f64>,
    pub total_trades: Option<i32>,
    pub win_rate: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub last_run_id: Option<String>,
    pub message: String,
    pub tested_at: Option<DateTime<Utc>>,
}

const BOT_SELECT: &str = "SELECT b.id, b.user_id, b.strategy_id, s.name AS strategy_name, b.verification_status, \
     b.trades_threshold, b.symbol, b.total_return, b.total_trades, b.win_rate, b.sharpe_ratio, b.max_drawdown, \
     b.last_run_id, b.message, b.last_tested_at, b.verified_at, b.created_at, b.updated_at \
     FROM bot_performance b JOIN strategies s ON s.id = b.strategy_id";

impl Store {
    /// Sets the strategy's verification (the caller owns the strategy).
    /// `verified_at` is kept from the first time it was verified, through
    /// a retest still `pending`, and cleared when a later run no longer
    /// verifies it.
    pub async fn save_bot_verification(
        &self,
        owner_id: i64,
        strategy_id: i64,
        verification: &BotVerification,
    ) -> StoreResult<BotRow> {
        let now = Utc::now();
        let verified = verification.verification_status == "verified";
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO bot_performance (user_id, strategy_id, verification_status, trades_threshold, symbol, \
             total_return, total_trades, win_rate, sharpe_ratio, max_drawdown, last_run_id, message, last_tested_at, \
             verified_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, CASE WHEN $14 THEN $15 END, $15, $15) \
             ON CONFLICT (strategy_id) DO UPDATE SET verification_status = excluded.verification_status, \
             trades_threshold = excluded.trades_threshold, symbol = COALESCE(excluded.symbol, bot_performance.symbol), \
             total_return = COALESCE(excluded.total_return, bot_performance.total_return), \
             total_trades = COALESCE(excluded.total_trades, bot_performance.total_trades), \
             win_rate = COALESCE(excluded.win_rate, bot_performance.win_rate), \
             sharpe_ratio = COALESCE(excluded.sharpe_ratio, bot_performance.sharpe_ratio), \
             max_drawdown = COALESCE(excluded.max_drawdown, bot_performance.max_drawdown), \
             last_run_id = COALESCE(excluded.last_run_id, bot_performance.last_run_id), \
             message = excluded.message, \
             last_tested_at = COALESCE(excluded.last_tested_at, bot_performance.last_tested_at), \
             verified_at = CASE WHEN $14 THEN COALESCE(bot_performance.verified_at, $15) \
                                WHEN excluded.verification_status = 'pending' THEN bot_performance.verified_at \
                                ELSE NULL END, \
             updated_at = excluded.updated_at",
        )
        .bind(owner_id)
        .bind(strategy_id)
        .bind(&verification.verification_status)
        .bind(verification.trades_threshold)
        .bind(&verification.symbol)
        .bind(verification.total_return)
        .bind(verification.total_trades)
        .bind(verification.win_rate)
        .bind(verification.sharpe_ratio)
        .bind(verification.max_drawdown)
        .bind(&verification.last_run_id)
        .bind(&verification.message)
        .bind(verification.tested_at)
        .bind(verified)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        self.bot_of_strategy(strategy_id, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    pub async fn bot_of_strategy(&self, strategy_id: i64, owner_id: i64) -> StoreResult<Option<BotRow>> {
        let sql = format!("{BOT_SELECT} WHERE b.strategy_id = $1 AND b.user_id = $2");
        let row =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(strategy_id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    pub async fn bot(&self, id: i64, owner_id: i64) -> StoreResult<Option<BotRow>> {
        let sql = format!("{BOT_SELECT} WHERE b.id = $1 AND b.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// The owner's bots, newest first; only verified ones (best return
    /// first) when asked.
    pub async fn bots_page(
        &self,
        owner_id: i64,
        verified_only: bool,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<BotRow>)> {
        let (filter, order) = if verified_only {
            (" AND b.verification_status = 'verified'", "b.total_return DESC, b.id DESC")
        } else {
            ("", "b.id DESC")
        };
        let sql = format!("{BOT_SELECT} WHERE b.user_id = $1{filter} ORDER BY {order} LIMIT $2 OFFSET $3");
        let count_sql = format!("SELECT COUNT(*) FROM bot_performance b WHERE b.user_id = $1{filter}");
        let (count, rows) = on_pool!(self, pool => {
            let count: i64 = sqlx::query_scalar(&count_sql).bind(owner_id).fetch_one(pool).await?;
            let rows = sqlx::query_as(&sql).bind(owner_id).bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }
}
