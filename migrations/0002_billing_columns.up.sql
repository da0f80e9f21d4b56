-- The roadmap's 11 billing columns and 3 indexes, as plain ADD COLUMNs with defaults so this also
-- applies to an existing, populated tenants table.
ALTER TABLE tenants ADD COLUMN free_tier_fixes_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN free_tier_doc_runs_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN free_tier_cycles_used BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN free_tier_reset_at BIGINT;
ALTER TABLE tenants ADD COLUMN stripe_customer_id TEXT;
ALTER TABLE tenants ADD COLUMN stripe_subscription_id TEXT;
ALTER TABLE tenants ADD COLUMN stripe_subscription_status TEXT;
ALTER TABLE tenants ADD COLUMN stripe_price_id TEXT;
ALTER TABLE tenants ADD COLUMN stripe_current_period_end BIGINT;
ALTER TABLE tenants ADD COLUMN stripe_seat_count BIGINT;
ALTER TABLE tenants ADD COLUMN plan_tier TEXT NOT NULL DEFAULT 'free'
    CHECK (plan_tier IN ('free', 'team', 'business', 'enterprise'));
-- NULLs do not collide in a unique index on either database: free tenants have no customer.
CREATE UNIQUE INDEX tenants_stripe_customer_id_key ON tenants (stripe_customer_id);
CREATE UNIQUE INDEX tenants_stripe_subscription_id_key ON tenants (stripe_subscription_id);
-- The reset job scans "windows that have ended"; tenants that never ran anything stay out of it.
CREATE INDEX tenants_free_tier_reset_at_idx ON tenants (free_tier_reset_at)
    WHERE free_tier_reset_at IS NOT NULL;
