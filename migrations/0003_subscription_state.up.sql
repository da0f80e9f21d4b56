-- What the access rules need beyond the roadmap's columns: the billing interval, scheduled
-- cancellation, the grace clock and the manual (Enterprise / admin override) plan, which lives in
-- its own columns so no webhook, reconcile or job ever writes it.
ALTER TABLE tenants ADD COLUMN stripe_interval TEXT;
ALTER TABLE tenants ADD COLUMN cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tenants ADD COLUMN cancel_at BIGINT;
ALTER TABLE tenants ADD COLUMN cancellation_reason TEXT;
ALTER TABLE tenants ADD COLUMN grace_started_at BIGINT;
ALTER TABLE tenants ADD COLUMN manual_plan_tier TEXT
    CHECK (manual_plan_tier IN ('free', 'team', 'business', 'enterprise'));
ALTER TABLE tenants ADD COLUMN manual_plan_reason TEXT;
ALTER TABLE tenants ADD COLUMN manual_contract_ends_at BIGINT;
