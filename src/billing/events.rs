//! Owns processing stored Stripe events: the worker claims one due event at a time (one customer
//! at a time across replicas, through a lease on the customer), applies it by fetch-and-sync,
//! and retries with back-off into a visible failed state; parked events wait for an operator or
//! reconciliation. Every log line of an event's processing carries its `event_id` and
//! `event_type` (the future is instrumented with the event's span).

use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::Billing;
use super::sync::Outcome;
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

pub const STATUSES: [&str; 6] = ["received", "processing", "processed", "failed", "parked", "ignored"];

impl Billing {
    /// Processes one due event. Returns false when nothing was due.
    pub async fn process_next_event(&self) -> anyhow::Result<bool> {
        // The rollback switch: events are stored, and processed once billing is enabled again.
        if self.billing_frozen() {
            return Ok(false);
        }
        let now = self.clock.now();
        let Some(event) = self.store.claim_event(now, now + LEASE_SECS).await? else { return Ok(false) };
        let span = tracing::info_span!("event", event_id = %event.id, event_type = %event.kind);
        self.process_claimed(event).instrument(span).await?;
        Ok(true)
    }

    async fn process_claimed(&self, event: StoredEvent) -> anyhow::Result<()> {
        let now = self.clock.now();
        let parked = |reason: &str| (String::from("parked"), Some(reason.to_owned()), None);
        let (status, error, next) = match self.apply_claimed(&event).await {
            Ok(Some(Outcome::Applied)) => ("processed".to_owned(), None, None),
            Ok(Some(Outcome::Parked(reason))) => {
                tracing::warn!(reason = %reason, "event parked");
                parked(&reason)
            }
            // Given back uncounted: its customer is busy elsewhere.
            Ok(None) => return Ok(()),
            Err(e) => {
                let message = format!("{e:#}");
                match RETRY.next_attempt(event.attempts, now) {
                    Some(next) => {
                        tracing::warn!(error = %message, attempts = event.attempts, "event will be retried");
                        ("received".to_owned(), Some(message), Some(next))
                    }
                    None => {
                        tracing::error!(error = %message, "event failed for good");
                        ("failed".to_owned(), Some(message), None)
                    }
                }
            }
        };
        let attempt = Attempt { status: &status, error: error.as_deref(), next_attempt_at: next };
        self.store.finish_event(&event.id, attempt, self.clock.now()).await?;
        Ok(())
    }

    /// Applies a claimed event to its tenant under the customer's lease; `None` when another
    /// worker holds that lease (the event is given back for a moment).
    async fn apply_claimed(&self, event: &StoredEvent) -> anyhow::Result<Option<Outcome>> {
        let now = self.clock.now();
        let Some(customer) = event.customer_id.clone() else {
            return Ok(Some(Outcome::Parked("the event names no customer".into())));
        };
        let Some(tenant) = self.store.tenant_by_customer(&customer).await? else {
            // Kept, never dropped: reconciliation (or a replay once the tenant exists) picks it up.
            tracing::warn!(customer = %customer, "no tenant for this customer");
            return Ok(Some(Outcome::Parked("no tenant has this customer".into())));
        };
        if !self.store.lease_customer(&customer, now, Some(now + LEASE_SECS)).await? {
            tracing::debug!("customer busy elsewhere; event given back");
            self.store.give_back_event(&event.id, now + 1).await?;
            return Ok(None);
        }
        let payload: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
        // The heartbeat renews both leases while the work (Stripe calls included) runs.
        let heartbeat = async {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let until = self.clock.now() + LEASE_SECS;
                if let Err(e) = self.store.renew_claims(&event.id, &customer, until).await {
                    tracing::warn!(error = %e, "could not renew the event's lease");
                }
            }
        };
        let result = tokio::select! {
            result = self.handle_event(&tenant, event, &payload) => result,
            () = heartbeat => Err(anyhow::anyhow!("the lease heartbeat stopped")),
        };
        self.store.lease_customer(&customer, now, None).await?;
        if let Ok(Outcome::Applied) = result {
            tracing::info!(tenant = %tenant.id, "event processed");
        }
        result.map(Some)
    }

    /// Processes events until none is due.
    pub async fn drain_events(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        while self.process_next_event().await? {
            n += 1;
        }
        Ok(n)
    }

    /// The worker `serve` runs until its task is stopped.
    pub async fn event_worker(self) {
        loop {
            if let Err(e) = self.drain_events().await {
                tracing::error!(error = format!("{e:#}"), "event worker error");
            }
            tokio::select! {
                _ = self.worker_woken() => {},
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            }
        }
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
