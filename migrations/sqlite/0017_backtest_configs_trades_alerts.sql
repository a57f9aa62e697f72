-- The rest of the old backtest model: reusable run settings (configs), and
-- each finished run's trades and alerts as rows clients can filter. The
-- worker writes trades and alerts when it records a run's end.
CREATE TABLE backtest_configs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           INTEGER          NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name              TEXT             NOT NULL,
    description       TEXT             NOT NULL,
    start_date        TEXT,
    end_date          TEXT,
    initial_capital   REAL             NOT NULL,
    commission        REAL             NOT NULL,
    slippage          REAL             NOT NULL,
    max_position_size REAL             NOT NULL,
    stop_loss         REAL            ,
    take_profit       REAL            ,
    data_source       TEXT             NOT NULL,
    timeframe         TEXT             NOT NULL,
    benchmark_symbol  TEXT             NOT NULL,
    is_template       BOOLEAN          NOT NULL,
    created_at        DATETIME         NOT NULL,
    updated_at        DATETIME         NOT NULL
);
CREATE INDEX backtest_configs_user_idx ON backtest_configs (user_id, id);

CREATE TABLE backtest_trades (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         INTEGER          NOT NULL REFERENCES backtest_runs (id) ON DELETE CASCADE,
    user_id        INTEGER          NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol         TEXT             NOT NULL,
    trade_type     TEXT             NOT NULL,
    status         TEXT             NOT NULL,
    entry_date     TEXT             NOT NULL,
    entry_price    REAL             NOT NULL,
    exit_date      TEXT,
    exit_price     REAL            ,
    quantity       REAL             NOT NULL,
    pnl            REAL            ,
    pnl_pct        REAL            ,
    holding_period TEXT
);
CREATE INDEX backtest_trades_user_idx ON backtest_trades (user_id, id);
CREATE INDEX backtest_trades_run_idx ON backtest_trades (run_id, id);

CREATE TABLE backtest_alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER     NOT NULL REFERENCES backtest_runs (id) ON DELETE CASCADE,
    user_id      INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    alert_type   TEXT        NOT NULL,
    title        TEXT        NOT NULL,
    message      TEXT        NOT NULL,
    symbol       TEXT,
    context_data TEXT        NOT NULL,
    created_at   DATETIME    NOT NULL
);
CREATE INDEX backtest_alerts_user_idx ON backtest_alerts (user_id, id);
CREATE INDEX backtest_alerts_run_idx ON backtest_alerts (run_id, id);
