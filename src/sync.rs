//! Owns applying Stripe's state to a tenant (fetch-and-sync): an event only names the customer
//! and triggers its emails; tier, status, seats, price, interval, period end and cancellation are
//! always written from the customer's live subscriptions as Stripe answers now. So order,
//! duplicates and stale payloads cannot regress a tenant. Reconciliation runs the same code.

use serde_json::{Value, json};

use crate::access::Tier;
use crate::app::AppState;
use crate::config::Prices;
use crate::db::new_id;
use crate::email;
use crate::events::StoredEvent;
use crate::stripe::{StripeCallError, SubscriptionView, params};
use crate::tenants::TenantRow;
use crate::with_db;

pub enum Outcome {
    Applied,
    /// Kept for an operator or reconciliation, with the reason.
    Parked(String),
}

/// `price_id_to_tier`: only the four configured prices map to a tier; anything else is unknown.
pub fn price_tier(prices: &Prices, price: &str) -> Option<Tier> {
    if price == prices.team_monthly || price == prices.team_annual {
        Some(Tier::Team)
    } else if price == prices.business_monthly || price == prices.business_annual {
        Some(Tier::Business)
    } else {
        None
    }
}

/// Every subscription of the customer, as Stripe answers now.
async fn subscriptions(state: &AppState, customer: &str) -> Result<Vec<SubscriptionView>, StripeCallError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = params(&[("customer", customer), ("status", "all"), ("limit", "100")]);
        if let Some(a) = &after {
            query.push(("starting_after".into(), a.clone()));
        }
        let page = state.stripe.get("/v1/subscriptions", &query).await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        all.extend(data.iter().filter_map(SubscriptionView::read));
        after = data.last().and_then(|s| s["id"].as_str()).map(str::to_owned);
        if page["has_more"] != true || after.is_none() {
            return Ok(all);
        }
    }
}

/// The subscription that decides the tenant's state, and whether two live ones were found.
fn choose(mut subs: Vec<SubscriptionView>) -> (Option<SubscriptionView>, bool) {
    subs.sort_by_key(|s| std::cmp::Reverse(s.created));
    let live: Vec<&SubscriptionView> = subs.iter().filter(|s| s.is_live()).collect();
    if live.len() > 1 {
        // Keep the one that is paid up (double billing: runbook).
        let paid = live.iter().find(|s| matches!(s.status.as_str(), "active" | "trialing")).copied();
        return (paid.or(live.first().copied()).cloned(), true);
    }
    if let Some(one) = live.first() {
        return (Some((*one).clone()), false);
    }
    (subs.into_iter().next(), false)
}

/// The billing columns Stripe's state implies for a tenant.
#[derive(Clone, Debug, PartialEq)]
struct Synced {
    subscription_id: Option<String>,
    status: Option<String>,
    price_id: Option<String>,
    plan_tier: Tier,
    period_end: Option<i64>,
    seats: Option<i64>,
    interval: Option<String>,
    cancel_at_period_end: bool,
    cancel_at: Option<i64>,
    cancellation_reason: Option<String>,
    grace_started_at: Option<i64>,
}

impl Synced {
    fn of(row: &TenantRow) -> Synced {
        Synced {
            subscription_id: row.stripe_subscription_id.clone(),
            status: row.stripe_subscription_status.clone(),
            price_id: row.stripe_price_id.clone(),
            plan_tier: Tier::parse(&row.plan_tier).unwrap_or(Tier::Free),
            period_end: row.stripe_current_period_end,
            seats: row.stripe_seat_count,
            interval: row.stripe_interval.clone(),
            cancel_at_period_end: row.cancel_at_period_end,
            cancel_at: row.cancel_at,
            cancellation_reason: row.cancellation_reason.clone(),
            grace_started_at: row.grace_started_at,
        }
    }

    fn audit_json(&self) -> Value {
        json!({
            "plan_tier": self.plan_tier.as_str(),
            "stripe_subscription_status": self.status,
            "stripe_subscription_id": self.subscription_id,
            "stripe_price_id": self.price_id,
            "stripe_seat_count": self.seats,
            "cancel_at_period_end": self.cancel_at_period_end,
        })
    }
}

/// The failed-payment event that may start the grace clock: (event time, kind, invoice payload).
pub struct Trigger<'a> {
    pub event_id: &'a str,
    pub kind: &'a str,
    pub created: i64,
    pub object: &'a Value,
}

/// Re-reads the customer's subscriptions and writes the tenant's billing columns from them, with
/// the emails `trigger` causes, in one transaction. `actor` names the cause in the audit log.
pub async fn sync_tenant(
    state: &AppState,
    tenant: &TenantRow,
    trigger: Option<Trigger<'_>>,
    actor: &str,
) -> anyhow::Result<Outcome> {
    let Some(customer) = tenant.stripe_customer_id.clone() else {
        return Ok(Outcome::Parked("the tenant has no Stripe customer".into()));
    };
    let (chosen, two_live) = choose(subscriptions(state, &customer).await?);
    if let Some(sub) =
        chosen.as_ref().filter(|s| s.tenant_metadata.as_deref().is_some_and(|t| t != tenant.id))
    {
        return Ok(Outcome::Parked(format!("subscription {} names another tenant", sub.id)));
    }
    let tier = match &chosen {
        Some(sub) => match sub.price_id.as_deref().and_then(|p| price_tier(&state.config.stripe.prices, p)) {
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
        (Some(sub), None, None) if sub.status == "past_due" => match &sub.latest_invoice {
            Some(invoice) => {
                let inv = state.stripe.get(&format!("/v1/invoices/{invoice}"), &[]).await?;
                inv["status_transitions"]["finalized_at"].as_i64().or_else(|| inv["created"].as_i64())
            }
            None => None,
        },
        _ => None,
    };

    let outcome = with_db!(&state.db, |pool| {
        let mut tx = pool.begin().await?;
        // Lock the row: the write below is computed from what it holds.
        let row: TenantRow =
            sqlx::query_as(crate::tenants::LOCK_SQL).bind(&tenant.id).fetch_one(&mut *tx).await?;
        let before = Synced::of(&row);
        let status = chosen.as_ref().map(|s| s.status.clone());
        let past_due = status.as_deref() == Some("past_due");
        // Grace starts at the first failed payment seen while past_due (its event time) and
        // survives later attempts; anything but past_due clears it.
        let grace = match (past_due, failed_payment) {
            (false, _) => None,
            (true, Some(t)) => Some(before.grace_started_at.map_or(t.created, |g| g.min(t.created))),
            (true, None) => before.grace_started_at.or(recovered_grace),
        };
        // The stored tier is what the subscription alone grants now (the jobs tidy it the same
        // way as time passes), so a sync never undoes a job's work.
        let by_rules = crate::access::effective_tier(
            &crate::access::BillingState {
                plan_tier: Some(tier),
                subscription_status: status.clone(),
                current_period_end: chosen.as_ref().and_then(|s| s.current_period_end),
                cancel_at_period_end: chosen.as_ref().is_some_and(|s| s.cancel_at_period_end),
                cancel_at: chosen.as_ref().and_then(|s| s.cancel_at),
                cancellation_reason: chosen.as_ref().and_then(|s| s.cancellation_reason.clone()),
                grace_started_at: grace,
                manual_plan_tier: None,
                manual_contract_ends_at: None,
            },
            state.access_time(),
            state.config.grace_period_days,
        );
        let tier = by_rules.tier;
        let after = Synced {
            subscription_id: chosen.as_ref().map(|s| s.id.clone()).or(before.subscription_id.clone()),
            status,
            price_id: chosen.as_ref().and_then(|s| s.price_id.clone()),
            plan_tier: tier,
            period_end: chosen.as_ref().and_then(|s| s.current_period_end),
            seats: chosen.as_ref().and_then(|s| s.quantity),
            interval: chosen.as_ref().and_then(|s| s.interval.clone()),
            cancel_at_period_end: chosen.as_ref().is_some_and(|s| s.cancel_at_period_end),
            cancel_at: chosen.as_ref().and_then(|s| s.cancel_at),
            cancellation_reason: chosen.as_ref().and_then(|s| s.cancellation_reason.clone()),
            grace_started_at: grace,
        };
        let now = state.clock.now();
        if after != before {
            sqlx::query(
                "UPDATE tenants SET stripe_subscription_id = $2, stripe_subscription_status = $3, stripe_price_id = $4, \
                 plan_tier = $5, stripe_current_period_end = $6, stripe_seat_count = $7, stripe_interval = $8, \
                 cancel_at_period_end = $9, cancel_at = $10, cancellation_reason = $11, grace_started_at = $12, \
                 updated_at = $13 WHERE id = $1",
            )
            .bind(&tenant.id)
            .bind(&after.subscription_id)
            .bind(&after.status)
            .bind(&after.price_id)
            .bind(after.plan_tier.as_str())
            .bind(after.period_end)
            .bind(after.seats)
            .bind(&after.interval)
            .bind(after.cancel_at_period_end)
            .bind(after.cancel_at)
            .bind(&after.cancellation_reason)
            .bind(after.grace_started_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(crate::tenants::INSERT_AUDIT_SQL)
                .bind(new_id("aud"))
                .bind(&tenant.id)
                .bind(actor)
                .bind("stripe_sync")
                .bind(before.audit_json().to_string())
                .bind(after.audit_json().to_string())
                .bind(None::<String>)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let mail = trigger.as_ref().and_then(|t| email::for_event(t, &state.config.public_url));
        if let (Some(mail), Some(to)) = (mail, row.billing_email.as_deref()) {
            sqlx::query(email::INSERT_SQL)
                .bind(new_id("eml"))
                .bind(&mail.dedupe_key)
                .bind(&tenant.id)
                .bind(to)
                .bind(&mail.subject)
                .bind(&mail.body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok::<_, anyhow::Error>(if two_live {
            tracing::error!(tenant = %tenant.id, "two live subscriptions for one customer (runbook: double billing)");
            metrics::counter!("hydra_double_subscriptions_total").increment(1);
            Outcome::Parked("two live subscriptions for one customer; kept the paid-up one".into())
        } else {
            Outcome::Applied
        })
    })?;
    Ok(outcome)
}

/// Applies one stored event to its tenant.
pub async fn handle_event(
    state: &AppState,
    tenant: &TenantRow,
    event: &StoredEvent,
    payload: &Value,
) -> anyhow::Result<Outcome> {
    let object = &payload["data"]["object"];
    let actor = format!("stripe:{}", event.id);
    match event.kind.as_str() {
        "entitlements.active_entitlement_summary.updated" => sync_entitlements(state, tenant).await,
        "checkout.session.completed" => {
            // The session must be this tenant's on both counts, else it is parked for a human.
            let reference = object["client_reference_id"].as_str();
            if reference.is_some_and(|r| r != tenant.id) {
                return Ok(Outcome::Parked("client_reference_id names another tenant".into()));
            }
            sync_tenant(state, tenant, None, &actor).await
        }
        kind => {
            let trigger = Trigger { event_id: &event.id, kind, created: event.created, object };
            sync_tenant(state, tenant, Some(trigger), &actor).await
        }
    }
}

/// Stores the lookup keys of the customer's active entitlements, paging past `has_more`.
async fn sync_entitlements(state: &AppState, tenant: &TenantRow) -> anyhow::Result<Outcome> {
    let Some(customer) = tenant.stripe_customer_id.as_deref() else {
        return Ok(Outcome::Parked("the tenant has no Stripe customer".into()));
    };
    let mut keys: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = params(&[("customer", customer), ("limit", "100")]);
        if let Some(a) = &after {
            query.push(("starting_after".into(), a.clone()));
        }
        let page = state.stripe.get("/v1/entitlements/active_entitlements", &query).await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        keys.extend(data.iter().filter_map(|e| e["lookup_key"].as_str().map(str::to_owned)));
        after = data.last().and_then(|e| e["id"].as_str()).map(str::to_owned);
        if page["has_more"] != true || after.is_none() {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let value = serde_json::to_string(&keys)?;
    with_db!(&state.db, |pool| {
        sqlx::query("UPDATE tenants SET entitlements = $2 WHERE id = $1")
            .bind(&tenant.id)
            .bind(&value)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(Outcome::Applied)
}

/// `reconcile`: re-reads Stripe for one tenant or every tenant with a customer, repairing drift
/// through the same code as the webhook handlers. Returns (tenants checked, tenants repaired).
pub async fn reconcile(
    state: &AppState,
    tenant: Option<&str>,
    actor: &str,
) -> anyhow::Result<(usize, usize)> {
    let tenants = match tenant {
        Some(id) => crate::tenants::get(&state.db, id).await?.into_iter().collect::<Vec<_>>(),
        None => crate::tenants::with_customers(&state.db).await?,
    };
    let (mut checked, mut repaired) = (0, 0);
    for t in tenants {
        checked += 1;
        let before = Synced::of(&t);
        let applied = matches!(sync_tenant(state, &t, None, actor).await?, Outcome::Applied);
        if let (true, Some(customer)) = (applied, t.stripe_customer_id.as_deref()) {
            crate::events::settle_parked(&state.db, customer, state.clock.now()).await?;
        }
        let after = crate::tenants::get(&state.db, &t.id).await?;
        if after.is_some_and(|a| Synced::of(&a) != before) {
            repaired += 1;
            metrics::counter!("hydra_reconcile_drift_total").increment(1);
            tracing::warn!(tenant = %t.id, "reconcile repaired drift");
        }
    }
    Ok((checked, repaired))
}

/// The `period-end` and `grace-expiry` jobs: tenants whose paid access has ended by the rules
/// (canceled and past the period end; past_due beyond grace) get `plan_tier = free`, each with an
/// audit entry. Only tidies: the access function already answers free for them. Claimed row by
/// row with `UPDATE … RETURNING`, so two instances never both change (or audit) the same tenant.
pub async fn expire_paid_access(
    db: &crate::db::Db,
    job: &'static str,
    now: i64,
    grace_period_days: i64,
) -> anyhow::Result<u64> {
    let grace_secs = grace_period_days * crate::clock::DAY;
    let expired: Vec<(String, String, Option<String>)> = with_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(match job {
            "period-end" => {
                "UPDATE tenants SET plan_tier = 'free', updated_at = $1 \
                 WHERE id IN (SELECT id FROM tenants WHERE plan_tier <> 'free' \
                     AND stripe_subscription_status = 'canceled' AND stripe_current_period_end <= $1) \
                   AND plan_tier <> 'free' \
                 RETURNING id, stripe_subscription_status, stripe_subscription_id"
            }
            _ => {
                "UPDATE tenants SET plan_tier = 'free', updated_at = $1 \
                 WHERE id IN (SELECT id FROM tenants WHERE plan_tier <> 'free' \
                     AND stripe_subscription_status = 'past_due' AND grace_started_at + $2 <= $1) \
                   AND plan_tier <> 'free' \
                 RETURNING id, stripe_subscription_status, stripe_subscription_id"
            }
        })
        .bind(now)
        .bind(grace_secs)
        .fetch_all(&mut *tx)
        .await?;
        for (id, status, sub) in &rows {
            sqlx::query(crate::tenants::INSERT_AUDIT_SQL)
                .bind(new_id("aud"))
                .bind(id)
                .bind(format!("job:{job}"))
                .bind("access_ended")
                .bind(
                    json!({"stripe_subscription_status": status, "stripe_subscription_id": sub}).to_string(),
                )
                .bind(json!({"plan_tier": "free"}).to_string())
                .bind(None::<String>)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(rows)
    })?;
    Ok(expired.len() as u64)
}
