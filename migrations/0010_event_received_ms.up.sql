-- When the event was stored, in milliseconds of the wall clock: a customer's event stored before a
-- read of Stripe was sent is served by that read. Whole seconds (received_at) left up to a second
-- of events uncovered, each costing the customer another read in a renewal storm. NULL for
-- events stored before this column: never taken as covered.
ALTER TABLE stripe_events ADD COLUMN received_ms BIGINT;
