-- Users' own OHLCV series for backtests, by symbol. The validated,
-- normalised CSV lives in the row, so a worker on any machine reads it.
CREATE TABLE market_datasets (
    id         INTEGER  PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    symbol     TEXT     NOT NULL,
    csv        TEXT     NOT NULL,
    bars       INTEGER  NOT NULL,
    first_bar  TEXT     NOT NULL,
    last_bar   TEXT     NOT NULL,
    created_at DATETIME NOT NULL,
    UNIQUE (user_id, symbol)
);
