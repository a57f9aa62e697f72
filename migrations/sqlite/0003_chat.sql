CREATE TABLE chat_sessions (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id            TEXT     NOT NULL UNIQUE,
    user_id               INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ai_context_id         INTEGER  REFERENCES ai_contexts (id) ON DELETE SET NULL,
    title                 TEXT     NOT NULL,
    generated_strategies  TEXT     NOT NULL DEFAULT '[]',
    is_active             BOOLEAN  NOT NULL DEFAULT TRUE,
    created_at            DATETIME NOT NULL,
    updated_at            DATETIME NOT NULL
);
CREATE INDEX chat_sessions_user_idx ON chat_sessions (user_id, id);

-- The message rows are the truth; a session's `messages` list is rendered from them.
CREATE TABLE chat_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER  NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role        TEXT     NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content     TEXT     NOT NULL,
    metadata    TEXT     NOT NULL DEFAULT '{}',
    tokens_used INTEGER  NOT NULL DEFAULT 0,
    created_at  DATETIME NOT NULL
);
CREATE INDEX chat_messages_session_idx ON chat_messages (session_id, id);
