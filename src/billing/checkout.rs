//! Owns upgrading through Stripe Checkout (BILL-05/06): exactly one Customer per tenant, at most
//! one open Checkout Session, no second live subscription, and the success page's lookup, which
//! never provisions (only webhooks and reconciliation do).
//!
//! Opening a session makes up to four Stripe calls. None happens inside a transaction: a lease
//! on the tenant row (`checkout_lease_until`) is taken in one statement, the calls run, and the
//! result is recorded when the lease is given back. Concurrent openings for one tenant wait for
//! the lease (across replicas too), so each sees the Customer and session the one before made.

use std::time::Duration;

use super::{Billing, BillingError, BillingResult};
use crate::domain::catalogue::{MAX_SEATS, MIN_SEATS};
use crate::domain::ids::{SessionId, TenantId};
use crate::domain::subscription::is_live_status;
use crate::store::TenantRow;
use crate::stripe::{StripeCallError, SubscriptionView, id_of, params};

/// Stripe calls one opening makes at most (customer, subscriptions, expire, session).
const CALLS_PER_OPENING: u32 = 4;
/// How long an opening waits for another one of the same tenant before answering 409.
const WAIT_FOR_LEASE: Duration = Duration::from_secs(30);

/// Where a portal session opens, instead of the portal's home page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortalFlow {
    PaymentMethodUpdate,
    SubscriptionCancel,
}

impl PortalFlow {
    pub fn parse(s: &str) -> Option<PortalFlow> {
        match s {
            "payment_method_update" => Some(PortalFlow::PaymentMethodUpdate),
            "subscription_cancel" => Some(PortalFlow::SubscriptionCancel),
            _ => None,
        }
    }
}

/// A new Checkout Session.
pub struct CheckoutStarted {
    pub url: String,
    pub session_id: String,
}

/// Where a completed checkout stands for the success page.
pub struct CheckoutProgress {
    pub provisioned: bool,
    pub plan_tier: crate::domain::access::Tier,
}

fn already_subscribed(status: impl Into<serde_json::Value>) -> BillingError {
    BillingError::conflict_with(
        "there is already a subscription; change it from the billing page",
        "subscription_status",
        status,
    )
}

impl Billing {
    /// `POST /api/billing/checkout`: a new Checkout Session for one of the four prices.
    pub async fn start_checkout(
        &self,
        tenant: &TenantId,
        price_id: &str,
        quantity: i64,
    ) -> BillingResult<CheckoutStarted> {
        let prices = &self.config.stripe.prices;
        let Some(plan) = prices.plan_of(price_id) else {
            return Err(BillingError::invalid("price_id is not one of the plans on offer"));
        };
        if !(MIN_SEATS..=MAX_SEATS).contains(&quantity) {
            return Err(BillingError::invalid(format!("quantity is between 1 and {MAX_SEATS} seats")));
        }
        self.store.ensure_tenant(tenant.as_str(), self.clock.now()).await?;
        let token = crate::store::new_id("lease");
        let row = self.take_checkout_lease(tenant, &token).await?;
        let opened = self.open_session(&row, price_id, plan, quantity).await;
        // The lease is given back on every path; the session is recorded only when one opened.
        let session = opened.as_ref().ok().map(|s| s.session_id.as_str());
        let still_held = self.store.end_checkout(tenant.as_str(), &token, session).await;
        let started = opened?;
        if !still_held? {
            // Longer than every call could have taken: someone else may have opened a session since.
            tracing::warn!(tenant = %tenant, "the checkout lease lapsed while Stripe was answering");
        }
        tracing::info!(tenant = %tenant, session = %started.session_id, "checkout session created");
        Ok(started)
    }

    /// Waits for the tenant's checkout lease (polling, since the holder may be another replica).
    /// The lease outlasts the longest an opening can take (every call, every retry, timed out),
    /// so it only lapses when its holder died.
    async fn take_checkout_lease(&self, tenant: &TenantId, token: &str) -> BillingResult<TenantRow> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_LEASE;
        let lease = (self.stripe.longest_call() * CALLS_PER_OPENING).as_secs() as i64 + 60;
        let mut pause = Duration::from_millis(5);
        loop {
            let now = crate::domain::clock::Clock::System.now();
            if let Some(row) = self.store.claim_checkout(tenant.as_str(), token, now, now + lease).await? {
                return Ok(row);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BillingError::conflict(
                    "a checkout for this team is being opened; try again in a moment",
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The Stripe half of a checkout, run while the lease is held and no transaction is open.
    async fn open_session(
        &self,
        row: &TenantRow,
        price_id: &str,
        plan: &crate::domain::catalogue::Plan,
        quantity: i64,
    ) -> BillingResult<CheckoutStarted> {
        let tenant_id = row.id.as_str();
        let (tier, interval) = (plan.tier.as_str(), plan.interval.as_str());
        if row.manual_plan_tier.is_some() {
            return Err(BillingError::conflict(
                "this tenant's plan is managed by hand; contact us to change it",
            ));
        }
        if let Some(status) = row.stripe_subscription_status.as_deref().filter(|s| is_live_status(s)) {
            return Err(already_subscribed(status));
        }
        let customer = match row.stripe_customer_id.clone() {
            Some(c) => c,
            None => {
                let mut form = params(&[("metadata[hydra_tenant_id]", tenant_id)]);
                if let Some(email) = &row.billing_email {
                    form.push(("email".into(), email.clone()));
                }
                if !row.name.is_empty() {
                    form.push(("name".into(), row.name.clone()));
                }
                // Derived from the tenant: even a lost answer, repeated, makes one Customer.
                let created = self
                    .stripe
                    .post("/v1/customers", &form, Some(format!("hydra-customer-{tenant_id}")))
                    .await?;
                let id = created["id"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("Stripe returned a customer without id"))?;
                self.store.set_customer(tenant_id, id).await?.unwrap_or_else(|| id.to_owned())
            }
        };
        // Stripe may know a subscription our webhooks have not brought yet.
        let subs =
            self.stripe.list_all("/v1/subscriptions", &[("customer", &customer), ("status", "all")]).await?;
        if let Some(live) = subs.iter().filter_map(SubscriptionView::read).find(SubscriptionView::is_live) {
            return Err(already_subscribed(live.status));
        }
        if let Some(open) = &row.checkout_session_id {
            // At most one open session per tenant; an already closed one is fine.
            match self
                .stripe
                .post(
                    &format!("/v1/checkout/sessions/{open}/expire"),
                    &[],
                    Some(format!("hydra-expire-{open}")),
                )
                .await
            {
                Ok(_) | Err(StripeCallError::Api { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let public = &self.config.public_url;
        let quantity_text = quantity.to_string();
        let (min_text, max_text) = (MIN_SEATS.to_string(), MAX_SEATS.to_string());
        // `plan` is only for the success page's first words; it confirms the tier from our status.
        let success_url = format!("{public}/billing/success?session_id={{CHECKOUT_SESSION_ID}}&plan={tier}");
        // Leaving Checkout comes back to the same choices, with a word that nothing was charged.
        let cancel_url = format!(
            "{public}/billing/upgrade?tier={tier}&interval={interval}&seats={quantity}&checkout=cancelled"
        );
        let form = params(&[
            ("mode", "subscription"),
            ("customer", &customer),
            ("client_reference_id", tenant_id),
            ("line_items[0][price]", price_id),
            ("line_items[0][quantity]", &quantity_text),
            ("line_items[0][adjustable_quantity][enabled]", "true"),
            ("line_items[0][adjustable_quantity][minimum]", &min_text),
            ("line_items[0][adjustable_quantity][maximum]", &max_text),
            ("success_url", &success_url),
            ("cancel_url", &cancel_url),
            ("subscription_data[metadata][hydra_tenant_id]", tenant_id),
            ("subscription_data[billing_mode][type]", "classic"),
        ]);
        let session = self.stripe.post("/v1/checkout/sessions", &form, None).await?;
        let (Some(id), Some(url)) = (session["id"].as_str(), session["url"].as_str()) else {
            return Err(anyhow::anyhow!("Stripe returned a session without id or url").into());
        };
        Ok(CheckoutStarted { url: url.to_owned(), session_id: id.to_owned() })
    }

    /// `GET /api/billing/checkout/session`: is this tenant's session complete, and is the tenant
    /// provisioned yet? Stores the subscription id; never writes tier or status.
    pub async fn checkout_progress(
        &self,
        tenant: &TenantId,
        session: &SessionId,
    ) -> BillingResult<CheckoutProgress> {
        let not_found = || BillingError::not_found(format!("no checkout session {session}"));
        let (row, effective) = self.tenant_effective(tenant.as_str()).await?;
        let row = row.ok_or_else(not_found)?;
        let found = match self.stripe.get(&format!("/v1/checkout/sessions/{session}"), &[]).await {
            Ok(s) => s,
            Err(StripeCallError::Api { status: 404, .. }) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        // Another tenant's session is indistinguishable from a missing one.
        let ours = found["client_reference_id"] == tenant.as_str()
            && row.stripe_customer_id.as_deref().is_some_and(|c| id_of(&found["customer"]) == Some(c));
        if !ours {
            return Err(not_found());
        }
        let checkout_status = found["status"].as_str().unwrap_or("unknown");
        if checkout_status != "complete" {
            return Err(BillingError::conflict_with(
                format!("the checkout is {checkout_status}"),
                "checkout_status",
                checkout_status,
            ));
        }
        if let Some(sub) = id_of(&found["subscription"]) {
            self.store.set_subscription_if_missing(tenant.as_str(), sub).await?;
        }
        let provisioned = effective.tier.is_paid();
        if !provisioned && found["payment_status"] == "paid" {
            self.request_reconcile(tenant).await?;
        }
        Ok(CheckoutProgress { provisioned, plan_tier: effective.tier })
    }

    /// Paid but not provisioned yet: reconcile this tenant in the background, at most once a minute.
    async fn request_reconcile(&self, tenant: &TenantId) -> BillingResult<()> {
        let now = self.clock.now();
        if self.store.claim_reconcile_request(tenant.as_str(), now, now - 60).await? {
            let (billing, id) = (self.clone(), tenant.as_str().to_owned());
            self.spawn_owned(async move {
                if let Err(e) = billing.reconcile(Some(&id), "success-page").await {
                    tracing::warn!(tenant = %id, error = format!("{e:#}"), "reconcile after checkout failed");
                }
            });
        }
        Ok(())
    }

    /// A fresh Customer Portal session URL (every call a new one), opened at `flow` when given:
    /// straight to the payment method form, or to cancelling the tenant's subscription.
    pub async fn portal_url(&self, tenant: &TenantId, flow: Option<PortalFlow>) -> BillingResult<String> {
        let row = self.store.tenant(tenant.as_str()).await?;
        let subscription = row.as_ref().and_then(|r| r.stripe_subscription_id.clone());
        let customer = row
            .and_then(|r| r.stripe_customer_id)
            .ok_or_else(|| BillingError::conflict("there is no billing account yet; upgrade first"))?;
        let return_url = format!("{}/billing", self.config.public_url);
        let mut form = params(&[("customer", &customer), ("return_url", &return_url)]);
        if let Some(config) = &self.config.stripe.portal_config_id {
            form.push(("configuration".into(), config.clone()));
        }
        match flow {
            None => {}
            Some(PortalFlow::PaymentMethodUpdate) => {
                form.push(("flow_data[type]".into(), "payment_method_update".into()));
            }
            Some(PortalFlow::SubscriptionCancel) => {
                let sub = subscription
                    .ok_or_else(|| BillingError::conflict("there is no subscription to cancel"))?;
                form.push(("flow_data[type]".into(), "subscription_cancel".into()));
                form.push(("flow_data[subscription_cancel][subscription]".into(), sub));
            }
        }
        let session = self.stripe.post("/v1/billing_portal/sessions", &form, None).await?;
        let url = session["url"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("Stripe returned a portal session without url"))?;
        Ok(url.to_owned())
    }
}
