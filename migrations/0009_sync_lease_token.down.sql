ALTER TABLE tenants DROP COLUMN sync_lease_token;
