-- A strategy's deployed versions (the old production API kept them in git):
-- `deploy` records the code and parameters with a message and an optional
-- tag; `rollback` restores an earlier one and records that too. The hash is
-- of the content, so the same code deployed twice has the same hash.
CREATE TABLE strategy_versions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id INTEGER     NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    commit_hash TEXT        NOT NULL,
    kind        TEXT        NOT NULL,
    message     TEXT        NOT NULL,
    tag         TEXT,
    code        TEXT        NOT NULL,
    parameters  TEXT        NOT NULL,
    created_at  DATETIME    NOT NULL
);
CREATE INDEX strategy_versions_strategy_idx ON strategy_versions (strategy_id, id);
