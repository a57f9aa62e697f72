-- Retried requests with the same Idempotency-Key get the first answer back.
CREATE TABLE idempotency_keys (
    user_id      INTEGER  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          TEXT     NOT NULL,
    request      TEXT     NOT NULL,
    status_code  INTEGER,
    response     TEXT,
    created_at   DATETIME NOT NULL,
    PRIMARY KEY (user_id, key)
);
