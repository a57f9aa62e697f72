-- The latest backtest result of each strategy (the old app's
-- LatestBacktestResult): one row per strategy, replaced by every completed
-- run on it and by `backtest-results/save_result/`.
CREATE TABLE latest_backtest_results (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id          INTEGER          NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id      INTEGER          NOT NULL UNIQUE REFERENCES strategies (id) ON DELETE CASCADE,
    symbol           TEXT             NOT NULL,
    timeframe        TEXT             NOT NULL,
    period           TEXT             NOT NULL,
    initial_balance  REAL             NOT NULL,
    commission       REAL             NOT NULL,
    total_trades     INTEGER          NOT NULL,
    winning_trades   INTEGER          NOT NULL,
    losing_trades    INTEGER          NOT NULL,
    win_rate         REAL             NOT NULL,
    net_profit       REAL             NOT NULL,
    total_return_pct REAL             NOT NULL,
    final_equity     REAL,
    max_drawdown     REAL             NOT NULL,
    sharpe_ratio     REAL,
    trades           TEXT             NOT NULL,
    equity_curve     TEXT             NOT NULL,
    run_id           TEXT,
    created_at       DATETIME         NOT NULL,
    updated_at       DATETIME         NOT NULL
);
CREATE INDEX latest_backtest_results_user_idx ON latest_backtest_results (user_id, id);
