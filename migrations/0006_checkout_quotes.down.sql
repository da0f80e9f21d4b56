ALTER TABLE tenants DROP COLUMN reconcile_requested_at;
ALTER TABLE tenants DROP COLUMN checkout_session_id;
DROP TABLE quotes;
