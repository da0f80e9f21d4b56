-- Opening a Checkout Session calls Stripe up to four times; no database lock is held across
-- those calls. This lease (with its expiry, should its holder die) keeps one opening per tenant
-- at a time across replicas, so there is still one Customer and one open session.
ALTER TABLE tenants ADD COLUMN checkout_lease_until BIGINT;
-- Who holds it: only the holder gives it back (a lapsed holder finishing late changes nothing).
ALTER TABLE tenants ADD COLUMN checkout_lease_token TEXT;
-- Both database queues (Stripe events, billing emails) claim a row with the same statement: a
-- claim holds the row until locked_until.
ALTER TABLE email_outbox ADD COLUMN locked_until BIGINT;
