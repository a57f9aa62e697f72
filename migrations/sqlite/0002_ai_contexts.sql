CREATE TABLE ai_contexts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_name TEXT     NOT NULL,
    instructions TEXT     NOT NULL DEFAULT '',
    context_data TEXT     NOT NULL DEFAULT '{}',
    is_active    BOOLEAN  NOT NULL DEFAULT TRUE,
    created_at   DATETIME NOT NULL,
    updated_at   DATETIME NOT NULL,
    last_used    DATETIME
);
CREATE INDEX ai_contexts_user_idx ON ai_contexts (user_id, id);
