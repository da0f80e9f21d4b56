//! Owns the stored Stripe events: the insert behind the webhook endpoint (unique on the event
//! id), the worker's queue (claim, finish, give back), the listing and replay operators use, and
//! the counts `/metrics` reports.

use serde::Serialize;

use super::{Queue, QueueAttempt, Store, StoreResult, claim_sql, finish_sql};
use crate::domain::clock::Timestamp;
use crate::{with_db, with_writer};

/// received → processing (claimed) → processed | parked | failed, or received again later.
const EVENTS: Queue = Queue {
    claim: claim_sql!(
        table = "stripe_events",
        ready = "received",
        claimed = "processing",
        order = "created, received_at",
        returning = "id, type, created, customer_id, payload, attempts",
        // A customer whose lease another worker holds, or one of whose events another worker
        // has just claimed (and is about to lease it), is left alone: its events are claimed
        // once that worker is done, or taken into its group (no claim-and-hand-back spin).
        only_if = "customer_id IS NULL OR (NOT EXISTS (SELECT 1 FROM tenants \
                   WHERE tenants.stripe_customer_id = stripe_events.customer_id AND tenants.sync_lease_until >= $1) \
                   AND NOT EXISTS (SELECT 1 FROM stripe_events held WHERE held.customer_id = stripe_events.customer_id \
                   AND held.status = 'processing' AND held.locked_until >= $1))"
    ),
    finish: finish_sql!(
        table = "stripe_events",
        done_column = "processed_at",
        done_statuses = "'processed', 'parked'"
    ),
};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub customer_id: Option<String>,
    pub payload: String,
    pub attempts: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub customer_id: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub created: i64,
    #[serde(skip)]
    pub received_at: i64,
    #[serde(skip)]
    pub processed_at: Option<i64>,
}

pub struct EventStats {
    pub by_status: Vec<(String, i64)>,
    /// Seconds since the oldest event still waiting was received (0 when none waits).
    pub oldest_unprocessed_age: i64,
}

impl Store {
    /// Claims the oldest event that is due (or whose claim has lapsed) until `until`.
    pub async fn claim_event(&self, now: Timestamp, until: Timestamp) -> StoreResult<Option<StoredEvent>> {
        self.claim_from(&EVENTS, now, until).await
    }

    /// Claims, until `until`, the other events of `customer` that are due now (at most `limit`,
    /// oldest first): the worker holds the customer's lease, and one read of Stripe made after
    /// they were all received serves every one of them. An event waiting only because it was
    /// given back (never failed: no error) is taken too; one waiting out a retry back-off is not.
    ///
    /// With `received_before_ms`, only events stored before that moment (wall-clock
    /// milliseconds): those a read of Stripe sent then already covers. An event stored before
    /// `received_ms` existed is never taken as covered.
    pub async fn claim_customer_events(
        &self,
        customer: &str,
        now: Timestamp,
        until: Timestamp,
        limit: i64,
        received_before_ms: Option<i64>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut claimed: Vec<StoredEvent> = with_writer!(self, |pool| {
            sqlx::query_as(
                "UPDATE stripe_events SET status = 'processing', locked_until = $3, next_attempt_at = $3, \
                 attempts = attempts + 1 WHERE id IN (SELECT id FROM stripe_events WHERE customer_id = $1 \
                   AND ((status = 'received' AND (next_attempt_at IS NULL OR next_attempt_at <= $2 \
                         OR last_error IS NULL)) \
                     OR (status = 'processing' AND locked_until < $2)) \
                   AND ($5 IS NULL OR received_ms < $5) \
                   ORDER BY created, received_at LIMIT $4) \
                 RETURNING id, type, created, customer_id, payload, attempts",
            )
            .bind(customer)
            .bind(now)
            .bind(until)
            .bind(limit)
            .bind(received_before_ms)
            // Outside a transaction: read to its end (see `store::first`).
            .fetch_all(pool)
            .await
        })?;
        // RETURNING gives no order; the handlers see them as Stripe created them.
        claimed.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(claimed)
    }

    /// Ends the attempts of a group applied together, in one commit: each processed, parked,
    /// failed for good, or received again at its `next_attempt_at`.
    pub async fn finish_events(
        &self,
        attempts: &[(&str, QueueAttempt<'_>)],
        now: Timestamp,
    ) -> StoreResult<()> {
        self.finish_all_in(&EVENTS, attempts, now).await
    }

    /// Extends the claims on a customer's events and the customer's lease to `until` (the
    /// worker's heartbeat while it works), so a short lease never lapses under a live worker.
    /// Only the lease holder has that customer's events in `processing`.
    pub async fn renew_claims(&self, customer: &str, token: &str, until: Timestamp) -> StoreResult<()> {
        with_writer!(self, |pool| {
            sqlx::query(
                "UPDATE stripe_events SET locked_until = $2, next_attempt_at = $2 \
                 WHERE customer_id = $1 AND status = 'processing'",
            )
            .bind(customer)
            .bind(until)
            .execute(pool)
            .await?;
            sqlx::query("UPDATE tenants SET sync_lease_until = $2 WHERE stripe_customer_id = $1 AND sync_lease_token = $3")
                .bind(customer)
                .bind(until)
                .bind(token)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Gives a claimed event back uncounted, due at `at` (its customer is busy elsewhere).
    pub async fn give_back_event(&self, id: &str, at: Timestamp) -> StoreResult<()> {
        with_writer!(self, |pool| {
            sqlx::query(
                "UPDATE stripe_events SET status = 'received', attempts = attempts - 1, locked_until = NULL, \
                 next_attempt_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Stored events, newest first, optionally of one status.
    pub async fn list_events(&self, status: Option<&str>, limit: i64) -> StoreResult<Vec<EventRow>> {
        self.events_where(status, None, limit).await
    }

    /// A customer's stored events, newest first.
    pub async fn customer_events(&self, customer: &str, limit: i64) -> StoreResult<Vec<EventRow>> {
        self.events_where(None, Some(customer), limit).await
    }

    async fn events_where(
        &self,
        status: Option<&str>,
        customer: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<EventRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT id, type, status, customer_id, attempts, last_error, created, received_at, processed_at \
                 FROM stripe_events WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR customer_id = $2) \
                 ORDER BY received_at DESC, created DESC LIMIT $3",
            )
            .bind(status)
            .bind(customer)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Queues an event to be processed again. False if unknown.
    pub async fn replay_event(&self, id: &str) -> StoreResult<bool> {
        let n = with_db!(self, |pool| {
            sqlx::query(
                "UPDATE stripe_events SET status = 'received', attempts = 0, next_attempt_at = NULL, \
                 locked_until = NULL, last_error = NULL WHERE id = $1",
            )
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }

    pub async fn event_stats(&self, now: Timestamp) -> StoreResult<EventStats> {
        let by_status: Vec<(String, i64)> = with_db!(self, |pool| {
            sqlx::query_as("SELECT status, COUNT(*) FROM stripe_events GROUP BY status").fetch_all(pool).await
        })?;
        let (oldest,): (Option<i64>,) = with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT MIN(received_at) FROM stripe_events WHERE status IN ('received', 'processing')",
            )
            .fetch_one(pool)
            .await
        })?;
        Ok(EventStats { by_status, oldest_unprocessed_age: oldest.map_or(0, |t| (now - t).max(0)) })
    }

    /// After reconciliation has applied a customer's live state, its parked events are settled.
    pub async fn settle_parked_events(&self, customer: &str, now: Timestamp) -> StoreResult<u64> {
        let n = with_db!(self, |pool| {
            sqlx::query(
                "UPDATE stripe_events SET status = 'processed', processed_at = $2, \
                 last_error = 'settled by reconcile' WHERE customer_id = $1 AND status = 'parked'",
            )
            .bind(customer)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(n)
    }
}
