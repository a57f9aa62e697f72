//! Database access for AlgoAgent.
//!
//! One [`Store`] type fronts either Postgres (production) or SQLite (the
//! embedded default). Queries are written once, as runtime `sqlx` queries
//! with `$N` placeholders that both drivers accept, and dispatched onto the
//! right pool by [`on_pool!`]. Each dialect has its own migrations folder.

pub mod accounts;
pub mod api_tokens;
pub mod backtest_records;
pub mod backtests;
pub mod bots;
pub mod conversations;
pub mod generated;
pub mod idempotency;
pub mod import;
pub mod legacy;
pub mod market;
pub mod operators;
pub mod strategies;
pub mod strategy_chat;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use sqlx::types::Json;

/// The two supported database backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The backend a `DATABASE_URL` selects, judged by its scheme alone.
    pub fn from_url(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme)?;
        match scheme {
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "sqlite" => Some(Backend::Sqlite),
            _ => None,
        }
    }
}

/// A connection pool of either dialect. Match on it through [`on_pool!`].
#[derive(Clone, Debug)]
pub enum DbPool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs the same query code against whichever pool the store holds.
///
/// The body is expanded once per dialect, so `sqlx` infers the database type
/// from the pool in each arm and one query text serves both backends.
#[macro_export]
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.pool() {
            $crate::DbPool::Postgres($pool) => $body,
            $crate::DbPool::Sqlite($pool) => $body,
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An insert or update hit a unique constraint. Callers turn this into a
    /// 4xx naming their field; detecting it on the write itself (rather than
    /// checking first) is what keeps concurrent writers honest.
    #[error("unique constraint violated")]
    UniqueViolation,
    #[error("unsupported DATABASE_URL scheme (expected postgres:// or sqlite://)")]
    UnsupportedScheme,
    #[error("could not prepare the database directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::UniqueViolation,
            _ => StoreError::Database(err),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Connection settings for [`Store::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self { max_connections: 10, acquire_timeout: Duration::from_secs(5) }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: DbPool,
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

impl Store {
    /// Opens a pool for `url`. A SQLite file (and its directory) is created
    /// when missing and put in WAL mode.
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Store> {
        match Backend::from_url(url) {
            Some(Backend::Postgres) => {
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect(url)
                    .await?;
                Ok(Store { pool: DbPool::Postgres(pool) })
            }
            Some(Backend::Sqlite) => {
                let connect = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                ensure_parent_dir(connect.get_filename())?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await?;
                Ok(Store { pool: DbPool::Sqlite(pool) })
            }
            None => Err(StoreError::UnsupportedScheme),
        }
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            DbPool::Postgres(_) => Backend::Postgres,
            DbPool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies every pending migration of this store's dialect.
    pub async fn migrate(&self) -> StoreResult<()> {
        match &self.pool {
            DbPool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            DbPool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// A round trip to the database, for readiness checks.
    pub async fn ping(&self) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// One page of an owner's rows and the owner's total: `count_sql` and
    /// `rows_sql` take the owner as `$1`; `rows_sql` also takes `$2` (limit)
    /// and `$3` (offset).
    pub(crate) async fn owner_page<R>(
        &self,
        count_sql: &str,
        rows_sql: &str,
        owner_id: i64,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<R>)>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + Send
            + Unpin,
    {
        let (count, rows) = on_pool!(self, pool => {
            let count: (i64,) = sqlx::query_as(count_sql).bind(owner_id).fetch_one(pool).await?;
            let rows: Vec<R> = sqlx::query_as(rows_sql).bind(owner_id).bind(limit).bind(offset).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count.0, rows))
        })?;
        Ok((count, rows))
    }

    /// Deletes row `id` of `table` if `owner_id` owns it; whether it did.
    /// `table` is always one of this crate's constants, never input.
    /// Deletes a row of a shared table (no owner); whether it was there.
    pub(crate) async fn delete_by_id(&self, table: &'static str, id: i64) -> StoreResult<bool> {
        let sql = format!("DELETE FROM {table} WHERE id = $1");
        let deleted = on_pool!(self, pool => sqlx::query(&sql)
            .bind(id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(deleted > 0)
    }

    pub(crate) async fn delete_owned(&self, table: &'static str, id: i64, owner_id: i64) -> StoreResult<bool> {
        let sql = format!("DELETE FROM {table} WHERE id = $1 AND user_id = $2");
        let deleted = on_pool!(self, pool => sqlx::query(&sql)
            .bind(id)
            .bind(owner_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(deleted > 0)
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
}

fn ensure_parent_dir(file: &Path) -> StoreResult<()> {
    let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme() {
        assert_eq!(Backend::from_url("postgres://u:p@h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::from_url("postgresql://h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::from_url("sqlite://data/x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("mysql://h/db"), None);
        assert_eq!(Backend::from_url("no-scheme"), None);
    }

    #[tokio::test]
    async fn sqlite_file_and_directory_are_created_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/app.db");
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url, &ConnectOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        assert!(path.exists());
        let DbPool::Sqlite(pool) = store.pool() else { panic!("expected sqlite") };
        let mode: (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
        assert_eq!(mode.0, "wal");
    }
}
