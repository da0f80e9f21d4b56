ALTER TABLE email_outbox DROP COLUMN locked_until;
ALTER TABLE tenants DROP COLUMN checkout_lease_token;
ALTER TABLE tenants DROP COLUMN checkout_lease_until;
