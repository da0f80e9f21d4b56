//! Owns seat changes and Team → Business upgrades with binding quotes (BILL-13/14): the preview
//! asks Stripe what the change costs now and stores those exact terms; the confirm applies them
//! with the same `proration_date`, so what is charged is what was shown, or refuses (409) when the
//! subscription is no longer as it was priced.

use serde_json::{Value, json};

use crate::access::Tier;
use crate::app::AppState;
use crate::checkout::MAX_SEATS;
use crate::clock::{Timestamp, rfc3339};
use crate::db::new_id;
use crate::error::{ApiError, ApiResult};
use crate::stripe::{SubscriptionView, params};
use crate::with_db;

/// A quote is good for this long.
pub const QUOTE_TTL_SECS: i64 = 600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Seats(i64),
    UpgradeToBusiness,
}

impl Change {
    fn kind(self) -> &'static str {
        match self {
            Change::Seats(_) => "seats",
            Change::UpgradeToBusiness => "upgrade",
        }
    }
}

/// The subscription as Stripe has it now, with the fields a quote is priced on.
async fn live_subscription(state: &AppState, tenant_id: &str) -> ApiResult<(SubscriptionView, Value)> {
    let row = crate::tenants::get(&state.db, tenant_id)
        .await?
        .ok_or_else(|| ApiError::conflict("there is no subscription to change"))?;
    let sub_id =
        row.stripe_subscription_id.ok_or_else(|| ApiError::conflict("there is no subscription to change"))?;
    let raw = state.stripe.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await?;
    let view =
        SubscriptionView::read(&raw).ok_or_else(|| anyhow::anyhow!("Stripe returned no subscription"))?;
    Ok((view, raw))
}

/// A preview only for a subscription that is plainly active: no cancellation scheduled and no
/// schedule attached (either would make the quote's terms untrue).
fn check_changeable(view: &SubscriptionView, raw: &Value) -> ApiResult<()> {
    if view.status != "active" {
        return Err(ApiError::conflict_with(
            "the subscription must be active to change it",
            "subscription_status",
            view.status.clone(),
        ));
    }
    if view.cancel_at_period_end || view.cancel_at.is_some() {
        return Err(ApiError::conflict("the subscription is set to cancel; resume it in the portal first"));
    }
    if !raw["schedule"].is_null() {
        return Err(ApiError::conflict("the subscription has a scheduled change; manage it in the portal"));
    }
    Ok(())
}

/// The price a change moves to.
fn target_price(state: &AppState, view: &SubscriptionView, change: Change) -> ApiResult<(String, i64)> {
    let prices = &state.config.stripe.prices;
    let current = view.price_id.clone().unwrap_or_default();
    let quantity = view.quantity.unwrap_or(1);
    match change {
        Change::Seats(n) => {
            if !(1..=MAX_SEATS).contains(&n) {
                return Err(ApiError::invalid(format!("quantity is between 1 and {MAX_SEATS} seats")));
            }
            if n == quantity {
                return Err(ApiError::invalid(format!("the subscription already has {n} seats")));
            }
            Ok((current, n))
        }
        Change::UpgradeToBusiness => {
            // Same interval, same seats: Team monthly → Business monthly, annual → annual.
            let to = if current == prices.team_monthly {
                &prices.business_monthly
            } else if current == prices.team_annual {
                &prices.business_annual
            } else if crate::sync::price_tier(prices, &current) == Some(Tier::Business) {
                return Err(ApiError::conflict("the subscription is already on Business"));
            } else {
                return Err(ApiError::conflict("only Team subscriptions can be upgraded here"));
            };
            Ok((to.clone(), quantity))
        }
    }
}

/// Previews a change and stores the quote. Answers `{quote_id, proration_date, amount_due,
/// currency, lines[], expires_at}`.
pub async fn preview(state: &AppState, tenant_id: &str, change: Change) -> ApiResult<Value> {
    let (view, raw) = live_subscription(state, tenant_id).await?;
    check_changeable(&view, &raw)?;
    let (price, quantity) = target_price(state, &view, change)?;
    let item = raw["items"]["data"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("subscription without item"))?
        .to_owned();
    let quantity_text = quantity.to_string();
    let form = params(&[
        ("subscription", &view.id),
        ("subscription_details[items][0][id]", &item),
        ("subscription_details[items][0][price]", &price),
        ("subscription_details[items][0][quantity]", &quantity_text),
        ("subscription_details[proration_behavior]", "always_invoice"),
    ]);
    let invoice = state.stripe.post("/v1/invoices/create_preview", &form, None).await?;
    // The proration date Stripe priced the change at, taken once: the confirm reuses it.
    let proration_date = invoice["parent"]["subscription_details"]["subscription_proration_date"]
        .as_i64()
        .or_else(|| invoice["subscription_proration_date"].as_i64())
        .unwrap_or_else(|| state.clock.now());
    let amount_due = invoice["amount_due"].as_i64().unwrap_or(0);
    let currency = invoice["currency"].as_str().unwrap_or("usd").to_owned();
    let lines: Vec<Value> = invoice["lines"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| json!({"description": l["description"], "amount": l["amount"], "quantity": l["quantity"]}))
        .collect();
    let now = state.clock.now();
    let id = new_id("quo");
    let expires_at = now + QUOTE_TTL_SECS;
    let lines_text = serde_json::to_string(&lines).unwrap_or_else(|_| "[]".into());
    with_db!(&state.db, |pool| {
        sqlx::query(
            "INSERT INTO quotes (id, tenant_id, kind, subscription_id, item_id, from_price_id, from_quantity, period_start, \
             price_id, quantity, proration_date, amount_due, currency, lines, status, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'open', $15, $16)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(change.kind())
        .bind(&view.id)
        .bind(&item)
        .bind(view.price_id.clone().unwrap_or_default())
        .bind(view.quantity.unwrap_or(1))
        .bind(view.current_period_start)
        .bind(&price)
        .bind(quantity)
        .bind(proration_date)
        .bind(amount_due)
        .bind(&currency)
        .bind(&lines_text)
        .bind(expires_at)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
    })?;
    tracing::info!(tenant = %tenant_id, quote = %id, proration_date, amount_due, "quote priced");
    Ok(json!({
        "quote_id": id,
        "proration_date": rfc3339(proration_date),
        "amount_due": amount_due,
        "currency": currency,
        "lines": lines,
        "expires_at": rfc3339(expires_at),
    }))
}

#[derive(sqlx::FromRow)]
struct QuoteRow {
    kind: String,
    subscription_id: String,
    item_id: String,
    from_price_id: String,
    from_quantity: i64,
    period_start: Option<i64>,
    price_id: String,
    quantity: i64,
    proration_date: i64,
    amount_due: i64,
    status: String,
    expires_at: Timestamp,
}

/// Applies a stored quote exactly: its price, quantity and proration date, once.
pub async fn confirm(state: &AppState, tenant_id: &str, quote_id: &str, kind: &str) -> ApiResult<Value> {
    if quote_id.len() > 64 || !quote_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::invalid("quote_id is not a quote id"));
    }
    let quote: Option<QuoteRow> = with_db!(&state.db, |pool| {
        sqlx::query_as(
            "SELECT kind, subscription_id, item_id, from_price_id, from_quantity, period_start, price_id, quantity, \
             proration_date, amount_due, status, expires_at FROM quotes WHERE id = $1 AND tenant_id = $2",
        )
        .bind(quote_id)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await
    })?;
    let quote = quote
        .filter(|q| q.kind == kind)
        .ok_or_else(|| ApiError::not_found(format!("no quote {quote_id}")))?;
    let now = state.clock.now();
    if quote.status != "open" || quote.expires_at <= now {
        return Err(ApiError::conflict_with(
            "this quote is used or expired; ask for a new preview",
            "quote_status",
            if quote.status == "open" { "expired" } else { "used" },
        ));
    }
    // The subscription must still be what the quote priced, or the charge would differ.
    let (view, raw) = live_subscription(state, tenant_id).await?;
    check_changeable(&view, &raw)?;
    let unchanged = view.id == quote.subscription_id
        && raw["items"]["data"][0]["id"] == quote.item_id.as_str()
        && view.price_id.as_deref() == Some(quote.from_price_id.as_str())
        && view.quantity == Some(quote.from_quantity)
        && view.current_period_start == quote.period_start
        && raw["discounts"].as_array().is_none_or(Vec::is_empty);
    if !unchanged {
        return Err(ApiError::conflict("the subscription changed since this preview; ask for a new one"));
    }
    // Single use: only one confirm can take the quote.
    let taken = with_db!(&state.db, |pool| {
        sqlx::query("UPDATE quotes SET status = 'used', used_at = $2 WHERE id = $1 AND status = 'open'")
            .bind(quote_id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    if taken != 1 {
        return Err(ApiError::conflict_with(
            "this quote is used; ask for a new preview",
            "quote_status",
            "used",
        ));
    }
    let quantity_text = quote.quantity.to_string();
    let date_text = quote.proration_date.to_string();
    let form = params(&[
        ("items[0][id]", &quote.item_id),
        ("items[0][price]", &quote.price_id),
        // Always: Stripe resets the quantity to 1 when the price changes without one.
        ("items[0][quantity]", &quantity_text),
        ("proration_behavior", "always_invoice"),
        ("proration_date", &date_text),
        ("payment_behavior", "pending_if_incomplete"),
    ]);
    let updated = state
        .stripe
        .post(
            &format!("/v1/subscriptions/{}", quote.subscription_id),
            &form,
            Some(format!("quote-{quote_id}")),
        )
        .await?;
    tracing::info!(tenant = %tenant_id, quote = %quote_id, quoted_proration_date = quote.proration_date, now, "quote applied");
    if !updated["pending_update"].is_null() {
        // pending_if_incomplete: the charge was declined, nothing was applied.
        return Err(ApiError::conflict_with(
            "the payment for this change was declined; nothing changed",
            "payment_status",
            "failed",
        ));
    }
    if let Some(tenant) = crate::tenants::get(&state.db, tenant_id).await? {
        crate::sync::sync_tenant(state, &tenant, None, &format!("quote:{quote_id}"))
            .await
            .map_err(ApiError::Internal)?;
    }
    Ok(json!({
        "applied": true,
        "quote_id": quote_id,
        "amount_due": quote.amount_due,
        "quantity": quote.quantity,
        "price_id": quote.price_id,
        "latest_invoice": updated["latest_invoice"],
    }))
}
