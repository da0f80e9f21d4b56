ALTER TABLE stripe_events DROP COLUMN received_ms;
