-- Every verified Stripe event, stored before we answer 2xx (unique on Stripe's event id), then
-- processed by the worker: received → processed | failed | parked | ignored.
CREATE TABLE stripe_events (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    livemode        BOOLEAN NOT NULL,
    -- Stripe's event time; grace starts at the first failed payment's event time, not ours
    created         BIGINT NOT NULL,
    -- the customer the event is about: one customer's events are processed one at a time
    customer_id     TEXT,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('received', 'processing', 'processed', 'failed', 'parked', 'ignored')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    -- a claim on the event, so replicas never process it twice at once
    locked_until    BIGINT,
    last_error      TEXT,
    received_at     BIGINT NOT NULL,
    processed_at    BIGINT
);
CREATE INDEX stripe_events_queue_idx ON stripe_events (status, next_attempt_at);
CREATE INDEX stripe_events_customer_idx ON stripe_events (customer_id, status);

-- Billing emails, written in the same transaction as the change that causes them; the
-- dedupe key (kind, invoice, attempt) makes each one exist once whatever is retried.
CREATE TABLE email_outbox (
    id              TEXT PRIMARY KEY,
    dedupe_key      TEXT NOT NULL UNIQUE,
    tenant_id       TEXT NOT NULL,
    to_address      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX email_outbox_pending_idx ON email_outbox (status, next_attempt_at);

-- One customer's events are processed by one worker at a time, across replicas: a lease.
ALTER TABLE tenants ADD COLUMN sync_lease_until BIGINT;
-- Active entitlement lookup keys (JSON array), from the entitlements summary.
ALTER TABLE tenants ADD COLUMN entitlements TEXT;
