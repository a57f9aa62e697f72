-- Processes running backtest workers, each reporting in every few seconds:
-- an HTTP-only replica (no sandbox of its own) takes backtests while one is
-- alive somewhere, and refuses them (503) rather than queue them for no one.
CREATE TABLE backtest_workers (
    name       TEXT        PRIMARY KEY,
    slots      INTEGER     NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL
);
