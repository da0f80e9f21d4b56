-- Who holds a customer's sync lease (the event worker, or a reconcile or a page's sync): only
-- the holder renews or gives it back, so a holder whose lease lapsed and finishes late cannot
-- clear or extend the lease another one took meanwhile.
ALTER TABLE tenants ADD COLUMN sync_lease_token TEXT;
