//! Backtest runs as jobs: queued by the API, claimed by workers on any
//! replica, held by a lease that a dead worker lets expire.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{on_pool, DbPool, Store, StoreResult};

/// The queue at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BacktestQueue {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
    pub worker_slots: i64,
}

/// Where a run is. The last four are final.
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";
pub const TIMED_OUT: &str = "timed_out";

#[derive(Debug, Clone, FromRow)]
pub struct BacktestRunRow {
    pub id: i64,
    pub run_id: String,
    pub user_id: i64,
    pub strategy_id: Option<i64>,
    pub status: String,
    pub code: String,
    pub symbols: Json<Value>,
    pub parameters: Json<Value>,
    pub attempts: i32,
    pub lease_until: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub result: Option<Json<Value>>,
    pub error_message: Option<String>,
    pub error_traceback: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub execution_time: Option<f64>,
}

impl BacktestRunRow {
    pub fn is_final(&self) -> bool {
        ![QUEUED, RUNNING].contains(&self.status.as_str())
    }
}

/// Which runs a list shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<String>,
    pub strategy_id: Option<i64>,
    /// Runs naming every one of these symbols.
    pub symbols: Vec<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_until: Option<DateTime<Utc>>,
}

/// A run to queue.
#[derive(Debug, Clone)]
pub struct NewBacktestRun<'a> {
    pub run_id: &'a str,
    pub user_id: i64,
    pub strategy_id: Option<i64>,
    pub code: &'a str,
    pub symbols: &'a Value,
    pub parameters: &'a Value,
    pub created_at: DateTime<Utc>,
}

/// How a claimed run ended.
#[derive(Debug, Clone)]
pub struct RunEnding<'a> {
    pub status: &'a str,
    pub result: Option<&'a Value>,
    pub error_message: Option<&'a str>,
    pub error_traceback: Option<&'a str>,
    pub execution_time: f64,
    pub at: DateTime<Utc>,
}

const COLUMNS: &str = "id, run_id, user_id, strategy_id, status, code, symbols, parameters, attempts, lease_until, \
     worker, result, error_message, error_traceback, created_at, started_at, completed_at, execution_time";

impl Store {
    pub async fn queue_backtest(&self, run: &NewBacktestRun<'_>) -> StoreResult<BacktestRunRow> {
        let sql = format!(
            "INSERT INTO backtest_runs (run_id, user_id, strategy_id, status, code, symbols, parameters, created_at) \
             VALUES ($1, $2, $3, '{QUEUED}', $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        let row = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(run.run_id)
            .bind(run.user_id)
            .bind(run.strategy_id)
            .bind(run.code)
            .bind(Json(run.symbols))
            .bind(Json(run.parameters))
            .bind(run.created_at)
            .fetch_one(pool)
            .await)?;
        Ok(row)
    }

    pub async fn backtest_run(&self, id: i64, owner_id: i64) -> StoreResult<Option<BacktestRunRow>> {
        let sql = format!("SELECT {COLUMNS} FROM backtest_runs WHERE id = $1 AND user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(id).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// The owner's run by its `bt_…` run_id.
    pub async fn backtest_run_by_ref(&self, run_ref: &str, owner_id: i64) -> StoreResult<Option<BacktestRunRow>> {
        let sql = format!("SELECT {COLUMNS} FROM backtest_runs WHERE run_id = $1 AND user_id = $2");
        let row = on_pool!(self, pool => sqlx::query_as(&sql).bind(run_ref).bind(owner_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// One page of the owner's runs that match `filter`, newest first.
    pub async fn backtest_runs_page(
        &self,
        owner_id: i64,
        filter: &RunFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(i64, Vec<BacktestRunRow>)> {
        let mut conditions = vec!["user_id = $1".to_string()];
        let mut texts: Vec<String> = Vec::new();
        let mut add = |condition: &str, value: String| {
            texts.push(value);
            conditions.push(condition.replace('?', &format!("${}", texts.len() + 1)));
        };
        if let Some(status) = &filter.status {
            add("status = ?", status.clone());
        }
        if let Some(strategy_id) = filter.strategy_id {
            add("CAST(strategy_id AS TEXT) = ?", strategy_id.to_string());
        }
        for symbol in &filter.symbols {
            // Symbols are [A-Z0-9.-]: nothing in them means anything to LIKE.
            add("CAST(symbols AS TEXT) LIKE ?", format!("%\"{symbol}\"%"));
        }
        let mut times: Vec<DateTime<Utc>> = Vec::new();
        for (condition, value) in [("created_at >= ", filter.created_from), ("created_at < ", filter.created_until)] {
            if let Some(value) = value {
                times.push(value);
                conditions.push(format!("{condition}${}", texts.len() + times.len() + 1));
            }
        }
        let filters = conditions.join(" AND ");
        let next = texts.len() + times.len() + 2;
        let sql = format!(
            "SELECT {COLUMNS} FROM backtest_runs WHERE {filters} ORDER BY id DESC LIMIT ${next} OFFSET ${}",
            next + 1
        );
        let count_sql = format!("SELECT COUNT(*) FROM backtest_runs WHERE {filters}");
        let (count, rows) = on_pool!(self, pool => {
            let mut count = sqlx::query_scalar(&count_sql).bind(owner_id);
            for text in &texts {
                count = count.bind(text);
            }
            for time in &times {
                count = count.bind(time);
            }
            let count: i64 = count.fetch_one(pool).await?;
            let mut query = sqlx::query_as(&sql).bind(owner_id);
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

    /// A strategy's runs, newest first: how many in all, and the first `limit`.
    pub async fn strategy_backtest_runs(
        &self,
        strategy_id: i64,
        owner_id: i64,
        limit: i64,
    ) -> StoreResult<(i64, Vec<BacktestRunRow>)> {
        let sql = format!(
            "SELECT {COLUMNS} FROM backtest_runs WHERE strategy_id = $1 AND user_id = $2 ORDER BY id DESC LIMIT $3"
        );
        let (count, rows) = on_pool!(self, pool => {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM backtest_runs WHERE strategy_id = $1 AND user_id = $2")
                    .bind(strategy_id)
                    .bind(owner_id)
                    .fetch_one(pool)
                    .await?;
            let rows = sqlx::query_as(&sql).bind(strategy_id).bind(owner_id).bind(limit).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>((count, rows))
        })?;
        Ok((count, rows))
    }

    /// Takes the oldest queued run whose owner has fewer than `per_user`
    /// running, for `worker` until `lease_until`. On Postgres the claims are
    /// serialized by a transaction-scoped advisory lock, so the per-user
    /// count is exact across replicas, and `SKIP LOCKED` passes over rows
    /// another transaction holds; SQLite has one writer at a time anyway.
    pub async fn claim_backtest(
        &self,
        worker: &str,
        per_user: i64,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<BacktestRunRow>> {
        let pick = "SELECT r.id FROM backtest_runs r WHERE r.status = 'queued' AND \
             (SELECT COUNT(*) FROM backtest_runs o WHERE o.user_id = r.user_id AND o.status = 'running') < $3 \
             ORDER BY r.id LIMIT 1";
        let claim = |pick: &str| {
            format!(
                "UPDATE backtest_runs SET status = '{RUNNING}', attempts = attempts + 1, worker = $1, lease_until = $2, \
                 started_at = COALESCE(started_at, $4) WHERE id = ({pick}) RETURNING {COLUMNS}"
            )
        };
        let row = match self.pool() {
            DbPool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // One claim at a time, across replicas; held to the commit.
                sqlx::query("SELECT pg_advisory_xact_lock(7261530017)").execute(&mut *tx).await?;
                let row = sqlx::query_as(&claim(&format!("{pick} FOR UPDATE SKIP LOCKED")))
                    .bind(worker)
                    .bind(lease_until)
                    .bind(per_user)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row
            }
            DbPool::Sqlite(pool) => {
                sqlx::query_as(&claim(pick))
                    .bind(worker)
                    .bind(lease_until)
                    .bind(per_user)
                    .bind(now)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(row)
    }

    /// Extends a running run's lease; `false` when it is no longer this
    /// worker's (cancelled, or taken back after an expiry).
    pub async fn renew_backtest_lease(&self, id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<bool> {
        let renewed = on_pool!(self, pool => sqlx::query(
            "UPDATE backtest_runs SET lease_until = $3 WHERE id = $1 AND worker = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(worker)
        .bind(until)
        .execute(pool)
        .await
        .map(|done| done.rows_affected() > 0))?;
        Ok(renewed)
    }

    /// Records how a claimed run ended, if it is still this worker's.
    pub async fn finish_backtest(&self, id: i64, worker: &str, ending: &RunEnding<'_>) -> StoreResult<bool> {
        let finished = on_pool!(self, pool => sqlx::query(
            "UPDATE backtest_runs SET status = $3, result = $4, error_message = $5, error_traceback = $6, \
             execution_time = $7, completed_at = $8, lease_until = NULL \
             WHERE id = $1 AND worker = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(worker)
        .bind(ending.status)
        .bind(ending.result.map(Json))
        .bind(ending.error_message)
        .bind(ending.error_traceback)
        .bind(ending.execution_time)
        .bind(ending.at)
        .execute(pool)
        .await
        .map(|done| done.rows_affected() > 0))?;
        Ok(finished)
    }

    /// Gives a run back to the queue. A worker shutting down mid-run
    /// refunds the attempt (the code did nothing wrong); a sandbox that
    /// could not start does not, so a run that never starts still ends.
    pub async fn release_backtest(&self, id: i64, worker: &str, refund_attempt: bool) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE backtest_runs SET status = 'queued', worker = NULL, lease_until = NULL, \
               started_at = NULL, attempts = attempts - $3 \
             WHERE id = $1 AND worker = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(worker)
        .bind(i32::from(refund_attempt))
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Cancels the owner's run if it is not final yet; the run as it is now.
    pub async fn cancel_backtest(
        &self,
        id: i64,
        owner_id: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<BacktestRunRow>> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE backtest_runs SET status = 'cancelled', completed_at = $3, lease_until = NULL \
             WHERE id = $1 AND user_id = $2 AND status IN ('queued', 'running')",
        )
        .bind(id)
        .bind(owner_id)
        .bind(at)
        .execute(pool)
        .await
        .map(|_| ()))?;
        self.backtest_run(id, owner_id).await
    }

    /// Says a replica's clients still watch run `id` live, until `until`.
    pub async fn keep_watching_backtest(&self, id: i64, until: DateTime<Utc>) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "UPDATE backtest_runs SET watched_until = $2 WHERE id = $1 AND (watched_until IS NULL OR watched_until < $2)",
        )
        .bind(id)
        .bind(until)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Cancels a live run that no replica's clients watch any more (none
    /// said so past `now`); whether it was cancelled.
    pub async fn cancel_unwatched_backtest(&self, id: i64, owner_id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        let cancelled = on_pool!(self, pool => sqlx::query(
            "UPDATE backtest_runs SET status = 'cancelled', completed_at = $3, lease_until = NULL \
             WHERE id = $1 AND user_id = $2 AND status IN ('queued', 'running') \
             AND (watched_until IS NULL OR watched_until <= $3)",
        )
        .bind(id)
        .bind(owner_id)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(cancelled > 0)
    }

    /// Whether a run is still running (a worker polls this to stop a
    /// cancelled one).
    pub async fn backtest_status(&self, id: i64) -> StoreResult<Option<String>> {
        let status = on_pool!(self, pool => sqlx::query_scalar("SELECT status FROM backtest_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(status)
    }

    /// Runs whose worker stopped renewing: back to the queue, or failed
    /// once `max_attempts` are spent. The failed ones are returned, for
    /// what waits on their end (a strategy's validation, a bot's verdict).
    pub async fn reclaim_expired_backtests(&self, max_attempts: i32, now: DateTime<Utc>) -> StoreResult<Reclaimed> {
        let fail_sql = format!(
            "UPDATE backtest_runs SET status = 'failed', \
               error_message = 'the workers running it stopped ' || attempts || ' times', \
               completed_at = $2, worker = NULL, lease_until = NULL \
             WHERE status = 'running' AND lease_until < $2 AND attempts >= $1 RETURNING {COLUMNS}"
        );
        let (failed, requeued) = on_pool!(self, pool => {
            let failed: Vec<BacktestRunRow> =
                sqlx::query_as(&fail_sql).bind(max_attempts).bind(now).fetch_all(pool).await?;
            let requeued = sqlx::query(
                "UPDATE backtest_runs SET status = 'queued', worker = NULL, lease_until = NULL \
                 WHERE status = 'running' AND lease_until < $1",
            )
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            Ok::<_, sqlx::Error>((failed, requeued))
        })?;
        Ok(Reclaimed { requeued, failed })
    }
}

/// What a sweep of expired leases did.
#[derive(Debug, Default)]
pub struct Reclaimed {
    pub requeued: u64,
    /// Runs failed for good, their attempts spent.
    pub failed: Vec<BacktestRunRow>,
}

impl Reclaimed {
    pub fn total(&self) -> u64 {
        self.requeued + self.failed.len() as u64
    }
}

/// A user's own series, as listed (the CSV stays in the row).
#[derive(Debug, Clone, FromRow)]
pub struct DatasetRow {
    pub id: i64,
    pub symbol: String,
    pub bars: i32,
    pub first_bar: String,
    pub last_bar: String,
    pub created_at: DateTime<Utc>,
}

/// A validated series to keep.
#[derive(Debug, Clone)]
pub struct NewDataset<'a> {
    pub user_id: i64,
    pub symbol: &'a str,
    pub csv: &'a str,
    pub bars: i32,
    pub first_bar: &'a str,
    pub last_bar: &'a str,
    pub created_at: DateTime<Utc>,
}

const DATASET_COLUMNS: &str = "id, symbol, bars, first_bar, last_bar, created_at";

impl Store {
    /// Stores the user's series for `symbol`, replacing an earlier one.
    pub async fn save_dataset(&self, dataset: &NewDataset<'_>) -> StoreResult<DatasetRow> {
        let sql = format!(
            "INSERT INTO market_datasets (user_id, symbol, csv, bars, first_bar, last_bar, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (user_id, symbol) DO UPDATE SET csv = excluded.csv, bars = excluded.bars, \
             first_bar = excluded.first_bar, last_bar = excluded.last_bar, created_at = excluded.created_at \
             RETURNING {DATASET_COLUMNS}"
        );
        let row = on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(dataset.user_id)
            .bind(dataset.symbol)
            .bind(dataset.csv)
            .bind(dataset.bars)
            .bind(dataset.first_bar)
            .bind(dataset.last_bar)
            .bind(dataset.created_at)
            .fetch_one(pool)
            .await)?;
        Ok(row)
    }

    pub async fn datasets(&self, user_id: i64) -> StoreResult<Vec<DatasetRow>> {
        let sql = format!("SELECT {DATASET_COLUMNS} FROM market_datasets WHERE user_id = $1 ORDER BY symbol");
        let rows = on_pool!(self, pool => sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// The user's CSV for `symbol`, if they uploaded one.
    pub async fn dataset_csv(&self, user_id: i64, symbol: &str) -> StoreResult<Option<String>> {
        let csv = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT csv FROM market_datasets WHERE user_id = $1 AND symbol = $2",
        )
        .bind(user_id)
        .bind(symbol)
        .fetch_optional(pool)
        .await)?;
        Ok(csv)
    }

    /// The queue as operators watch it: runs waiting and running, how long
    /// the oldest has waited, and the worker slots alive (seen since
    /// `workers_seen_since`).
    pub async fn backtest_queue(&self, workers_seen_since: DateTime<Utc>) -> StoreResult<BacktestQueue> {
        let counts: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT status, COUNT(*) FROM backtest_runs WHERE status IN ('queued', 'running') GROUP BY status",
        )
        .fetch_all(pool)
        .await)?;
        let oldest_queued_at: Option<DateTime<Utc>> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT created_at FROM backtest_runs WHERE status = 'queued' ORDER BY id LIMIT 1",
        )
        .fetch_optional(pool)
        .await)?;
        let count = |status: &str| counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        Ok(BacktestQueue {
            queued: count(QUEUED),
            running: count(RUNNING),
            oldest_queued_at,
            worker_slots: self.live_backtest_worker_slots(workers_seen_since).await?,
        })
    }

    /// A worker process reports in: alive, with `slots` workers.
    pub async fn report_backtest_workers(&self, name: &str, slots: i32, now: DateTime<Utc>) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO backtest_workers (name, slots, started_at, seen_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET slots = excluded.slots, seen_at = excluded.seen_at",
        )
        .bind(name)
        .bind(slots)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// A worker process leaves (it is shutting down), and rows of any
    /// process not seen since `stale` are forgotten.
    pub async fn leave_backtest_workers(&self, name: &str, stale: DateTime<Utc>) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("DELETE FROM backtest_workers WHERE name = $1 OR seen_at < $2")
            .bind(name)
            .bind(stale)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Worker slots of the processes seen since `since`.
    pub async fn live_backtest_worker_slots(&self, since: DateTime<Utc>) -> StoreResult<i64> {
        let slots: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT CAST(SUM(slots) AS BIGINT) FROM backtest_workers WHERE seen_at >= $1",
        )
        .bind(since)
        .fetch_one(pool)
        .await)?;
        Ok(slots.unwrap_or(0))
    }

    /// Whether the user has a series for `symbol` (without reading it).
    pub async fn has_dataset(&self, user_id: i64, symbol: &str) -> StoreResult<bool> {
        let found: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM market_datasets WHERE user_id = $1 AND symbol = $2",
        )
        .bind(user_id)
        .bind(symbol)
        .fetch_optional(pool)
        .await)?;
        Ok(found.is_some())
    }

    pub async fn delete_dataset(&self, user_id: i64, id: i64) -> StoreResult<bool> {
        let deleted = on_pool!(self, pool => sqlx::query("DELETE FROM market_datasets WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))?;
        Ok(deleted)
    }
}
