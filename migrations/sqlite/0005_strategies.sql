-- Strategies, their templates and tags. Names are unique per owner (a
-- strategy by name and version), enforced by the insert itself.
CREATE TABLE strategy_templates (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT     NOT NULL UNIQUE,
    description          TEXT     NOT NULL DEFAULT '',
    category             TEXT     NOT NULL DEFAULT '',
    template_code        TEXT     NOT NULL DEFAULT '',
    parameters_schema    TEXT     NOT NULL DEFAULT '{}',
    is_active            BOOLEAN  NOT NULL DEFAULT TRUE,
    linked_strategy_id   INTEGER  REFERENCES strategies (id) ON DELETE SET NULL,
    is_system_template   BOOLEAN  NOT NULL DEFAULT FALSE,
    latest_strategy_code TEXT     NOT NULL DEFAULT '',
    latest_parameters    TEXT     NOT NULL DEFAULT '{}',
    chat_history         TEXT     NOT NULL DEFAULT '[]',
    user_id              INTEGER  REFERENCES users (id) ON DELETE SET NULL,
    created_at           DATETIME NOT NULL,
    updated_at           DATETIME NOT NULL
);

CREATE TABLE strategies (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT     NOT NULL,
    description     TEXT     NOT NULL DEFAULT '',
    template_id     INTEGER  REFERENCES strategy_templates (id) ON DELETE SET NULL,
    strategy_code   TEXT     NOT NULL DEFAULT '',
    parameters      TEXT     NOT NULL DEFAULT '{}',
    status          TEXT     NOT NULL DEFAULT 'draft',
    version         TEXT     NOT NULL DEFAULT '1.0.0',
    tags            TEXT     NOT NULL DEFAULT '[]',
    timeframe       TEXT     NOT NULL DEFAULT '',
    risk_level      TEXT     NOT NULL DEFAULT '',
    expected_return REAL,
    max_drawdown    REAL,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL,
    last_validated  DATETIME,
    UNIQUE (user_id, name, version)
);
CREATE INDEX strategies_user_idx ON strategies (user_id, id);

CREATE TABLE strategy_tags (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT     NOT NULL,
    description TEXT     NOT NULL DEFAULT '',
    color       TEXT     NOT NULL DEFAULT '#007bff',
    created_at  DATETIME NOT NULL,
    UNIQUE (user_id, name)
);
