//! Owns processing stored Stripe events: the worker claims a due event and, under a lease on its
//! customer (one customer at a time across replicas), the customer's other due events with it,
//! and applies them all by fetch-and-sync from one read of Stripe,
//! and retries with back-off into a visible failed state; parked events wait for an operator or
//! reconciliation. Every log line of an event's processing carries its `event_id` and
//! `event_type` (the future is instrumented with the event's span).

use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::Billing;
use super::sync::{Outcome, Reads};
use crate::domain::subscription::Retry;
use crate::store::{QueueAttempt as Attempt, StoredEvent};

/// 10 s doubling, at most an hour apart; `failed` after 8 attempts (then only a replay runs it).
pub const RETRY: Retry = Retry { first_secs: 10, cap_secs: 3600, max_attempts: 8 };
pub const MAX_ATTEMPTS: i64 = RETRY.max_attempts;
/// How long a claim on an event, or a lease on a customer, lasts if its holder dies: short, and
/// renewed every `HEARTBEAT` while the worker is alive, so a killed worker's customers resume
/// within about this long.
const LEASE_SECS: i64 = 15;
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a sync outside the event worker (reconcile, a page's) waits for the customer's lease:
/// a live holder is done within seconds, a dead one's lease lapses within `LEASE_SECS`.
pub(super) const SYNC_WAIT: Duration = Duration::from_secs(LEASE_SECS as u64 + 5);
/// How often a sync that must wait for a customer's lease asks again.
const LEASE_POLL: Duration = Duration::from_millis(100);
/// At most this many of one customer's events are applied after one read of Stripe.
const MAX_GROUP: i64 = 100;
/// How many events one lease may apply with one read, follow-ups included, before the worker
/// lets go (a customer flooded with events still shares the workers).
const MAX_FOLLOW_UP: usize = 500;

pub const STATUSES: [&str; 6] = ["received", "processing", "processed", "failed", "parked", "ignored"];

/// Every log line about an event's processing is inside this span (its id and type), entered
/// only around synchronous logging or through `instrument`, never held across an await.
fn event_span(event: &StoredEvent) -> tracing::Span {
    tracing::info_span!("event", event_id = %event.id, event_type = %event.kind)
}

impl Billing {
    /// Processes one due event with its customer's other due events. Returns how many were
    /// processed, `None` when nothing was due.
    pub async fn process_next_event(&self) -> anyhow::Result<Option<usize>> {
        // The rollback switch: events are stored, and processed once billing is enabled again.
        if self.billing_frozen() {
            return Ok(None);
        }
        let now = self.clock.now();
        let event = match self.store.claim_event(now, now + LEASE_SECS).await {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(None),
            Err(e) => {
                // No event is known yet: the only processing line without an event's id.
                tracing::error!(error = %e, "could not claim an event");
                return Err(e.into());
            }
        };
        // Everything the group's processing logs, the heartbeat and the follow-up claims
        // included, carries the claimed event's id and type (each event's own lines, its own).
        let span = event_span(&event);
        match self.process_claimed(event).instrument(span.clone()).await {
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                span.in_scope(|| tracing::error!(error = format!("{e:#}"), "event processing error"));
                Err(e)
            }
        }
    }

    async fn process_claimed(&self, event: StoredEvent) -> anyhow::Result<usize> {
        // Given back uncounted when its customer is busy elsewhere.
        let Some(group) = self.apply_claimed(event).await? else { return Ok(0) };
        let processed = group.len();
        let now = self.clock.now();
        let parked = |reason: &str| (String::from("parked"), Some(reason.to_owned()), None);
        let mut ended = Vec::with_capacity(group.len());
        for (event, result) in group {
            let (status, error, next) = match result {
                Ok(Outcome::Applied) => ("processed".to_owned(), None, None),
                Ok(Outcome::Parked(reason)) => {
                    event_span(&event).in_scope(|| tracing::warn!(reason = %reason, "event parked"));
                    parked(&reason)
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    match RETRY.next_attempt(event.attempts, now) {
                        Some(next) => {
                            event_span(&event).in_scope(|| {
                                tracing::warn!(error = %message, attempts = event.attempts, "event will be retried")
                            });
                            ("received".to_owned(), Some(message), Some(next))
                        }
                        None => {
                            event_span(&event)
                                .in_scope(|| tracing::error!(error = %message, "event failed for good"));
                            ("failed".to_owned(), Some(message), None)
                        }
                    }
                }
            };
            ended.push((event.id, status, error, next));
        }
        // One commit for the whole group (each event its own outcome): per event, the commits
        // were most of what processing a burst cost.
        let attempts: Vec<(&str, Attempt<'_>)> = ended
            .iter()
            .map(|(id, status, error, next)| {
                (id.as_str(), Attempt { status, error: error.as_deref(), next_attempt_at: *next })
            })
            .collect();
        self.store.finish_events(&attempts, self.clock.now()).await?;
        Ok(processed)
    }

    /// Applies a claimed event to its tenant under the customer's lease, together with the
    /// customer's other due events (one read of Stripe serves them all), each with its own
    /// outcome; `None` when another worker holds that lease (the event is given back).
    async fn apply_claimed(
        &self,
        event: StoredEvent,
    ) -> anyhow::Result<Option<Vec<(StoredEvent, anyhow::Result<Outcome>)>>> {
        let now = self.clock.now();
        let alone = |event, outcome| Ok(Some(vec![(event, Ok(outcome))]));
        let Some(customer) = event.customer_id.clone() else {
            return alone(event, Outcome::Parked("the event names no customer".into()));
        };
        let Some(tenant) = self.store.tenant_by_customer(&customer).await? else {
            // Kept, never dropped: reconciliation (or a replay once the tenant exists) picks it up.
            event_span(&event)
                .in_scope(|| tracing::warn!(customer = %customer, "no tenant for this customer"));
            return alone(event, Outcome::Parked("no tenant has this customer".into()));
        };
        let claimed_id = event.id.clone();
        let mut done: Vec<(StoredEvent, anyhow::Result<Outcome>)> = Vec::new();
        let work = async {
            let mut next = vec![event];
            next.extend(
                self.store.claim_customer_events(&customer, now, now + LEASE_SECS, MAX_GROUP, None).await?,
            );
            let mut reads = Reads::default();
            loop {
                for event in next {
                    let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
                    let result = self
                        .handle_event(&tenant, &event, &payload, &mut reads)
                        .instrument(event_span(&event))
                        .await;
                    if let Ok(Outcome::Applied) = result {
                        event_span(&event)
                            .in_scope(|| tracing::info!(tenant = %tenant.id, "event processed"));
                    }
                    done.push((event, result));
                }
                // The customer's events that arrived while this group waited for Stripe's call
                // budget were received before the read was sent, so that read serves them too: in
                // a burst the wait is seconds, and without this each wave of a customer's events
                // cost another read.
                let Some(before) = reads.covers_before() else { break };
                if done.len() >= MAX_FOLLOW_UP {
                    break;
                }
                let now = self.clock.now();
                next = match self
                    .store
                    .claim_customer_events(&customer, now, now + LEASE_SECS, MAX_GROUP, Some(before))
                    .await
                {
                    Ok(more) if !more.is_empty() => more,
                    Ok(_) => break,
                    // They stay due; the next claim takes them (with a read of its own).
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim the customer's later events");
                        break;
                    }
                };
            }
            anyhow::Ok(())
        };
        match self.under_customer_lease(&customer, Duration::ZERO, work).await? {
            Some(result) => {
                result?;
                Ok(Some(done))
            }
            None => {
                tracing::debug!("customer busy elsewhere; event given back");
                self.store.give_back_event(&claimed_id, now + 1).await?;
                Ok(None)
            }
        }
    }

    /// Runs `work` holding the lease on `customer`'s syncs, waiting at most `wait` for another
    /// holder to finish (or for a dead holder's lease to lapse); `None` if it could not be had.
    /// A heartbeat renews the lease, and the claims on the customer's events, while the work
    /// (Stripe calls included) runs; the lease is given back after, only if still ours. One
    /// customer is synced by one holder at a time across replicas, so an older read of Stripe
    /// never lands after a newer one.
    pub(super) async fn under_customer_lease<T>(
        &self,
        customer: &str,
        wait: Duration,
        work: impl std::future::Future<Output = T>,
    ) -> anyhow::Result<Option<T>> {
        let token = crate::store::new_id("lease");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = self.clock.now();
            if self.store.lease_customer(customer, &token, now, now + LEASE_SECS).await? {
                break;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(LEASE_POLL.min(left)).await;
        }
        let mut work = std::pin::pin!(work);
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                () = tokio::time::sleep(HEARTBEAT) => {
                    let until = self.clock.now() + LEASE_SECS;
                    if let Err(e) = self.store.renew_claims(customer, &token, until).await {
                        tracing::warn!(error = %e, "could not renew the customer's lease");
                    }
                }
            }
        };
        self.store.release_customer(customer, &token).await?;
        Ok(Some(result))
    }

    /// Processes events until none is due; how many were processed.
    pub async fn drain_events(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        while let Some(processed) = self.process_next_event().await? {
            n += processed;
        }
        Ok(n)
    }

    /// One of the workers `serve` runs until its task is stopped. Its Stripe calls wait for the
    /// call budget rather than fail (see [`crate::stripe::patiently`]).
    pub async fn event_worker(self) {
        loop {
            // Its errors were logged where they happened, with the event's id when there was one;
            // the worker only waits and tries again.
            let _ = crate::stripe::patiently(self.drain_events()).await;
            tokio::select! {
                _ = self.worker_woken() => {},
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
        }
    }

    /// How many event workers `serve` runs: enough calls in flight to use the Stripe call
    /// budget while each takes a few hundred milliseconds (Stripe's usual answer time), so a
    /// burst drains at the budget's pace; one customer is still handled by one worker at a time.
    pub fn event_workers(&self) -> usize {
        (self.config.stripe.calls_per_second as usize / 2).clamp(4, 64)
    }

    /// Queues a stored event to be processed again (fetch-and-sync makes that safe). False if
    /// unknown.
    pub async fn replay_event(&self, id: &crate::domain::ids::EventId) -> anyhow::Result<bool> {
        let found = self.store.replay_event(id.as_str()).await?;
        if found {
            self.wake_worker();
        }
        Ok(found)
    }
}
