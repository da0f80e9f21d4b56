-- Binding quotes for seat changes and upgrades: the preview's exact terms, applied at most once
-- and only while the subscription is still as it was priced.
CREATE TABLE quotes (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind                 TEXT NOT NULL CHECK (kind IN ('seats', 'upgrade')),
    subscription_id      TEXT NOT NULL,
    item_id              TEXT NOT NULL,
    -- what the subscription was when priced
    from_price_id        TEXT NOT NULL,
    from_quantity        BIGINT NOT NULL,
    period_start         BIGINT,
    -- what the change makes it
    price_id             TEXT NOT NULL,
    quantity             BIGINT NOT NULL,
    proration_date       BIGINT NOT NULL,
    amount_due           BIGINT NOT NULL,
    currency             TEXT NOT NULL,
    lines                TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('open', 'used')),
    expires_at           BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    used_at              BIGINT
);
CREATE INDEX quotes_tenant_idx ON quotes (tenant_id, status);

-- The tenant's one open Checkout Session (a new one expires it) and the last time a success page
-- asked for a reconcile (at most one a minute).
ALTER TABLE tenants ADD COLUMN checkout_session_id TEXT;
ALTER TABLE tenants ADD COLUMN reconcile_requested_at BIGINT;
