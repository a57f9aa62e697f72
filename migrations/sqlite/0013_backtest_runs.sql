-- Backtests as jobs: a row per run, claimed by a worker (one writer at a
-- time on SQLite), held by a lease. A worker that dies leaves its lease to
-- expire: the run goes back to the queue, or fails once its attempts are
-- spent.
CREATE TABLE backtest_runs (
    id              INTEGER  PRIMARY KEY AUTOINCREMENT,
    -- `bt_<8 hex>`, the old API's name for a run.
    run_id          TEXT     NOT NULL UNIQUE,
    user_id         INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id     INTEGER  REFERENCES strategies (id) ON DELETE SET NULL,
    -- queued | running | completed | failed | cancelled | timed_out
    status          TEXT     NOT NULL,
    code            TEXT     NOT NULL,
    symbols         TEXT     NOT NULL,
    -- start_date, end_date, initial_capital, commission
    parameters      TEXT     NOT NULL,
    attempts        INTEGER  NOT NULL DEFAULT 0,
    lease_until     DATETIME,
    worker          TEXT,
    result          TEXT,
    error_message   TEXT,
    error_traceback TEXT,
    created_at      DATETIME NOT NULL,
    started_at      DATETIME,
    completed_at    DATETIME,
    execution_time  REAL
);
CREATE INDEX backtest_runs_queue_idx ON backtest_runs (status, id);
CREATE INDEX backtest_runs_user_idx ON backtest_runs (user_id, id);
