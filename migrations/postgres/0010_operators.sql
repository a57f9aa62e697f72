-- The key pool's rotation history (cooldowns, disables, probes, reloads,
-- operators' actions), written by every replica and kept
-- HISTORY_RETENTION_DAYS.
CREATE TABLE rotation_events (
    id         BIGSERIAL   PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    kind       TEXT     NOT NULL,
    key_id     TEXT,
    project    TEXT,
    model      TEXT,
    detail     TEXT     NOT NULL,
    -- `pool` for the pool's own reactions, `admin:<username>` for an operator's.
    actor      TEXT     NOT NULL
);
CREATE INDEX rotation_events_at_idx ON rotation_events (at);
CREATE INDEX rotation_events_key_idx ON rotation_events (key_id, at);
CREATE INDEX rotation_events_project_idx ON rotation_events (project, at);

-- Admin dashboard sessions: the cookie carries a random token, the row its
-- SHA-256, so a leaked table opens no session.
CREATE TABLE admin_sessions (
    token_hash   TEXT     PRIMARY KEY,
    user_id      BIGINT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT     NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX admin_sessions_expiry_idx ON admin_sessions (expires_at);
