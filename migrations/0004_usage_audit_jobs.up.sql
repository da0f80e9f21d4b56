-- Usage reservations are also the usage ledger: every committed run stays here with the tier it
-- ran under, so paid usage is recorded without touching the free counters.
CREATE TABLE usage_reservations (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric          TEXT NOT NULL CHECK (metric IN ('fix', 'doc_run', 'linear_cycle')),
    -- effective tier when reserved; only 'free' reservations hold a unit of the quota
    tier            TEXT NOT NULL,
    -- the free window (its free_tier_reset_at) the unit belongs to; NULL for paid runs
    window_reset_at BIGINT,
    status          TEXT NOT NULL CHECK (status IN ('open', 'committed', 'released', 'expired')),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    settled_at      BIGINT
);
CREATE INDEX usage_reservations_open_idx ON usage_reservations (tenant_id, metric, status);
CREATE INDEX usage_reservations_expiry_idx ON usage_reservations (expires_at) WHERE status = 'open';

-- Every plan or status change, by hand or by Stripe: who (or which event), before, after, when.
CREATE TABLE billing_audit_log (
    id           TEXT PRIMARY KEY, -- a UUID, so the one schema fits both databases
    tenant_id    TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    before_state TEXT,
    after_state  TEXT,
    reason       TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX billing_audit_log_tenant_idx ON billing_audit_log (tenant_id, created_at);

-- Last outcome of each background job, for operators and /metrics.
CREATE TABLE job_runs (
    name             TEXT PRIMARY KEY,
    last_started_at  BIGINT NOT NULL,
    last_finished_at BIGINT,
    last_outcome     TEXT,
    rows_affected    BIGINT
);

-- Process-wide switches that must survive restarts (billing_disabled_since).
CREATE TABLE billing_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
