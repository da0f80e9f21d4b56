ALTER TABLE tenants DROP COLUMN entitlements;
ALTER TABLE tenants DROP COLUMN sync_lease_until;
DROP TABLE email_outbox;
DROP TABLE stripe_events;
