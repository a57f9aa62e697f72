-- Personal API tokens for the SDK gateway (/v1beta/, /v1/). The token is
-- shown once; the row keeps its SHA-256, looked up by equality, so a leaked
-- table opens nothing and a check costs one indexed read.
CREATE TABLE api_tokens (
    id           BIGSERIAL   PRIMARY KEY,
    user_id      BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT        NOT NULL,
    -- The token's first 8 characters, to recognise it in a list.
    prefix       TEXT        NOT NULL,
    token_hash   TEXT        NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id, id);
