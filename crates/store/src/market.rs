//! `/api/data/`'s tables: symbols, stored bars (unique on symbol,
//! timestamp and interval, so a fetch stores each bar once), users' fetch
//! requests, and computed indicator values. Symbols and bars are shared.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{on_pool, Store, StoreError, StoreResult};

#[derive(Debug, Clone, FromRow)]
pub struct SymbolRow {
    pub id: i64,
    pub symbol: String,
    pub name: String,
    pub exchange: String,
    pub sector: String,
    pub industry: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolFields {
    pub symbol: String,
    pub name: String,
    pub exchange: String,
    pub sector: String,
    pub industry: String,
    pub is_active: bool,
}

impl From<&SymbolRow> for SymbolFields {
    fn from(row: &SymbolRow) -> Self {
        Self {
            symbol: row.symbol.clone(),
            name: row.name.clone(),
            exchange: row.exchange.clone(),
            sector: row.sector.clone(),
            industry: row.industry.clone(),
            is_active: row.is_active,
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct BarRow {
    pub id: i64,
    pub symbol: String,
    pub ts: DateTime<Utc>,
    pub bar_interval: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: Option<f64>,
    pub adj_close: Option<f64>,
}

/// A bar to store.
#[derive(Debug, Clone)]
pub struct NewBar {
    pub ts: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: Option<f64>,
    pub adj_close: Option<f64>,
}

/// Which bars a list shows.
#[derive(Debug, Clone, Default)]
pub struct BarFilter {
    pub symbol: Option<String>,
    pub interval: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct DataRequestRow {
    pub id: i64,
    pub request_id: String,
    pub symbol: String,
    pub user_id: i64,
    pub period: String,
    pub bar_interval: String,
    pub status: String,
    pub source: String,
    pub records_saved: i32,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct IndicatorValueRow {
    pub id: i64,
    pub symbol: String,
    pub indicator: String,
    pub ts: DateTime<Utc>,
    pub bar_interval: String,
    pub value: Json<Value>,
    pub parameters: Json<Value>,
}

const SYMBOL_SELECT: &str =
    "SELECT id, symbol, name, exchange, sector, industry, is_active, created_at, updated_at FROM market_symbols";
const BAR_SELECT: &str = "SELECT b.id, s.symbol, b.ts, b.bar_interval, b.open, b.high, b.low, b.close, b.volume, \
     b.adj_close FROM market_bars b JOIN market_symbols s ON s.id = b.symbol_id";
const REQUEST_SELECT: &str = "SELECT r.id, r.request_id, s.symbol, r.user_id, r.period, r.bar_interval, r.status, \
     r.source, r.records_saved, r.error_message, r.created_at, r.completed_at \
     FROM data_requests r JOIN market_symbols s ON s.id = r.symbol_id";
const VALUE_SELECT: &str = "SELECT v.id, s.symbol, v.indicator, v.ts, v.bar_interval, v.value, v.parameters \
     FROM indicator_values v JOIN market_symbols s ON s.id = v.symbol_id";

fn missing() -> StoreError {
    StoreError::Database(sqlx::Error::RowNotFound)
}

impl Store {
    pub async fn create_symbol(&self, fields: &SymbolFields) -> StoreResult<SymbolRow> {
        let now = Utc::now();
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "INSERT INTO market_symbols (symbol, name, exchange, sector, industry, is_active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        )
        .bind(&fields.symbol)
        .bind(&fields.name)
        .bind(&fields.exchange)
        .bind(&fields.sector)
        .bind(&fields.industry)
        .bind(fields.is_active)
        .bind(now)
        .fetch_one(pool)
        .await)?;
        self.market_symbol(id).await?.ok_or_else(missing)
    }

    /// The symbol's row, made (active, named after itself) if it is new.
    pub async fn ensure_symbol(&self, symbol: &str) -> StoreResult<SymbolRow> {
        if let Some(row) = self.market_symbol_named(symbol).await? {
            return Ok(row);
        }
        let fields = SymbolFields { symbol: symbol.into(), name: symbol.into(), is_active: true, ..Default::default() };
        match self.create_symbol(&fields).await {
            Ok(row) => Ok(row),
            // Made by a concurrent fetch meanwhile.
            Err(StoreError::UniqueViolation) => self.market_symbol_named(symbol).await?.ok_or_else(missing),
            Err(err) => Err(err),
        }
    }

    pub async fn market_symbol(&self, id: i64) -> StoreResult<Option<SymbolRow>> {
        let sql = format!("{SYMBOL_SELECT} WHERE id = $1");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(row)
    }

    pub async fn market_symbol_named(&self, symbol: &str) -> StoreResult<Option<SymbolRow>> {
        let sql = format!("{SYMBOL_SELECT} WHERE symbol = $1");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(symbol).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// Symbols, by symbol; those whose symbol or name contains `query` when given.
    pub async fn market_symbols_page(
        &self,
        query: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<SymbolRow>)> {
        let pattern = query
            .map(|q| format!("%{}%", q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        let filter = " WHERE ($1 = '' OR LOWER(symbol) LIKE $1 ESCAPE '\\' OR LOWER(name) LIKE $1 ESCAPE '\\')";
        let sql = format!("{SYMBOL_SELECT}{filter} ORDER BY symbol LIMIT $2 OFFSET $3");
        let count_sql = format!("SELECT COUNT(*) FROM market_symbols{filter}");
        let pattern = pattern.unwrap_or_default();
        let (count, rows) = on_pool!(self, pool => {
            let count: i64 = sqlx::query_scalar(&count_sql).bind(&pattern).fetch_one(pool).await?;
            let rows = sqlx::query_as(&sql).bind(&pattern).bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }

    pub async fn update_symbol(&self, id: i64, fields: &SymbolFields) -> StoreResult<Option<SymbolRow>> {
        let updated = on_pool!(self, pool => sqlx::query(
            "UPDATE market_symbols SET symbol = $1, name = $2, exchange = $3, sector = $4, industry = $5, \
             is_active = $6, updated_at = $7 WHERE id = $8",
        )
        .bind(&fields.symbol)
        .bind(&fields.name)
        .bind(&fields.exchange)
        .bind(&fields.sector)
        .bind(&fields.industry)
        .bind(fields.is_active)
        .bind(Utc::now())
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if updated == 0 {
            return Ok(None);
        }
        self.market_symbol(id).await
    }

    pub async fn delete_symbol(&self, id: i64) -> StoreResult<bool> {
        self.delete_by_id("market_symbols", id).await
    }

    /// Stores bars, each once: a bar already stored is left as it is.
    /// Returns how many were new.
    pub async fn save_bars(&self, symbol_id: i64, interval: &str, bars: &[NewBar]) -> StoreResult<u64> {
        let saved = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut saved = 0;
            for bar in bars {
                saved += sqlx::query(
                    "INSERT INTO market_bars (symbol_id, ts, bar_interval, open, high, low, close, volume, adj_close) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (symbol_id, ts, bar_interval) DO NOTHING",
                )
                .bind(symbol_id)
                .bind(bar.ts)
                .bind(interval)
                .bind(bar.open)
                .bind(bar.high)
                .bind(bar.low)
                .bind(bar.close)
                .bind(bar.volume)
                .bind(bar.adj_close)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(saved)
        })?;
        Ok(saved)
    }

    fn bar_conditions(filter: &BarFilter) -> (String, Vec<String>, Vec<DateTime<Utc>>) {
        let mut conditions = vec!["1 = 1".to_string()];
        let mut texts = Vec::new();
        let mut times = Vec::new();
        if let Some(symbol) = &filter.symbol {
            texts.push(symbol.clone());
            conditions.push(format!("s.symbol = ${}", texts.len()));
        }
        if let Some(interval) = &filter.interval {
            texts.push(interval.clone());
            conditions.push(format!("b.bar_interval = ${}", texts.len()));
        }
        for (condition, value) in [("b.ts >= ", filter.from), ("b.ts < ", filter.until)] {
            if let Some(value) = value {
                times.push(value);
                conditions.push(format!("{condition}${}", texts.len() + times.len()));
            }
        }
        (conditions.join(" AND "), texts, times)
    }

    /// Stored bars matching `filter`, oldest first.
    pub async fn bars_page(&self, filter: &BarFilter, limit: i64, offset: i64) -> StoreResult<(i64, Vec<BarRow>)> {
        let (conditions, texts, times) = Self::bar_conditions(filter);
        let next = texts.len() + times.len() + 1;
        let sql = format!(
            "{BAR_SELECT} WHERE {conditions} ORDER BY s.symbol, b.bar_interval, b.ts LIMIT ${next} OFFSET ${}",
            next + 1
        );
        let count_sql = format!(
            "SELECT COUNT(*) FROM market_bars b JOIN market_symbols s ON s.id = b.symbol_id WHERE {conditions}"
        );
        let (count, rows) = on_pool!(self, pool => {
            let mut count = sqlx::query_scalar(&count_sql);
            for text in &texts {
                count = count.bind(text);
            }
            for time in &times {
                count = count.bind(time);
            }
            let count: i64 = count.fetch_one(pool).await?;
            let mut query = sqlx::query_as(&sql);
            for text in &texts {
                query = query.bind(text);
            }
            for time in &times {
                query = query.bind(time);
            }
            let rows = query.bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }

    pub async fn bar(&self, id: i64) -> StoreResult<Option<BarRow>> {
        let sql = format!("{BAR_SELECT} WHERE b.id = $1");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(row)
    }

    pub async fn delete_bar(&self, id: i64) -> StoreResult<bool> {
        self.delete_by_id("market_bars", id).await
    }

    pub async fn bars_count(&self, symbol_id: i64, interval: &str) -> StoreResult<i64> {
        let count = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM market_bars WHERE symbol_id = $1 AND bar_interval = $2",
        )
        .bind(symbol_id)
        .bind(interval)
        .fetch_one(pool)
        .await)?;
        Ok(count)
    }

    #[allow(clippy::too_many_arguments, reason = "one row's columns")]
    pub async fn record_data_request(
        &self,
        request_id: &str,
        symbol_id: i64,
        user_id: i64,
        period: &str,
        interval: &str,
        source: &str,
        outcome: Result<i32, &str>,
    ) -> StoreResult<DataRequestRow> {
        let now = Utc::now();
        let (status, saved, error) = match outcome {
            Ok(saved) => ("completed", saved, None),
            Err(error) => ("failed", 0, Some(error)),
        };
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO data_requests (request_id, symbol_id, user_id, period, bar_interval, status, source, \
             records_saved, error_message, created_at, completed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(request_id)
        .bind(symbol_id)
        .bind(user_id)
        .bind(period)
        .bind(interval)
        .bind(status)
        .bind(source)
        .bind(saved)
        .bind(error)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        let sql = format!("{REQUEST_SELECT} WHERE r.request_id = $1");
        let row: Option<DataRequestRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).bind(request_id).fetch_optional(pool).await)?;
        row.ok_or_else(missing)
    }

    /// When `symbol`'s bars at `interval` over `period` were last fetched
    /// whole, by anyone.
    pub async fn last_fetch(&self, symbol: &str, interval: &str, period: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let sql = "SELECT r.completed_at FROM data_requests r JOIN market_symbols s ON s.id = r.symbol_id \
                   WHERE s.symbol = $1 AND r.bar_interval = $2 AND r.period = $3 AND r.status = 'completed' \
                   ORDER BY r.completed_at DESC LIMIT 1";
        let at: Option<Option<DateTime<Utc>>> = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(symbol)
            .bind(interval)
            .bind(period)
            .fetch_optional(pool)
            .await)?;
        Ok(at.flatten())
    }

    /// The user's fetch requests, newest first.
    pub async fn data_requests_page(
        &self,
        user_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<DataRequestRow>)> {
        let sql = format!("{REQUEST_SELECT} WHERE r.user_id = $1 ORDER BY r.id DESC LIMIT $2 OFFSET $3");
        let (count, rows) = on_pool!(self, pool => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM data_requests WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query_as(&sql).bind(user_id).bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }

    pub async fn data_request(&self, id: i64, user_id: i64) -> StoreResult<Option<DataRequestRow>> {
        let sql = format!("{REQUEST_SELECT} WHERE r.id = $1 AND r.user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(user_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// Replaces the indicator's values at these times.
    pub async fn save_indicator_values(
        &self,
        symbol_id: i64,
        indicator: &str,
        interval: &str,
        parameters: &Value,
        values: &[(DateTime<Utc>, Value)],
    ) -> StoreResult<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (ts, value) in values {
                sqlx::query(
                    "INSERT INTO indicator_values (symbol_id, indicator, ts, bar_interval, value, parameters) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (symbol_id, indicator, ts, bar_interval) \
                     DO UPDATE SET value = excluded.value, parameters = excluded.parameters",
                )
                .bind(symbol_id)
                .bind(indicator)
                .bind(ts)
                .bind(interval)
                .bind(Json(value))
                .bind(Json(parameters))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Stored indicator values, oldest first, of a symbol, indicator and
    /// interval when given ("" means any).
    pub async fn indicator_values_page(
        &self,
        symbol: &str,
        indicator: &str,
        interval: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<IndicatorValueRow>)> {
        let filter = " WHERE ($1 = '' OR s.symbol = $1) AND ($2 = '' OR v.indicator = $2) \
                      AND ($3 = '' OR v.bar_interval = $3)";
        let sql = format!("{VALUE_SELECT}{filter} ORDER BY s.symbol, v.indicator, v.ts LIMIT $4 OFFSET $5");
        let count_sql =
            format!("SELECT COUNT(*) FROM indicator_values v JOIN market_symbols s ON s.id = v.symbol_id{filter}");
        let (count, rows) = on_pool!(self, pool => {
            let count: i64 =
                sqlx::query_scalar(&count_sql).bind(symbol).bind(indicator).bind(interval).fetch_one(pool).await?;
            let rows = sqlx::query_as(&sql)
                .bind(symbol)
                .bind(indicator)
                .bind(interval)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }

    pub async fn indicator_value(&self, id: i64) -> StoreResult<Option<IndicatorValueRow>> {
        let sql = format!("{VALUE_SELECT} WHERE v.id = $1");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(row)
    }
}
