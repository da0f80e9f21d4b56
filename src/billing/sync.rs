//! Owns applying Stripe's state to a tenant (fetch-and-sync): an event only names the customer
//! and triggers its emails; tier, status, seats, price, interval, period end and cancellation are
//! always written from the customer's live subscriptions as Stripe answers now. So order,
//! duplicates and stale payloads cannot regress a tenant. Reconciliation runs the same code.

use serde_json::Value;

use super::Billing;
use crate::domain::access::{BillingState, Tier, effective_tier};
use crate::domain::subscription::SubscriptionStatus;
use crate::store::{BillingColumns, StoredEvent, SyncWrite, TenantRow};
use crate::stripe::{StripeCallError, SubscriptionView};

pub enum Outcome {
    Applied,
    /// Kept for an operator or reconciliation, with the reason.
    Parked(String),
}

/// The subscription that decides the tenant's state, and whether two live ones were found.
fn choose(mut subs: Vec<SubscriptionView>) -> (Option<SubscriptionView>, bool) {
    subs.sort_by_key(|s| std::cmp::Reverse(s.created));
    let live: Vec<&SubscriptionView> = subs.iter().filter(|s| s.is_live()).collect();
    if live.len() > 1 {
        // Keep the one that is paid up (double billing: runbook).
        let paid = live
            .iter()
            .find(|s| SubscriptionStatus::parse(&s.status).is_some_and(SubscriptionStatus::is_paid_up))
            .copied();
        return (paid.or(live.first().copied()).cloned(), true);
    }
    if let Some(one) = live.first() {
        return (Some((*one).clone()), false);
    }
    (subs.into_iter().next(), false)
}

/// The failed-payment event that may start the grace clock: (event time, kind, invoice payload).
pub struct Trigger<'a> {
    pub event_id: &'a str,
    pub kind: &'a str,
    pub created: i64,
    pub object: &'a Value,
}

/// Every subscription of the customer, as Stripe answers now.
async fn subscriptions(billing: &Billing, customer: &str) -> Result<Vec<SubscriptionView>, StripeCallError> {
    let all =
        billing.stripe.list_all("/v1/subscriptions", &[("customer", customer), ("status", "all")]).await?;
    Ok(all.iter().filter_map(SubscriptionView::read).collect())
}

/// What one read of Stripe found for a customer, kept while a group of its events is applied:
/// every event of the group was received before the read began, so the read is at least as new
/// as each of them, and one read serves them all (a renewal storm costs one read per customer,
/// not one per event).
#[derive(Default)]
pub struct Reads {
    subscriptions: Option<(Option<SubscriptionView>, bool)>,
    /// Wall-clock milliseconds before which every event was stored before the subscriptions
    /// read was sent (less [`CLOCK_MARGIN_MS`]): that read serves them too.
    read_covers_before: Option<i64>,
    /// When the latest invoice was first attempted (a lost failed-payment event's grace start).
    invoice: Option<Option<i64>>,
    entitlements_synced: bool,
    /// The tenant's columns were written from this read already.
    applied: bool,
}

/// How far apart the clocks of two replicas may be: an event another replica stored is taken as
/// covered by a read only if it was stored this much before the read was sent by this replica's
/// clock, so a replica whose clock runs behind cannot pass an event stored after the read as one
/// stored before it. (NTP keeps servers within a few milliseconds; one process has one clock.)
/// In a renewal storm the reads wait for the call budget for a good part of a second, and the
/// events stored during that wait are what this lets one read serve.
pub const CLOCK_MARGIN_MS: i64 = 100;

impl Reads {
    /// Events stored before this moment (wall-clock milliseconds) are served by the read these
    /// hold (see [`Billing::handle_event`]); `None` until a subscriptions read was made.
    pub fn covers_before(&self) -> Option<i64> {
        self.read_covers_before
    }
}

impl Billing {
    /// Re-reads the customer's subscriptions (no transaction open), then writes the tenant's
    /// billing columns from them with the emails `trigger` causes, in one short transaction.
    /// `actor` names the cause in the audit log. Holds the customer's sync lease, as the event
    /// worker does, so this read and a worker's cannot land in the wrong order.
    pub async fn sync_tenant(
        &self,
        tenant: &TenantRow,
        trigger: Option<Trigger<'_>>,
        actor: &str,
    ) -> anyhow::Result<Outcome> {
        let Some(customer) = tenant.stripe_customer_id.as_deref() else {
            return Ok(Outcome::Parked("the tenant has no Stripe customer".into()));
        };
        let mut reads = Reads::default();
        let sync = self.sync_tenant_with(tenant, trigger, actor, &mut reads);
        match self.under_customer_lease(customer, super::events::SYNC_WAIT, sync).await? {
            Some(outcome) => outcome,
            None => Ok(Outcome::Parked("another sync of this customer kept its lease".into())),
        }
    }

    /// [`Billing::sync_tenant`], reading Stripe only if `reads` holds no read yet.
    async fn sync_tenant_with(
        &self,
        tenant: &TenantRow,
        trigger: Option<Trigger<'_>>,
        actor: &str,
        reads: &mut Reads,
    ) -> anyhow::Result<Outcome> {
        let Some(customer) = tenant.stripe_customer_id.clone() else {
            return Ok(Outcome::Parked("the tenant has no Stripe customer".into()));
        };
        let (chosen, two_live) = match &reads.subscriptions {
            Some(read) => read.clone(),
            None => {
                let (read, sent) = crate::stripe::sent_at(subscriptions(self, &customer)).await;
                let read = choose(read?);
                reads.subscriptions = Some(read.clone());
                reads.read_covers_before =
                    sent.map(|at| crate::domain::clock::wall_millis_ago(at.elapsed()) - CLOCK_MARGIN_MS);
                read
            }
        };
        if let Some(sub) =
            chosen.as_ref().filter(|s| s.tenant_metadata.as_deref().is_some_and(|t| t != tenant.id))
        {
            return Ok(Outcome::Parked(format!("subscription {} names another tenant", sub.id)));
        }
        let tier = match &chosen {
            Some(sub) => match sub.price_id.as_deref().and_then(|p| self.config.stripe.prices.tier_of(p)) {
                Some(t) => t,
                None => {
                    tracing::error!(subscription = %sub.id, price = ?sub.price_id, "unknown price: not guessing a tier");
                    return Ok(Outcome::Parked(format!("unknown price {:?}", sub.price_id)));
                }
            },
            None => Tier::Free,
        };
        let failed_payment = trigger
            .as_ref()
            .filter(|t| matches!(t.kind, "invoice.payment_failed" | "invoice.payment_action_required"));
        // past_due with no grace start known (its failed-payment event never arrived: lost, or no
        // webhooks at all): the grace clock starts at the latest invoice's first payment attempt,
        // which is when that event would have fired.
        let recovered_grace = match (&chosen, failed_payment, tenant.grace_started_at) {
            (Some(sub), None, None) if sub.status == "past_due" => match (&sub.latest_invoice, reads.invoice)
            {
                (_, Some(known)) => known,
                (Some(invoice), None) => {
                    let inv = self.stripe.get(&format!("/v1/invoices/{invoice}"), &[]).await?;
                    let at = inv["status_transitions"]["finalized_at"]
                        .as_i64()
                        .or_else(|| inv["created"].as_i64());
                    reads.invoice = Some(at);
                    at
                }
                (None, None) => None,
            },
            _ => None,
        };
        let mail = trigger.as_ref().and_then(|t| super::email::for_event(t, &self.config.public_url));
        let failed_at = failed_payment.map(|t| t.created);
        let nothing_of_its_own = mail.is_none() && failed_at.is_none();
        let (access_time, grace_days) = (self.access_time(), self.config.grace_period_days);
        let decide = |row: &TenantRow| {
            let status = chosen.as_ref().map(|s| s.status.clone());
            let past_due = status.as_deref() == Some("past_due");
            // Grace starts at the first failed payment seen while past_due (its event time) and
            // survives later attempts; anything but past_due clears it.
            let grace = match (past_due, failed_at) {
                (false, _) => None,
                (true, Some(at)) => Some(row.grace_started_at.map_or(at, |g| g.min(at))),
                (true, None) => row.grace_started_at.or(recovered_grace),
            };
            let sub = chosen.as_ref();
            // The stored tier is what the subscription alone grants now (the jobs tidy it the
            // same way as time passes), so a sync never undoes a job's work.
            let by_rules = effective_tier(
                &BillingState {
                    plan_tier: Some(tier),
                    subscription_status: status.clone(),
                    current_period_end: sub.and_then(|s| s.current_period_end),
                    cancel_at_period_end: sub.is_some_and(|s| s.cancel_at_period_end),
                    cancel_at: sub.and_then(|s| s.cancel_at),
                    cancellation_reason: sub.and_then(|s| s.cancellation_reason.clone()),
                    grace_started_at: grace,
                    manual_plan_tier: None,
                    manual_contract_ends_at: None,
                },
                access_time,
                grace_days,
            );
            let after = BillingColumns {
                subscription_id: sub.map(|s| s.id.clone()).or(row.stripe_subscription_id.clone()),
                status,
                price_id: sub.and_then(|s| s.price_id.clone()),
                plan_tier: by_rules.tier,
                period_end: sub.and_then(|s| s.current_period_end),
                seats: sub.and_then(|s| s.quantity),
                interval: sub.and_then(|s| s.interval.clone()),
                cancel_at_period_end: sub.is_some_and(|s| s.cancel_at_period_end),
                cancel_at: sub.and_then(|s| s.cancel_at),
                cancellation_reason: sub.and_then(|s| s.cancellation_reason.clone()),
                grace_started_at: grace,
            };
            let mail = mail.and_then(|m| Some(m.to(&row.id, row.billing_email.as_deref()?)));
            SyncWrite { after, mail }
        };
        // Another event of the group, applied from the same read with nothing of its own to add
        // (no email, no failed payment): the columns would come out as they are, so the row is
        // not locked and rewritten once per event of a burst.
        if !(reads.applied && nothing_of_its_own) {
            self.store.apply_sync(&tenant.id, actor, self.clock.now(), decide).await?;
            reads.applied = true;
        }
        Ok(if two_live {
            tracing::error!(tenant = %tenant.id, "two live subscriptions for one customer (runbook: double billing)");
            metrics::counter!("hydra_double_subscriptions_total").increment(1);
            Outcome::Parked("two live subscriptions for one customer; kept the paid-up one".into())
        } else {
            Outcome::Applied
        })
    }

    /// Applies one stored event to its tenant.
    /// `reads` carries what earlier events of the same group already read from Stripe.
    pub async fn handle_event(
        &self,
        tenant: &TenantRow,
        event: &StoredEvent,
        payload: &Value,
        reads: &mut Reads,
    ) -> anyhow::Result<Outcome> {
        let state = self;
        let object = &payload["data"]["object"];
        let actor = format!("stripe:{}", event.id);
        match event.kind.as_str() {
            "entitlements.active_entitlement_summary.updated" if reads.entitlements_synced => {
                Ok(Outcome::Applied)
            }
            "entitlements.active_entitlement_summary.updated" => {
                let outcome = state.sync_entitlements(tenant).await?;
                reads.entitlements_synced = true;
                Ok(outcome)
            }
            "checkout.session.completed" => {
                // The session must be this tenant's on both counts, else it is parked for a human.
                let reference = object["client_reference_id"].as_str();
                if reference.is_some_and(|r| r != tenant.id) {
                    return Ok(Outcome::Parked("client_reference_id names another tenant".into()));
                }
                state.sync_tenant_with(tenant, None, &actor, reads).await
            }
            kind => {
                let trigger = Trigger { event_id: &event.id, kind, created: event.created, object };
                state.sync_tenant_with(tenant, Some(trigger), &actor, reads).await
            }
        }
    }

    /// Stores the lookup keys of the customer's active entitlements, paging past `has_more`.
    async fn sync_entitlements(&self, tenant: &TenantRow) -> anyhow::Result<Outcome> {
        let Some(customer) = tenant.stripe_customer_id.as_deref() else {
            return Ok(Outcome::Parked("the tenant has no Stripe customer".into()));
        };
        let all =
            self.stripe.list_all("/v1/entitlements/active_entitlements", &[("customer", customer)]).await?;
        let mut keys: Vec<String> =
            all.iter().filter_map(|e| e["lookup_key"].as_str().map(str::to_owned)).collect();
        keys.sort();
        keys.dedup();
        self.store.set_entitlements(&tenant.id, &serde_json::to_string(&keys)?).await?;
        Ok(Outcome::Applied)
    }

    /// `reconcile`: re-reads Stripe for one tenant or every tenant with a customer, repairing
    /// drift through the same code as the webhook handlers. Returns (checked, repaired).
    pub async fn reconcile(&self, tenant: Option<&str>, actor: &str) -> anyhow::Result<(usize, usize)> {
        let tenants = match tenant {
            Some(id) => self.store.tenant(id).await?.into_iter().collect::<Vec<_>>(),
            None => self.store.tenants_with_customers().await?,
        };
        let (mut checked, mut repaired) = (0, 0);
        for t in tenants {
            checked += 1;
            let before = BillingColumns::of(&t);
            let applied = matches!(self.sync_tenant(&t, None, actor).await?, Outcome::Applied);
            if let (true, Some(customer)) = (applied, t.stripe_customer_id.as_deref()) {
                // Entitlements too: a lost summary event would otherwise never be repaired.
                self.sync_entitlements(&t).await?;
                self.store.settle_parked_events(customer, self.clock.now()).await?;
            }
            let after = self.store.tenant(&t.id).await?;
            if after.is_some_and(|a| BillingColumns::of(&a) != before) {
                repaired += 1;
                metrics::counter!("hydra_reconcile_drift_total").increment(1);
                tracing::warn!(tenant = %t.id, "reconcile repaired drift");
            }
        }
        Ok((checked, repaired))
    }
}
