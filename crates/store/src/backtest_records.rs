//! The rest of the old backtest model: configs (reusable run settings),
//! and each finished run's trades and alerts, written by the worker as it
//! records the run's end. All owner-scoped.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{on_pool, Store, StoreResult};

#[derive(Debug, Clone, FromRow)]
pub struct ConfigRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub description: String,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub initial_capital: f64,
    pub commission: f64,
    pub slippage: f64,
    pub max_position_size: f64,
    pub stop_loss: Option<f64>,
    pub take_profit: Option<f64>,
    pub data_source: String,
    pub timeframe: String,
    pub benchmark_symbol: String,
    pub is_template: bool,
    pub created_by_username: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A config's writable fields, applied as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFields {
    pub name: String,
    pub description: String,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub initial_capital: f64,
    pub commission: f64,
    pub slippage: f64,
    pub max_position_size: f64,
    pub stop_loss: Option<f64>,
    pub take_profit: Option<f64>,
    pub data_source: String,
    pub timeframe: String,
    pub benchmark_symbol: String,
    pub is_template: bool,
}

impl From<&ConfigRow> for ConfigFields {
    fn from(row: &ConfigRow) -> Self {
        Self {
            name: row.name.clone(),
            description: row.description.clone(),
            start_date: row.start_date.clone(),
            end_date: row.end_date.clone(),
            initial_capital: row.initial_capital,
            commission: row.commission,
            slippage: row.slippage,
            max_position_size: row.max_position_size,
            stop_loss: row.stop_loss,
            take_profit: row.take_profit,
            data_source: row.data_source.clone(),
            timeframe: row.timeframe.clone(),
            benchmark_symbol: row.benchmark_symbol.clone(),
            is_template: row.is_template,
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct TradeRow {
    pub id: i64,
    pub run_id: i64,
    pub run_ref: String,
    pub symbol: String,
    pub trade_type: String,
    pub status: String,
    pub entry_date: String,
    pub entry_price: f64,
    pub exit_date: Option<String>,
    pub exit_price: Option<f64>,
    pub quantity: f64,
    pub pnl: Option<f64>,
    pub pnl_pct: Option<f64>,
    pub holding_period: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewTrade {
    pub symbol: String,
    pub trade_type: &'static str,
    pub entry_date: String,
    pub entry_price: f64,
    pub exit_date: Option<String>,
    pub exit_price: Option<f64>,
    pub quantity: f64,
    pub pnl: Option<f64>,
    pub pnl_pct: Option<f64>,
    pub holding_period: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub run_id: i64,
    pub run_ref: String,
    pub alert_type: String,
    pub title: String,
    pub message: String,
    pub symbol: Option<String>,
    pub context_data: Json<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewAlert {
    pub alert_type: &'static str,
    pub title: String,
    pub message: String,
    pub symbol: Option<String>,
    pub context_data: Value,
}

/// Which trades a list shows.
#[derive(Debug, Clone, Default)]
pub struct TradeFilter {
    pub run_id: Option<i64>,
    pub symbol: Option<String>,
    pub trade_type: Option<String>,
    pub status: Option<String>,
}

const CONFIG_SELECT: &str = "SELECT c.id, c.user_id, c.name, c.description, c.start_date, c.end_date, \
     c.initial_capital, c.commission, c.slippage, c.max_position_size, c.stop_loss, c.take_profit, c.data_source, \
     c.timeframe, c.benchmark_symbol, c.is_template, u.username AS created_by_username, c.created_at, c.updated_at \
     FROM backtest_configs c JOIN users u ON u.id = c.user_id";

const TRADE_SELECT: &str = "SELECT t.id, t.run_id, r.run_id AS run_ref, t.symbol, t.trade_type, t.status, \
     t.entry_date, t.entry_price, t.exit_date, t.exit_price, t.quantity, t.pnl, t.pnl_pct, t.holding_period \
     FROM backtest_trades t JOIN backtest_runs r ON r.id = t.run_id";

const ALERT_SELECT: &str = "SELECT a.id, a.run_id, r.run_id AS run_ref, a.alert_type, a.title, a.message, a.symbol, \
     a.context_data, a.created_at FROM backtest_alerts a JOIN backtest_runs r ON r.id = a.run_id";

impl Store {
    pub async fn create_config(&self, owner_id: i64, fields: &ConfigFields) -> StoreResult<ConfigRow> {
        let now = Utc::now();
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "INSERT INTO backtest_configs (user_id, name, description, start_date, end_date, initial_capital, \
             commission, slippage, max_position_size, stop_loss, take_profit, data_source, timeframe, \
             benchmark_symbol, is_template, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) RETURNING id",
        )
        .bind(owner_id)
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(&fields.start_date)
        .bind(&fields.end_date)
        .bind(fields.initial_capital)
        .bind(fields.commission)
        .bind(fields.slippage)
        .bind(fields.max_position_size)
        .bind(fields.stop_loss)
        .bind(fields.take_profit)
        .bind(&fields.data_source)
        .bind(&fields.timeframe)
        .bind(&fields.benchmark_symbol)
        .bind(fields.is_template)
        .bind(now)
        .fetch_one(pool)
        .await)?;
        self.config(id, owner_id).await?.ok_or(crate::StoreError::Database(sqlx::Error::RowNotFound))
    }

    pub async fn config(&self, id: i64, owner_id: i64) -> StoreResult<Option<ConfigRow>> {
        let sql = format!("{CONFIG_SELECT} WHERE c.id = $1 AND c.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// The owner's configs, newest first; only templates when asked.
    pub async fn configs_page(
        &self,
        owner_id: i64,
        templates_only: bool,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<ConfigRow>)> {
        let filter = if templates_only { " AND c.is_template" } else { "" };
        let sql = format!("{CONFIG_SELECT} WHERE c.user_id = $1{filter} ORDER BY c.id DESC LIMIT $2 OFFSET $3");
        let count_sql = format!("SELECT COUNT(*) FROM backtest_configs c WHERE c.user_id = $1{filter}");
        let (count, rows) = on_pool!(self, pool => {
            let count: i64 = sqlx::query_scalar(&count_sql).bind(owner_id).fetch_one(pool).await?;
            let rows = sqlx::query_as(&sql).bind(owner_id).bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }

    pub async fn update_config(&self, id: i64, owner_id: i64, fields: &ConfigFields) -> StoreResult<Option<ConfigRow>> {
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE backtest_configs SET name = $1, description = $2, start_date = $3, end_date = $4, \
             initial_capital = $5, commission = $6, slippage = $7, max_position_size = $8, stop_loss = $9, \
             take_profit = $10, data_source = $11, timeframe = $12, benchmark_symbol = $13, is_template = $14, \
             updated_at = $15 WHERE id = $16 AND user_id = $17",
        )
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(&fields.start_date)
        .bind(&fields.end_date)
        .bind(fields.initial_capital)
        .bind(fields.commission)
        .bind(fields.slippage)
        .bind(fields.max_position_size)
        .bind(fields.stop_loss)
        .bind(fields.take_profit)
        .bind(&fields.data_source)
        .bind(&fields.timeframe)
        .bind(&fields.benchmark_symbol)
        .bind(fields.is_template)
        .bind(Utc::now())
        .bind(id)
        .bind(owner_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.config(id, owner_id).await
    }

    pub async fn delete_config(&self, id: i64, owner_id: i64) -> StoreResult<bool> {
        self.delete_owned("backtest_configs", id, owner_id).await
    }

    pub async fn configs_count(&self, owner_id: i64) -> StoreResult<i64> {
        let count = on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM backtest_configs WHERE user_id = $1")
            .bind(owner_id)
            .fetch_one(pool)
            .await)?;
        Ok(count)
    }

    /// A finished run's trades and alerts, written once with its end.
    pub async fn record_run_details(
        &self,
        run_id: i64,
        owner_id: i64,
        trades: &[NewTrade],
        alerts: &[NewAlert],
    ) -> StoreResult<()> {
        let now = Utc::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for trade in trades {
                sqlx::query(
                    "INSERT INTO backtest_trades (run_id, user_id, symbol, trade_type, status, entry_date, entry_price, \
                     exit_date, exit_price, quantity, pnl, pnl_pct, holding_period) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(run_id)
                .bind(owner_id)
                .bind(&trade.symbol)
                .bind(trade.trade_type)
                .bind(if trade.exit_date.is_some() { "closed" } else { "open" })
                .bind(&trade.entry_date)
                .bind(trade.entry_price)
                .bind(&trade.exit_date)
                .bind(trade.exit_price)
                .bind(trade.quantity)
                .bind(trade.pnl)
                .bind(trade.pnl_pct)
                .bind(&trade.holding_period)
                .execute(&mut *tx)
                .await?;
            }
            for alert in alerts {
                sqlx::query(
                    "INSERT INTO backtest_alerts (run_id, user_id, alert_type, title, message, symbol, context_data, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(run_id)
                .bind(owner_id)
                .bind(alert.alert_type)
                .bind(&alert.title)
                .bind(&alert.message)
                .bind(&alert.symbol)
                .bind(Json(&alert.context_data))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    pub async fn trades_page(
        &self,
        owner_id: i64,
        filter: &TradeFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<TradeRow>)> {
        // $2 is always bound: 0 (no run has it) means every run.
        let mut conditions = vec!["t.user_id = $1".to_string(), "(t.run_id = $2 OR $2 = 0)".to_string()];
        let mut texts: Vec<String> = Vec::new();
        for (column, value) in
            [("t.symbol", &filter.symbol), ("t.trade_type", &filter.trade_type), ("t.status", &filter.status)]
        {
            if let Some(value) = value {
                texts.push(value.clone());
                conditions.push(format!("{column} = ${}", texts.len() + 2));
            }
        }
        let filters = conditions.join(" AND ");
        let next = texts.len() + 3;
        let sql = format!("{TRADE_SELECT} WHERE {filters} ORDER BY t.id LIMIT ${next} OFFSET ${}", next + 1);
        let count_sql = format!("SELECT COUNT(*) FROM backtest_trades t WHERE {filters}");
        let run = filter.run_id.unwrap_or(0);
        let (count, rows) = on_pool!(self, pool => {
            let mut count = sqlx::query_scalar(&count_sql).bind(owner_id).bind(run);
            for text in &texts {
                count = count.bind(text);
            }
            let count: i64 = count.fetch_one(pool).await?;
            let mut query = sqlx::query_as(&sql).bind(owner_id).bind(run);
            for text in &texts {
                query = query.bind(text);
            }
            let rows = query.bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }

    pub async fn trade(&self, id: i64, owner_id: i64) -> StoreResult<Option<TradeRow>> {
        let sql = format!("{TRADE_SELECT} WHERE t.id = $1 AND t.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// The owner's alerts, of one run when given, newest first.
    pub async fn alerts_page(
        &self,
        owner_id: i64,
        run_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<AlertRow>)> {
        // $2 is always bound: 0 (no run has it) means every run.
        let filter = " AND (a.run_id = $2 OR $2 = 0)";
        let sql = format!("{ALERT_SELECT} WHERE a.user_id = $1{filter} ORDER BY a.id DESC LIMIT $3 OFFSET $4");
        let count_sql = format!("SELECT COUNT(*) FROM backtest_alerts a WHERE a.user_id = $1{filter}");
        let run = run_id.unwrap_or(0);
        let (count, rows) = on_pool!(self, pool => {
            let count: i64 = sqlx::query_scalar(&count_sql).bind(owner_id).bind(run).fetch_one(pool).await?;
            let rows = sqlx::query_as(&sql).bind(owner_id).bind(run).bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }

    pub async fn alert(&self, id: i64, owner_id: i64) -> StoreResult<Option<AlertRow>> {
        let sql = format!("{ALERT_SELECT} WHERE a.id = $1 AND a.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }
}
