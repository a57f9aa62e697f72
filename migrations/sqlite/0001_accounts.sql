CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT     NOT NULL UNIQUE,
    email         TEXT     NOT NULL,
    first_name    TEXT     NOT NULL DEFAULT '',
    last_name     TEXT     NOT NULL DEFAULT '',
    password_hash TEXT     NOT NULL,
    role          TEXT     NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    is_active     BOOLEAN  NOT NULL DEFAULT TRUE,
    date_joined   DATETIME NOT NULL,
    last_login    DATETIME
);

CREATE TABLE user_profiles (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id                INTEGER  NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    default_risk_tolerance TEXT     NOT NULL DEFAULT 'moderate'
        CHECK (default_risk_tolerance IN ('conservative', 'moderate', 'aggressive')),
    default_timeframe      TEXT     NOT NULL DEFAULT '1d',
    preferred_symbols      TEXT     NOT NULL DEFAULT '[]',
    trading_goals          TEXT     NOT NULL DEFAULT '',
    strategy_preferences   TEXT     NOT NULL DEFAULT '',
    risk_parameters        TEXT     NOT NULL DEFAULT '{}',
    created_at             DATETIME NOT NULL,
    updated_at             DATETIME NOT NULL,
    last_active            DATETIME NOT NULL
);

-- One row per issued refresh token. Rotation revokes the presented token; a
-- revoked token presented again revokes its whole family (theft detection).
CREATE TABLE refresh_tokens (
    jti        TEXT     PRIMARY KEY,
    family_id  TEXT     NOT NULL,
    user_id    INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at  DATETIME NOT NULL,
    expires_at DATETIME NOT NULL,
    revoked_at DATETIME
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
