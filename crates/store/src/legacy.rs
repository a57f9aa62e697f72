//! Reading the old Django app's database (a SQLite file or a Postgres URL),
//! read-only, for `algoagent import-django`.
//!
//! Every column is read as text (`CAST(… AS TEXT)`), which both dialects
//! answer the same way for the types Django wrote (integers, decimals,
//! booleans as `0/1` or `true/false`, datetimes, JSON); the importer parses
//! them. Table and column names are the importer's constants, never input.

use std::str::FromStr;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Row;

use crate::{DbPool, StoreError, StoreResult};

/// A row of text columns, in the order asked for.
pub type TextRow = Vec<Option<String>>;

pub struct LegacySource {
    pool: DbPool,
}

impl LegacySource {
    /// `from`: `postgres://…`, `sqlite://…` or a path to a SQLite file,
    /// which must exist (it is opened read-only).
    pub async fn open(from: &str) -> StoreResult<LegacySource> {
        let pool = if from.starts_with("postgres://") || from.starts_with("postgresql://") {
            DbPool::Postgres(PgPoolOptions::new().max_connections(2).connect(from).await?)
        } else {
            let path = from.strip_prefix("sqlite://").unwrap_or(from);
            if !std::path::Path::new(path).is_file() {
                return Err(StoreError::Directory {
                    path: path.to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such SQLite file"),
                });
            }
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?.read_only(true);
            DbPool::Sqlite(SqlitePoolOptions::new().max_connections(1).connect_with(options).await?)
        };
        Ok(LegacySource { pool })
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// The names of its tables.
    pub async fn tables(&self) -> StoreResult<Vec<String>> {
        let names: Vec<(String,)> = crate::on_pool!(self, pool => sqlx::query_as(match self.pool {
            DbPool::Sqlite(_) => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            DbPool::Postgres(_) => "SELECT table_name::text FROM information_schema.tables \
                                   WHERE table_schema = current_schema() ORDER BY table_name",
        })
        .fetch_all(pool)
        .await)?;
        Ok(names.into_iter().map(|(name,)| name).collect())
    }

    /// How many rows `table` has.
    pub async fn count(&self, table: &str) -> StoreResult<i64> {
        let sql = format!("SELECT COUNT(*) FROM \"{table}\"");
        let (count,): (i64,) = crate::on_pool!(self, pool => sqlx::query_as(&sql).fetch_one(pool).await)?;
        Ok(count)
    }

    /// Every row of `table` (ordered by `order_by`), its `columns` as text.
    pub async fn rows(&self, table: &str, columns: &[&str], order_by: &str) -> StoreResult<Vec<TextRow>> {
        let selected: Vec<String> = columns.iter().map(|c| format!("CAST(\"{c}\" AS TEXT)")).collect();
        let sql = format!("SELECT {} FROM \"{table}\" ORDER BY {order_by}", selected.join(", "));
        let rows = crate::on_pool!(self, pool => {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            rows.iter()
                .map(|row| (0..columns.len()).map(|i| row.try_get::<Option<String>, _>(i)).collect::<Result<TextRow, _>>())
                .collect::<Result<Vec<TextRow>, sqlx::Error>>()
        })?;
        Ok(rows)
    }

    pub async fn close(&self) {
        crate::on_pool!(self, pool => pool.close().await);
    }
}
