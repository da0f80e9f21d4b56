//! Owns free-tier metering (BILL-03/04) as use cases: reserve, commit and release of a unit, and
//! the usage a status answer shows. A run first *reserves* a unit; an open reservation holds its
//! unit, so concurrent runs can never overshoot a limit (the store reserves under the tenant's row
//! lock; the admit rule is the domain's).

use serde::Serialize;

use super::{Billing, BillingError, BillingResult};
use crate::domain::access::{BillingState, Effective, Tier, effective_tier};
use crate::domain::catalogue::Metric;
use crate::domain::clock::Timestamp;
use crate::domain::ids::{ReservationId, TenantId};
use crate::store::{FreeCounts, ReservationView, Reserved, Settle, SettleOutcome, TenantRow, new_id};

#[derive(Debug, Serialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub expires_at: Timestamp,
    /// The effective tier the run is metered under (`free` ones count against the quota).
    pub tier: Tier,
    pub metric: Metric,
}

/// What a tenant's billing looks like now: the API's status answer and the settings page are
/// both this, so the page can never disagree with the API.
pub struct Status {
    pub row: Option<TenantRow>,
    pub effective: Effective,
    /// Free only: per metric, committed plus open units of the current window.
    pub usage: Option<FreeCounts>,
    pub now: Timestamp,
    /// A manual plan decides the tier (pages then show it instead of the subscription's fields).
    pub manual_plan: bool,
}

impl Status {
    /// The subscription columns, shown only while they are what gives the tenant its tier.
    pub fn subscription(&self) -> Option<&TenantRow> {
        self.row.as_ref().filter(|_| self.effective.tier.is_paid())
    }
}

impl Billing {
    /// Reserves one unit of `metric` for `tenant` (created free if Hydra has not announced it).
    pub async fn reserve(
        &self,
        tenant: &TenantId,
        metric: Metric,
        ttl_secs: i64,
    ) -> BillingResult<Reservation> {
        let now = self.clock.now();
        let expires_at = now + ttl_secs;
        let id = new_id("res");
        // The access rules as `effective` applies them, with what they need copied in: the
        // store may run them on its writer task.
        let (at, grace_days) = (self.access_time(), self.config.grace_period_days);
        let tier_of = move |state: &BillingState| effective_tier(state, at, grace_days).tier;
        // Most runs are paid tenants' (Hydra's customers), and the access facts (in memory,
        // forgotten on every write of the tenant) already say so: such a unit is one insert.
        // Free tenants, and tenants not yet known, take the locked path that enforces the quota.
        let known_tier = tier_of(&self.store.access_facts(tenant.as_str()).await?.state);
        let reserved = if known_tier.is_paid() {
            self.store
                .reserve_paid(tenant.as_str(), metric, &id, known_tier, now, expires_at)
                .await
                .map(|()| Reserved::Admitted { tier: known_tier })
        } else {
            self.store
                .reserve(tenant.as_str(), metric, &id, now, expires_at, move |row| {
                    tier_of(&row.billing_state())
                })
                .await
        };
        let admitted = matches!(reserved, Ok(Reserved::Admitted { .. }));
        metrics::counter!(
            "hydra_usage_reservations_total",
            "metric" => metric.as_str(),
            "outcome" => if admitted { "admitted" } else { "refused" }
        )
        .increment(1);
        match reserved? {
            Reserved::Admitted { tier } => Ok(Reservation { reservation_id: id, expires_at, tier, metric }),
            Reserved::LimitReached { used, limit, resets_at } => {
                let upgrade_url = self.config.upgrade_url();
                Err(BillingError::FreeTierLimitReached {
                    metric,
                    used,
                    limit,
                    resets_at: Some(resets_at),
                    upgrade_url,
                })
            }
        }
    }

    /// Commits (the run counts, exactly once) or releases (it does not) a reservation; repeating
    /// the same settlement answers the same. Returns the status after it.
    pub async fn settle(&self, id: &ReservationId, how: Settle) -> BillingResult<&'static str> {
        match self.store.settle(id.as_str(), how, self.clock.now()).await {
            Ok(SettleOutcome::Settled(status)) => Ok(status),
            Ok(SettleOutcome::Conflict(status)) => Err(BillingError::conflict_with(
                format!("the reservation is already {status}"),
                "reservation_status",
                status,
            )),
            Err(crate::store::StoreError::NotFound) => {
                Err(BillingError::not_found(format!("no reservation {id}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One of the tenant's own reservations.
    pub async fn reservation(&self, tenant: &TenantId, id: &str) -> BillingResult<ReservationView> {
        self.store
            .reservation_of(tenant.as_str(), id)
            .await?
            .ok_or_else(|| BillingError::not_found(format!("no reservation {id}")))
    }

    /// The tenant's plan, subscription and, on free, its usage.
    pub async fn status(&self, tenant_id: &str) -> BillingResult<Status> {
        let now = self.clock.now();
        let (row, effective) = self.tenant_effective(tenant_id).await?;
        let usage = match (&row, effective.tier.is_paid()) {
            (_, true) => None,
            (Some(row), false) => Some(self.store.free_counts(row, now).await?),
            (None, false) => Some(FreeCounts { used: Metric::ALL.map(|m| (m, 0)), resets_at: None }),
        };
        let manual_plan = row
            .as_ref()
            .is_some_and(|r| r.billing_state().manual_plan_in_force(self.access_time()).is_some());
        Ok(Status { row, effective, usage, now, manual_plan })
    }
}
