-- Strategy chat: sessions looked up by a public `chat_<16 hex>` id, and
-- their messages (the truth, as in the auth chat).
CREATE TABLE strategy_chat_sessions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      TEXT     NOT NULL UNIQUE,
    user_id         INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    strategy_id     INTEGER  REFERENCES strategies (id) ON DELETE SET NULL,
    title           TEXT     NOT NULL,
    is_active       BOOLEAN  NOT NULL DEFAULT TRUE,
    context_summary TEXT     NOT NULL DEFAULT '',
    model_name      TEXT     NOT NULL DEFAULT '',
    temperature     REAL     NOT NULL DEFAULT 0.7,
    max_tokens      INTEGER  NOT NULL DEFAULT 2048,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL
);
CREATE INDEX strategy_chat_sessions_user_idx ON strategy_chat_sessions (user_id, id);

CREATE TABLE strategy_chat_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER  NOT NULL REFERENCES strategy_chat_sessions (id) ON DELETE CASCADE,
    role        TEXT     NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content     TEXT     NOT NULL,
    metadata    TEXT     NOT NULL DEFAULT '{}',
    created_at  DATETIME NOT NULL
);
CREATE INDEX strategy_chat_messages_session_idx ON strategy_chat_messages (session_id, id);
