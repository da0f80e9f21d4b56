-- Tenants as Hydra announces them. Times are Unix seconds (BIGINT) on both databases so the same
-- SQL, including the reset job's arithmetic, runs unchanged on SQLite and PostgreSQL.
CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL DEFAULT '',
    billing_email TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
