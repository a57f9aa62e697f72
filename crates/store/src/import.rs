//! Writing an import (`algoagent import-django`) in one transaction: rows
//! of our tables, ids given, in an order that satisfies every reference,
//! then the identity sequences moved past them and a ledger entry naming
//! the source. Either all of it is written or none.

use chrono::{DateTime, Utc};

use crate::{on_pool, DbPool, Store, StoreResult};

/// One value of a row to insert.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Bool(bool),
    Time(Option<DateTime<Utc>>),
    /// A JSON column (`jsonb` on Postgres, text on SQLite).
    Json(serde_json::Value),
}

impl Cell {
    pub fn text(value: impl Into<String>) -> Cell {
        Cell::Text(Some(value.into()))
    }

    pub fn int(value: i64) -> Cell {
        Cell::Int(Some(value))
    }

    pub fn time(value: DateTime<Utc>) -> Cell {
        Cell::Time(Some(value))
    }
}

/// Rows for one of our tables; `columns` are this crate's callers'
/// constants, never input.
#[derive(Debug, Clone)]
pub struct TableRows {
    pub table: &'static str,
    pub columns: &'static [&'static str],
    pub rows: Vec<Vec<Cell>>,
}

/// An update run after every insert (references that are circular).
#[derive(Debug, Clone)]
pub struct LinkUpdate {
    pub sql: &'static str,
    pub values: Vec<Cell>,
}

/// Everything one import writes.
#[derive(Debug, Clone, Default)]
pub struct ImportWrite {
    /// In insert order.
    pub tables: Vec<TableRows>,
    pub links: Vec<LinkUpdate>,
    /// The source, as the ledger keeps it.
    pub fingerprint: String,
    pub source: String,
    pub summary: String,
}

macro_rules! bind_cells {
    ($query:expr, $cells:expr) => {{
        let mut query = $query;
        for cell in $cells {
            query = match cell {
                Cell::Int(value) => query.bind(*value),
                Cell::Real(value) => query.bind(*value),
                Cell::Text(value) => query.bind(value.clone()),
                Cell::Bool(value) => query.bind(*value),
                Cell::Time(value) => query.bind(*value),
                Cell::Json(value) => query.bind(crate::Json(value.clone())),
            };
        }
        query
    }};
}

impl Store {
    /// Whether a source with this fingerprint was imported before.
    pub async fn import_recorded(&self, fingerprint: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let row: Option<(DateTime<Utc>,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT imported_at FROM import_ledger WHERE fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(at,)| at))
    }

    /// How many users there are (an import into a database with users
    /// needs `--merge`).
    pub async fn count_users(&self) -> StoreResult<i64> {
        let (count,): (i64,) =
            on_pool!(self, pool => sqlx::query_as("SELECT COUNT(*) FROM users").fetch_one(pool).await)?;
        Ok(count)
    }

    /// The highest id of one of our tables (0 when empty); `table` is the
    /// importer's constant, never input.
    pub async fn max_id(&self, table: &str) -> StoreResult<i64> {
        let sql = format!("SELECT COALESCE(MAX(id), 0) FROM {table}");
        let (max,): (i64,) = on_pool!(self, pool => sqlx::query_as(&sql).fetch_one(pool).await)?;
        Ok(max)
    }

    /// Whether a strategy template already has this (globally unique) name.
    pub async fn template_name_taken(&self, name: &str) -> StoreResult<bool> {
        let row: Option<(i64,)> = on_pool!(self, pool => sqlx::query_as("SELECT id FROM strategy_templates WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await)?;
        Ok(row.is_some())
    }

    /// Writes the whole import in one transaction.
    pub async fn write_import(&self, write: &ImportWrite) -> StoreResult<()> {
        let postgres = matches!(self.pool(), DbPool::Postgres(_));
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for table in &write.tables {
                let placeholders: Vec<String> = (1..=table.columns.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    table.table,
                    table.columns.join(", "),
                    placeholders.join(", ")
                );
                for row in &table.rows {
                    bind_cells!(sqlx::query(&sql), row).execute(&mut *tx).await?;
                }
                if postgres && table.columns.first() == Some(&"id") && !table.rows.is_empty() {
                    // Explicit ids leave the identity behind: move it past them.
                    let sql = format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', 'id'), (SELECT MAX(id) FROM {0}))",
                        table.table
                    );
                    sqlx::query(&sql).execute(&mut *tx).await?;
                }
            }
            for link in &write.links {
                bind_cells!(sqlx::query(link.sql), &link.values).execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO import_ledger (fingerprint, source, imported_at, summary) VALUES ($1, $2, $3, $4)",
            )
            .bind(&write.fingerprint)
            .bind(&write.source)
            .bind(Utc::now())
            .bind(&write.summary)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })?;
        Ok(())
    }
}
