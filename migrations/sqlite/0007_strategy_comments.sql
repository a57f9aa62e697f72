-- Comments on strategies, optionally rated and threaded.
CREATE TABLE strategy_comments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id INTEGER  NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    parent_id   INTEGER  REFERENCES strategy_comments (id) ON DELETE CASCADE,
    content     TEXT     NOT NULL,
    rating      INTEGER  CHECK (rating BETWEEN 1 AND 5),
    created_at  DATETIME NOT NULL,
    updated_at  DATETIME NOT NULL
);
CREATE INDEX strategy_comments_user_idx ON strategy_comments (user_id, id);
