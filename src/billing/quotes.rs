//! Owns seat changes and Team → Business upgrades with binding quotes (BILL-13/14): the preview
//! asks Stripe what the change costs now and stores those exact terms; the confirm applies them
//! with the same `proration_date`, so what is charged is what was shown, or refuses (409) when the
//! subscription is no longer as it was priced.

use serde_json::{Value, json};

use super::account::{CUSTOMER_EXPAND, card_label, paying_card};
use super::{Billing, BillingError, BillingResult};
use crate::domain::access::Tier;
use crate::domain::catalogue::{MAX_SEATS, MIN_SEATS};
use crate::domain::clock::Timestamp;
use crate::domain::ids::{QuoteId, TenantId};
use crate::store::{NewQuote, new_id};
use crate::stripe::{SubscriptionView, params};

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

/// A priced change, as the preview answers it.
pub struct Quote {
    pub quote_id: String,
    pub proration_date: Timestamp,
    pub amount_due: i64,
    pub currency: String,
    /// Stripe's invoice lines: description, amount, quantity.
    pub lines: Vec<Value>,
    pub expires_at: Timestamp,
    /// The seats after the change.
    pub quantity: i64,
    /// What a change that lowers the price leaves on the customer's balance, in cents: Stripe
    /// takes it off the next invoices (the preview's negative total; 0 when something is due).
    pub credit: i64,
    /// The recurring charge after the change, when its price is one of ours.
    pub next: Option<NextCharge>,
    /// The card Stripe charges ("Visa •4242"), when the subscription names one.
    pub card: Option<String>,
}

/// What the subscription costs from its next renewal on.
pub struct NextCharge {
    pub from: Timestamp,
    pub unit_amount: i64,
    pub quantity: i64,
    pub amount: i64,
    pub interval: &'static str,
}

/// A quote applied.
pub struct Applied {
    pub quote_id: String,
    pub amount_due: i64,
    pub quantity: i64,
    pub price_id: String,
    pub latest_invoice: Value,
}

/// The subscription as Stripe has it now, with the fields a quote is priced on.
async fn live_subscription(state: &Billing, tenant_id: &str) -> BillingResult<(SubscriptionView, Value)> {
    let row = state
        .store
        .tenant(tenant_id)
        .await?
        .ok_or_else(|| BillingError::conflict("there is no subscription to change"))?;
    let sub_id = row
        .stripe_subscription_id
        .ok_or_else(|| BillingError::conflict("there is no subscription to change"))?;
    // The card comes with it: the preview names what it will charge, at no extra call.
    let expand = [("expand[]".to_owned(), "default_payment_method".to_owned())];
    let raw = state.stripe.get(&format!("/v1/subscriptions/{sub_id}"), &expand).await?;
    let view =
        SubscriptionView::read(&raw).ok_or_else(|| anyhow::anyhow!("Stripe returned no subscription"))?;
    Ok((view, raw))
}

/// A preview only for a subscription that is plainly active: no cancellation scheduled and no
/// schedule attached (either would make the quote's terms untrue).
fn check_changeable(view: &SubscriptionView, raw: &Value) -> BillingResult<()> {
    if view.status != "active" {
        return Err(BillingError::conflict_with(
            "the subscription must be active to change it",
            "subscription_status",
            view.status.clone(),
        ));
    }
    if view.cancel_at_period_end || view.cancel_at.is_some() {
        return Err(BillingError::conflict(
            "the subscription is set to cancel; resume it in the portal first",
        ));
    }
    if !raw["schedule"].is_null() {
        return Err(BillingError::conflict(
            "the subscription has a scheduled change; manage it in the portal",
        ));
    }
    Ok(())
}

/// The price a change moves to.
fn target_price(state: &Billing, view: &SubscriptionView, change: Change) -> BillingResult<(String, i64)> {
    let prices = &state.config.stripe.prices;
    let current = view.price_id.clone().unwrap_or_default();
    let quantity = view.quantity.unwrap_or(1);
    match change {
        Change::Seats(n) => {
            if !(MIN_SEATS..=MAX_SEATS).contains(&n) {
                return Err(BillingError::invalid(format!("quantity is between 1 and {MAX_SEATS} seats")));
            }
            if n == quantity {
                return Err(BillingError::invalid(format!("the subscription already has {n} seats")));
            }
            Ok((current, n))
        }
        Change::UpgradeToBusiness => {
            // Same interval, same seats: Team monthly → Business monthly, annual → annual.
            match prices.business_for(&current) {
                Some(to) => Ok((to.to_owned(), quantity)),
                None if prices.tier_of(&current) == Some(Tier::Business) => {
                    Err(BillingError::conflict("the subscription is already on Business"))
                }
                None => Err(BillingError::conflict("only Team subscriptions can be upgraded here")),
            }
        }
    }
}

/// Previews a change and stores the quote. Answers `{quote_id, proration_date, amount_due,
/// currency, lines[], expires_at}`.
pub async fn preview(state: &Billing, tenant: &TenantId, change: Change) -> BillingResult<Quote> {
    let tenant_id = tenant.as_str();
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
    let from_price = view.price_id.clone().unwrap_or_default();
    state
        .store
        .insert_quote(NewQuote {
            id: &id,
            tenant_id,
            kind: change.kind(),
            subscription_id: &view.id,
            item_id: &item,
            from_price_id: &from_price,
            from_quantity: view.quantity.unwrap_or(1),
            period_start: view.current_period_start,
            price_id: &price,
            quantity,
            proration_date,
            amount_due,
            currency: &currency,
            lines_json: &lines_text,
            expires_at,
            created_at: now,
        })
        .await?;
    tracing::info!(tenant = %tenant_id, quote = %id, proration_date, amount_due, "quote priced");
    let credit = invoice["total"].as_i64().filter(|t| *t < 0).map_or(0, |t| -t);
    let next = state.config.stripe.prices.plan_of(&price).zip(view.current_period_end).map(|(plan, from)| {
        NextCharge {
            from,
            unit_amount: plan.unit_amount,
            quantity,
            amount: plan.unit_amount * quantity,
            interval: plan.interval.as_str(),
        }
    });
    // A subscription made through the API pays with its customer's default card: read only then.
    // Only a label on the page: if Stripe cannot say, the preview goes without it.
    let customer = if card_label(&raw["default_payment_method"]).is_some() {
        Value::Null
    } else {
        let expand = [("expand[]".to_owned(), CUSTOMER_EXPAND.to_owned())];
        state.stripe.get(&format!("/v1/customers/{}", view.customer), &expand).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the preview names no card: the customer could not be read");
            Value::Null
        })
    };
    let card = paying_card(&raw, &customer);
    Ok(Quote {
        quote_id: id,
        proration_date,
        amount_due,
        currency,
        lines,
        expires_at,
        quantity,
        credit,
        next,
        card,
    })
}

/// Applies a stored quote exactly: its price, quantity and proration date, once.
pub async fn confirm(
    state: &Billing,
    tenant: &TenantId,
    quote_id: &QuoteId,
    kind: &str,
) -> BillingResult<Applied> {
    let tenant_id = tenant.as_str();
    let quote = state
        .store
        .quote_of(tenant_id, quote_id.as_str())
        .await?
        .filter(|q| q.kind == kind)
        .ok_or_else(|| BillingError::not_found(format!("no quote {quote_id}")))?;
    let now = state.clock.now();
    if quote.status != "open" || quote.expires_at <= now {
        return Err(BillingError::conflict_with(
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
        return Err(BillingError::conflict("the subscription changed since this preview; ask for a new one"));
    }
    // Single use: only one confirm can take the quote.
    if !state.store.take_quote(quote_id.as_str(), now).await? {
        return Err(BillingError::conflict_with(
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
        return Err(BillingError::conflict_with(
            "the payment for this change was declined; nothing changed",
            "payment_status",
            "failed",
        ));
    }
    if let Some(row) = state.store.tenant(tenant_id).await? {
        state.sync_tenant(&row, None, &format!("quote:{quote_id}")).await.map_err(BillingError::Internal)?;
    }
    Ok(Applied {
        quote_id: quote_id.as_str().to_owned(),
        amount_due: quote.amount_due,
        quantity: quote.quantity,
        price_id: quote.price_id,
        latest_invoice: updated["latest_invoice"].clone(),
    })
}

/// Takes back a scheduled cancellation (`cancel_at_period_end`), so the subscription renews.
/// Nothing is charged now. Repeating it is harmless: the write carries an Idempotency-Key of the
/// cancellation it undoes, and a subscription no longer set to cancel answers 409.
pub async fn resume(state: &Billing, tenant: &TenantId) -> BillingResult<()> {
    let tenant_id = tenant.as_str();
    let (view, _) = live_subscription(state, tenant_id).await?;
    if !view.cancel_at_period_end {
        return Err(if view.cancel_at.is_some() {
            BillingError::conflict("the subscription is set to end on a date; change it in the portal")
        } else {
            BillingError::conflict("the subscription is not set to cancel")
        });
    }
    if !matches!(view.status.as_str(), "active" | "trialing" | "past_due") {
        return Err(BillingError::conflict_with(
            "only a running subscription can be resumed",
            "subscription_status",
            view.status.clone(),
        ));
    }
    let key = format!("resume-{}-{}", view.id, view.cancel_at.or(view.current_period_end).unwrap_or(0));
    state
        .stripe
        .post(
            &format!("/v1/subscriptions/{}", view.id),
            &params(&[("cancel_at_period_end", "false")]),
            Some(key),
        )
        .await?;
    tracing::info!(tenant = %tenant_id, subscription = %view.id, "cancellation taken back");
    if let Some(row) = state.store.tenant(tenant_id).await? {
        state.sync_tenant(&row, None, "resume").await.map_err(BillingError::Internal)?;
    }
    Ok(())
}
