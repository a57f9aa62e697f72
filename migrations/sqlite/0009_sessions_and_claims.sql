-- A session is a refresh-token family: one per login, kept through
-- rotation. Access tokens name their family, and authentication checks it,
-- so a logout (or a password change, or a replayed refresh token) ends the
-- session's access tokens too, on every replica.
CREATE TABLE token_families (
    family_id  TEXT        PRIMARY KEY,
    user_id    INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at DATETIME    NOT NULL,
    -- The newest refresh token's expiry; no token of the family outlives it.
    expires_at DATETIME    NOT NULL,
    revoked_at DATETIME
);
CREATE INDEX token_families_user_idx ON token_families (user_id);
CREATE INDEX token_families_expiry_idx ON token_families (expires_at);

-- Sessions started before this migration keep working through refresh.
INSERT INTO token_families (family_id, user_id, created_at, expires_at, revoked_at)
SELECT family_id, MIN(user_id), MIN(issued_at), MAX(expires_at),
       CASE WHEN COUNT(*) = COUNT(revoked_at) THEN MAX(revoked_at) END
FROM refresh_tokens GROUP BY family_id;

CREATE INDEX refresh_tokens_expiry_idx ON refresh_tokens (expires_at);
-- An idempotency claim's time is when it was last claimed, refreshed by its
-- running work, or completed: a claim nobody touched for a request timeout
-- was abandoned, and answers are kept for a day after completion.
ALTER TABLE idempotency_keys RENAME COLUMN created_at TO touched_at;
CREATE INDEX idempotency_keys_touched_idx ON idempotency_keys (touched_at);
