//! Owns stored Stripe events and their processing: the table behind the webhook endpoint, the
//! worker that claims events (one customer at a time across replicas, through a lease on the
//! tenant row), retries with back-off, and the failed / parked states operators list and replay.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::app::AppState;
use crate::clock::{Timestamp, rfc3339, rfc3339_opt};
use crate::db::Db;
use crate::sync::{self, Outcome};
use crate::with_db;

/// Attempts before an event is marked failed (then only a replay runs it again).
pub const MAX_ATTEMPTS: i64 = 8;
/// How long a claim on an event, or a lease on a customer, lasts if its holder dies.
const LEASE_SECS: i64 = 120;

pub struct NewEvent<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub livemode: bool,
    pub created: Timestamp,
    pub customer_id: Option<String>,
    pub payload: &'a str,
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub received_at: Timestamp,
}

/// Stores a verified event; a redelivery of a stored id changes nothing. True when inserted.
pub async fn store(db: &Db, e: NewEvent<'_>) -> Result<bool, sqlx::Error> {
    let inserted = with_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO stripe_events (id, type, livemode, created, customer_id, payload, status, last_error, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(e.id)
        .bind(e.kind)
        .bind(e.livemode)
        .bind(e.created)
        .bind(&e.customer_id)
        .bind(e.payload)
        .bind(e.status)
        .bind(e.error)
        .bind(e.received_at)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(inserted == 1)
}

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

/// Claims the oldest event that is due (or whose claim has lapsed).
async fn claim(db: &Db, now: Timestamp) -> Result<Option<StoredEvent>, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query_as(
            "UPDATE stripe_events SET status = 'processing', locked_until = $2, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM stripe_events \
                 WHERE (status = 'received' AND (next_attempt_at IS NULL OR next_attempt_at <= $1)) \
                    OR (status = 'processing' AND locked_until < $1) \
                 ORDER BY created, received_at LIMIT 1) \
               AND (status = 'received' OR (status = 'processing' AND locked_until < $1)) \
             RETURNING id, type, created, customer_id, payload, attempts",
        )
        .bind(now)
        .bind(now + LEASE_SECS)
        .fetch_optional(pool)
        .await
    })
}

async fn finish(
    db: &Db,
    id: &str,
    status: &str,
    error: Option<&str>,
    next_attempt_at: Option<i64>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query(
            "UPDATE stripe_events SET status = $2, last_error = $3, next_attempt_at = $4, locked_until = NULL, \
             processed_at = CASE WHEN $2 IN ('processed', 'parked') THEN $5 ELSE processed_at END WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(next_attempt_at)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
    })
}

/// Takes the customer's lease; false if another worker holds it.
async fn lease_customer(db: &Db, customer: &str, now: Timestamp, release: bool) -> Result<bool, sqlx::Error> {
    let until = if release { None } else { Some(now + LEASE_SECS) };
    let n = with_db!(db, |pool| {
        sqlx::query(if release {
            "UPDATE tenants SET sync_lease_until = $3 WHERE stripe_customer_id = $1"
        } else {
            "UPDATE tenants SET sync_lease_until = $3 WHERE stripe_customer_id = $1 \
             AND (sync_lease_until IS NULL OR sync_lease_until < $2)"
        })
        .bind(customer)
        .bind(now)
        .bind(until)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(n > 0)
}

/// Back-off between attempts: 10 s, 20 s, 40 s … capped at an hour.
fn backoff(attempts: i64) -> i64 {
    (10 * 2_i64.pow(attempts.clamp(1, 10) as u32 - 1)).min(3600)
}

/// Processes one due event. Returns false when nothing was due.
pub async fn process_next(state: &AppState) -> anyhow::Result<bool> {
    // The rollback switch: events are stored, and processed once billing is enabled again.
    if state.billing_disabled_since.is_some() {
        return Ok(false);
    }
    let now = state.clock.now();
    let Some(event) = claim(&state.db, now).await? else { return Ok(false) };
    let span = tracing::info_span!("event", event_id = %event.id, event_type = %event.kind);
    let _enter = span.enter();
    let Some(customer) = event.customer_id.clone() else {
        finish(&state.db, &event.id, "parked", Some("the event names no customer"), None, now).await?;
        return Ok(true);
    };
    let Some(tenant) = crate::tenants::by_customer(&state.db, &customer).await? else {
        // Kept, never dropped: reconciliation (or a replay once the tenant exists) picks it up.
        tracing::warn!(customer = %customer, "no tenant for this customer; event parked");
        finish(&state.db, &event.id, "parked", Some("no tenant has this customer"), None, now).await?;
        return Ok(true);
    };
    if !lease_customer(&state.db, &customer, now, false).await? {
        // Another worker is on this customer: give the event back for a moment.
        with_db!(&state.db, |pool| {
            sqlx::query("UPDATE stripe_events SET status = 'received', attempts = attempts - 1, locked_until = NULL, next_attempt_at = $2 WHERE id = $1")
                .bind(&event.id)
                .bind(now + 1)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        return Ok(true);
    }
    let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
    let result = sync::handle_event(state, &tenant, &event, &payload).await;
    lease_customer(&state.db, &customer, now, true).await?;
    let now = state.clock.now();
    match result {
        Ok(Outcome::Applied) => {
            tracing::info!("event processed");
            finish(&state.db, &event.id, "processed", None, None, now).await?;
        }
        Ok(Outcome::Parked(reason)) => {
            tracing::warn!(reason = %reason, "event parked");
            finish(&state.db, &event.id, "parked", Some(&reason), None, now).await?;
        }
        Err(e) => {
            let message = format!("{e:#}");
            if event.attempts >= MAX_ATTEMPTS {
                tracing::error!(error = %message, "event failed for good");
                finish(&state.db, &event.id, "failed", Some(&message), None, now).await?;
            } else {
                tracing::warn!(error = %message, attempts = event.attempts, "event will be retried");
                finish(
                    &state.db,
                    &event.id,
                    "received",
                    Some(&message),
                    Some(now + backoff(event.attempts)),
                    now,
                )
                .await?;
            }
        }
    }
    Ok(true)
}

/// Processes events until none is due.
pub async fn drain(state: &AppState) -> anyhow::Result<usize> {
    let mut n = 0;
    while process_next(state).await? {
        n += 1;
    }
    Ok(n)
}

/// The worker `serve` runs.
pub async fn worker(state: AppState) {
    loop {
        if let Err(e) = drain(&state).await {
            tracing::error!(error = format!("{e:#}"), "event worker error");
        }
        tokio::select! {
            _ = state.worker_wake.notified() => {},
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
    }
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

impl EventRow {
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["created"] = rfc3339(self.created).into();
        v["received_at"] = rfc3339(self.received_at).into();
        v["processed_at"] = rfc3339_opt(self.processed_at).into();
        v
    }
}

pub const STATUSES: [&str; 6] = ["received", "processing", "processed", "failed", "parked", "ignored"];

/// Stored events, newest first, optionally of one status.
pub async fn list(db: &Db, status: Option<&str>, limit: i64) -> Result<Vec<EventRow>, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query_as(
            "SELECT id, type, status, customer_id, attempts, last_error, created, received_at, processed_at \
             FROM stripe_events WHERE ($1 IS NULL OR status = $1) ORDER BY received_at DESC, created DESC LIMIT $2",
        )
        .bind(status)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}

/// Queues an event to be processed again (fetch-and-sync makes that safe). False if unknown.
pub async fn replay(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let n = with_db!(db, |pool| {
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

pub struct Stats {
    pub by_status: Vec<(String, i64)>,
    /// Seconds since the oldest event still waiting was received (0 when none waits).
    pub oldest_unprocessed_age: i64,
}

pub async fn stats(db: &Db, now: Timestamp) -> Result<Stats, sqlx::Error> {
    let by_status: Vec<(String, i64)> = with_db!(db, |pool| {
        sqlx::query_as("SELECT status, COUNT(*) FROM stripe_events GROUP BY status").fetch_all(pool).await
    })?;
    let (oldest,): (Option<i64>,) = with_db!(db, |pool| {
        sqlx::query_as(
            "SELECT MIN(received_at) FROM stripe_events WHERE status IN ('received', 'processing')",
        )
        .fetch_one(pool)
        .await
    })?;
    Ok(Stats { by_status, oldest_unprocessed_age: oldest.map_or(0, |t| (now - t).max(0)) })
}

/// After reconciliation has applied a customer's live state, its parked events are settled.
pub async fn settle_parked(db: &Db, customer: &str, now: Timestamp) -> Result<u64, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query(
            "UPDATE stripe_events SET status = 'processed', processed_at = $2,              last_error = 'settled by reconcile' WHERE customer_id = $1 AND status = 'parked'",
        )
        .bind(customer)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })
}
