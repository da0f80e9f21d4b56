//! Owns upgrading through Stripe Checkout (BILL-05/06): exactly one Customer per tenant, at most
//! one open Checkout Session, no second live subscription, and the success page's lookup, which
//! never provisions (only webhooks and reconciliation do).

use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::stripe::{SubscriptionView, id_of, params};
use crate::tenants::{TenantRow, validate_tenant_id};
use crate::with_db;

pub const MAX_SEATS: i64 = 500;

/// `POST /api/billing/checkout`: a new Checkout Session URL for one of the four prices.
pub async fn start(state: &AppState, tenant_id: &str, price_id: &str, quantity: i64) -> ApiResult<Value> {
    validate_tenant_id(tenant_id)?;
    let prices = &state.config.stripe.prices;
    if ![&prices.team_monthly, &prices.team_annual, &prices.business_monthly, &prices.business_annual]
        .iter()
        .any(|p| p.as_str() == price_id)
    {
        return Err(ApiError::invalid("price_id is not one of the plans on offer"));
    }
    if !(1..=MAX_SEATS).contains(&quantity) {
        return Err(ApiError::invalid(format!("quantity is between 1 and {MAX_SEATS} seats")));
    }
    let now = state.clock.now();
    crate::tenants::ensure(&state.db, tenant_id, now).await?;
    // The tenant row stays locked while we talk to Stripe: concurrent checkouts for one tenant
    // queue here, so there is one Customer and one open session (the Idempotency-Key derived
    // from the tenant makes even a lost response safe to repeat).
    with_db!(&state.db, |pool| {
        let mut tx = pool.begin().await?;
        let row: TenantRow =
            sqlx::query_as(crate::tenants::LOCK_SQL).bind(tenant_id).fetch_one(&mut *tx).await?;
        if row.manual_plan_tier.is_some() {
            return Err(ApiError::conflict("this tenant's plan is managed by hand; contact us to change it"));
        }
        if row.stripe_subscription_status.as_deref().is_some_and(crate::stripe::is_live_status) {
            return Err(ApiError::conflict_with(
                "there is already a subscription; change it from the billing page",
                "subscription_status",
                row.stripe_subscription_status.clone(),
            ));
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
                let created = state
                    .stripe
                    .post("/v1/customers", &form, Some(format!("hydra-customer-{tenant_id}")))
                    .await?;
                let id = created["id"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("Stripe returned a customer without id"))?;
                sqlx::query("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1")
                    .bind(tenant_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                id.to_owned()
            }
        };
        // Stripe may know a subscription our webhooks have not brought yet.
        let subs = state
            .stripe
            .get("/v1/subscriptions", &params(&[("customer", &customer), ("status", "all"), ("limit", "20")]))
            .await?;
        let live = subs["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(SubscriptionView::read)
            .find(|s| s.is_live());
        if let Some(live) = live {
            return Err(ApiError::conflict_with(
                "there is already a subscription; change it from the billing page",
                "subscription_status",
                live.status,
            ));
        }
        let previous: (Option<String>,) =
            sqlx::query_as("SELECT checkout_session_id FROM tenants WHERE id = $1")
                .bind(tenant_id)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(open) = previous.0 {
            // At most one open session per tenant; an already closed one is fine.
            match state
                .stripe
                .post(
                    &format!("/v1/checkout/sessions/{open}/expire"),
                    &[],
                    Some(format!("hydra-expire-{open}")),
                )
                .await
            {
                Ok(_) | Err(crate::stripe::StripeCallError::Api { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let public = &state.config.public_url;
        // Only for the success page's first words; it confirms the tier from our own status.
        let plan = crate::sync::price_tier(prices, price_id).map_or("team", crate::access::Tier::as_str);
        let quantity_text = quantity.to_string();
        let max_text = MAX_SEATS.to_string();
        let form = params(&[
            ("mode", "subscription"),
            ("customer", &customer),
            ("client_reference_id", tenant_id),
            ("line_items[0][price]", price_id),
            ("line_items[0][quantity]", &quantity_text),
            ("line_items[0][adjustable_quantity][enabled]", "true"),
            ("line_items[0][adjustable_quantity][minimum]", "1"),
            ("line_items[0][adjustable_quantity][maximum]", &max_text),
            (
                "success_url",
                &format!("{public}/billing/success?session_id={{CHECKOUT_SESSION_ID}}&plan={plan}"),
            ),
            ("cancel_url", &format!("{public}/billing/upgrade")),
            ("subscription_data[metadata][hydra_tenant_id]", tenant_id),
            ("subscription_data[billing_mode][type]", "classic"),
        ]);
        let session = state.stripe.post("/v1/checkout/sessions", &form, None).await?;
        let (Some(id), Some(url)) = (session["id"].as_str(), session["url"].as_str()) else {
            return Err(anyhow::anyhow!("Stripe returned a session without id or url").into());
        };
        sqlx::query("UPDATE tenants SET checkout_session_id = $2 WHERE id = $1")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(tenant = %tenant_id, session = %id, "checkout session created");
        Ok(json!({ "url": url, "session_id": id }))
    })
}

/// `GET /api/billing/checkout/session?session_id=`: is this tenant's session complete, and is the
/// tenant provisioned yet? Stores the subscription id; never writes tier or status.
pub async fn session_status(state: &AppState, tenant_id: &str, session_id: &str) -> ApiResult<Value> {
    if session_id.len() > 200
        || !session_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || !session_id.starts_with("cs_")
    {
        return Err(ApiError::invalid("session_id is a Checkout Session id (cs_…)"));
    }
    let not_found = || ApiError::not_found(format!("no checkout session {session_id}"));
    let row = crate::tenants::get(&state.db, tenant_id).await?.ok_or_else(not_found)?;
    let session = match state.stripe.get(&format!("/v1/checkout/sessions/{session_id}"), &[]).await {
        Ok(s) => s,
        Err(crate::stripe::StripeCallError::Api { status: 404, .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    // Another tenant's session is indistinguishable from a missing one.
    let ours = session["client_reference_id"] == tenant_id
        && row.stripe_customer_id.as_deref().is_some_and(|c| id_of(&session["customer"]) == Some(c));
    if !ours {
        return Err(not_found());
    }
    let checkout_status = session["status"].as_str().unwrap_or("unknown");
    if checkout_status != "complete" {
        return Err(ApiError::conflict_with(
            format!("the checkout is {checkout_status}"),
            "checkout_status",
            checkout_status,
        ));
    }
    if let Some(sub) = id_of(&session["subscription"]) {
        with_db!(&state.db, |pool| {
            sqlx::query("UPDATE tenants SET stripe_subscription_id = $2 WHERE id = $1 AND stripe_subscription_id IS NULL")
                .bind(tenant_id)
                .bind(sub)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
    }
    let effective = state.effective(&row.billing_state());
    let provisioned = effective.tier.is_paid();
    if !provisioned && session["payment_status"] == "paid" {
        request_reconcile(state, &row).await?;
    }
    Ok(json!({
        "status": if provisioned { "active" } else { "provisioning" },
        "plan_tier": effective.tier,
    }))
}

/// Paid but not provisioned yet: reconcile this tenant in the background, at most once a minute.
async fn request_reconcile(state: &AppState, row: &TenantRow) -> ApiResult<()> {
    let now = state.clock.now();
    let claimed = with_db!(&state.db, |pool| {
        sqlx::query(
            "UPDATE tenants SET reconcile_requested_at = $2 WHERE id = $1 \
             AND (reconcile_requested_at IS NULL OR reconcile_requested_at <= $3)",
        )
        .bind(&row.id)
        .bind(now)
        .bind(now - 60)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    if claimed == 1 {
        let (state, id) = (state.clone(), row.id.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::sync::reconcile(&state, Some(&id), "success-page").await {
                tracing::warn!(tenant = %id, error = format!("{e:#}"), "reconcile after checkout failed");
            }
        });
    }
    Ok(())
}
