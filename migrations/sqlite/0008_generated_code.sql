-- Code generated for strategies, the validation runs over strategies and
-- their code, and backtest results (written by backtests, which come later).
CREATE TABLE generated_code (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id       INTEGER     REFERENCES strategies (id) ON DELETE CASCADE,
    strategy_name     TEXT        NOT NULL,
    file_name         TEXT        NOT NULL,
    code              TEXT        NOT NULL,
    -- The endpoint that wrote it: generate_code, generate_executable_code,
    -- generate_with_auto_fix or fix_errors.
    source            TEXT        NOT NULL,
    -- static_checks_passed or static_checks_failed: nothing has run it yet.
    validation_status TEXT        NOT NULL,
    problems          TEXT        NOT NULL,
    fix_attempts      INTEGER     NOT NULL,
    fix_history       TEXT        NOT NULL,
    created_at        DATETIME    NOT NULL
);
CREATE INDEX generated_code_user_idx ON generated_code (user_id, id);
CREATE INDEX generated_code_strategy_idx ON generated_code (strategy_id, id);

CREATE TABLE strategy_validations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id     INTEGER     NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    -- ai_validation (the rule-based validator) or static_checks (generated code).
    validation_type TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    errors          TEXT        NOT NULL,
    warnings        TEXT        NOT NULL,
    details         TEXT        NOT NULL,
    created_at      DATETIME    NOT NULL
);
CREATE INDEX strategy_validations_user_idx ON strategy_validations (user_id, id);
CREATE INDEX strategy_validations_strategy_idx ON strategy_validations (strategy_id, id);

CREATE TABLE strategy_performance (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER          NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id     INTEGER          NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    symbol          TEXT             NOT NULL,
    timeframe       TEXT             NOT NULL,
    period_start    DATETIME   ,
    period_end      DATETIME   ,
    initial_capital REAL            ,
    final_value     REAL            ,
    total_return    REAL            ,
    sharpe_ratio    REAL            ,
    max_drawdown    REAL            ,
    win_rate        REAL            ,
    total_trades    INTEGER,
    metrics         TEXT             NOT NULL,
    created_at      DATETIME         NOT NULL
);
CREATE INDEX strategy_performance_user_idx ON strategy_performance (user_id, id);
CREATE INDEX strategy_performance_strategy_idx ON strategy_performance (strategy_id, id);
