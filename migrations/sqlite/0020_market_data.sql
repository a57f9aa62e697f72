-- /api/data/: symbols, their stored bars (fetched once, reused; unique on
-- symbol, timestamp and interval), the fetches users asked for, the
-- indicator registry, and computed indicator values. Shared by every user;
-- only administrators write symbols, bars and indicators by hand.
CREATE TABLE market_symbols (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    symbol     TEXT        NOT NULL UNIQUE,
    name       TEXT        NOT NULL,
    exchange   TEXT        NOT NULL,
    sector     TEXT        NOT NULL,
    industry   TEXT        NOT NULL,
    is_active  BOOLEAN     NOT NULL,
    created_at DATETIME    NOT NULL,
    updated_at DATETIME    NOT NULL
);

CREATE TABLE market_bars (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    symbol_id INTEGER          NOT NULL REFERENCES market_symbols (id) ON DELETE CASCADE,
    ts        DATETIME         NOT NULL,
    bar_interval TEXT            NOT NULL,
    open      REAL             NOT NULL,
    high      REAL             NOT NULL,
    low       REAL             NOT NULL,
    close     REAL             NOT NULL,
    volume    REAL            ,
    adj_close REAL            ,
    UNIQUE (symbol_id, ts, bar_interval)
);

CREATE TABLE data_requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT        NOT NULL UNIQUE,
    symbol_id     INTEGER     NOT NULL REFERENCES market_symbols (id) ON DELETE CASCADE,
    user_id       INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period        TEXT        NOT NULL,
    bar_interval  TEXT       NOT NULL,
    status        TEXT        NOT NULL,
    source        TEXT        NOT NULL,
    records_saved INTEGER     NOT NULL,
    error_message TEXT,
    created_at    DATETIME    NOT NULL,
    completed_at  DATETIME   
);
CREATE INDEX data_requests_user_idx ON data_requests (user_id, id);

CREATE TABLE indicator_values (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    symbol_id  INTEGER     NOT NULL REFERENCES market_symbols (id) ON DELETE CASCADE,
    indicator  TEXT        NOT NULL,
    ts         DATETIME    NOT NULL,
    bar_interval TEXT       NOT NULL,
    value      TEXT        NOT NULL,
    parameters TEXT        NOT NULL,
    UNIQUE (symbol_id, indicator, ts, bar_interval)
);
