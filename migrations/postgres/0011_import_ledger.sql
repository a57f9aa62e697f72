-- What `algoagent import-django` brought in, and from where: running the
-- same import again finds its fingerprint here and changes nothing.
CREATE TABLE import_ledger (
    fingerprint TEXT     PRIMARY KEY,
    source      TEXT     NOT NULL,
    imported_at TIMESTAMPTZ NOT NULL,
    -- The summary table printed at the end, per old table.
    summary     TEXT     NOT NULL
);
