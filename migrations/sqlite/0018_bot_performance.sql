-- Bot verification (the old BotPerformance): one row per strategy, set by
-- its verification runs (backtest jobs with purpose verify_bot) by the old
-- rule: at least trades_threshold trades is verified, none is failed, and
-- anything between is still testing.
CREATE TABLE bot_performance (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id             INTEGER          NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id         INTEGER          NOT NULL UNIQUE REFERENCES strategies (id) ON DELETE CASCADE,
    verification_status TEXT             NOT NULL,
    trades_threshold    INTEGER          NOT NULL,
    symbol              TEXT,
    total_return        REAL            ,
    total_trades        INTEGER,
    win_rate            REAL            ,
    sharpe_ratio        REAL            ,
    max_drawdown        REAL            ,
    last_run_id         TEXT,
    message             TEXT             NOT NULL,
    last_tested_at      DATETIME   ,
    verified_at         DATETIME   ,
    created_at          DATETIME         NOT NULL,
    updated_at          DATETIME         NOT NULL
);
CREATE INDEX bot_performance_user_idx ON bot_performance (user_id, id);
