ALTER TABLE tenants DROP COLUMN manual_contract_ends_at;
ALTER TABLE tenants DROP COLUMN manual_plan_reason;
ALTER TABLE tenants DROP COLUMN manual_plan_tier;
ALTER TABLE tenants DROP COLUMN grace_started_at;
ALTER TABLE tenants DROP COLUMN cancellation_reason;
ALTER TABLE tenants DROP COLUMN cancel_at;
ALTER TABLE tenants DROP COLUMN cancel_at_period_end;
ALTER TABLE tenants DROP COLUMN stripe_interval;
