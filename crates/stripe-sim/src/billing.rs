//! Owns the billing lifecycle: subscriptions and their invoices, payment attempts with the test
//! cards' behaviours, proration (to the second, one rounded line per side, as Stripe does),
//! renewals, dunning retries, scheduled cancellation and incomplete expiry, driven by time.
//!
//! Everything here is a function of the world and an instant, so a test clock's advance and the
//! real-time ticker run the same code (stripe-lifecycles.md §1, §2, §4).

use chrono::{DateTime, Datelike, Months, Utc};
use serde_json::{Value, json};

use crate::cards::{Card, ChargeOutcome};
use crate::error::StripeError;
use crate::world::World;

/// What happens to a subscription when its last retry fails (a Dashboard setting at Stripe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRetries {
    Cancel,
    MarkUnpaid,
    LeavePastDue,
}

/// Lifecycle settings; Stripe's published defaults where it has any, else documented choices.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Retries after the first failed attempt, in seconds after that first attempt.
    pub retry_schedule: Vec<i64>,
    pub after_retries: AfterRetries,
    /// A renewal invoice stays draft this long before it is finalized and charged (Stripe: 1 h).
    pub finalize_delay: i64,
    /// An `incomplete` subscription expires after this long (Stripe: 23 h).
    pub incomplete_expiry: i64,
}

impl Default for Settings {
    fn default() -> Self {
        // Four retries inside a 7-day window (hydra's grace period), then cancel: the setting the
        // go-live runbook asks for. Stripe's own default is 8 tries in 2 weeks.
        Settings {
            retry_schedule: vec![86_400, 3 * 86_400, 5 * 86_400, 7 * 86_400],
            after_retries: AfterRetries::Cancel,
            finalize_delay: 3600,
            incomplete_expiry: 23 * 3600,
        }
    }
}

/// The end of a period that starts at `start`, `count` intervals long, on calendar months as
/// Stripe bills (a month from Jan 31 is the last day of February).
pub fn period_end(start: i64, interval: &str, count: i64) -> i64 {
    let Some(at) = DateTime::<Utc>::from_timestamp(start, 0) else { return start };
    let months = match interval {
        "year" => 12 * count,
        "month" => count,
        "week" => return start + 7 * 86_400 * count,
        _ => return start + 86_400 * count,
    };
    at.checked_add_months(Months::new(months.clamp(0, 1200) as u32)).map_or(start, |d| d.timestamp())
}

/// `round(amount * num / den)` to the nearest integer, halves away from zero, in exact integers.
pub fn prorate(amount: i64, num: i64, den: i64) -> i64 {
    if den == 0 {
        return 0;
    }
    let (a, n, d) = (i128::from(amount), i128::from(num), i128::from(den));
    let product = a * n;
    let rounded = (product.abs() * 2 + d) / (2 * d);
    (if product < 0 { -rounded } else { rounded }) as i64
}

fn date_label(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0).map_or_else(String::new, |d| {
        const MONTHS: [&str; 12] =
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        format!("{} {} {}", d.day(), MONTHS[d.month0() as usize], d.year())
    })
}

fn product_name(world: &World, price: &Value) -> String {
    price["product"]
        .as_str()
        .and_then(|p| world.get(p))
        .and_then(|p| p["name"].as_str())
        .unwrap_or("Subscription")
        .to_owned()
}

fn money(minor: i64) -> String {
    format!("${}.{:02}", minor / 100, (minor % 100).abs())
}

pub struct LineSpec<'a> {
    pub subscription: &'a str,
    pub item: &'a str,
    pub price: &'a Value,
    pub quantity: i64,
    pub amount: i64,
    pub start: i64,
    pub end: i64,
    pub proration: bool,
    pub description: String,
}

/// An invoice line in the current API shape (`parent`, `pricing`, `period`).
pub fn line(world: &mut World, spec: LineSpec<'_>) -> Value {
    let id = world.new_id("il");
    let mut line = crate::objects::complete(
        "line_item",
        json!({
            "id": id,
            "object": "line_item",
            "amount": spec.amount,
            "currency": spec.price["currency"],
            "description": spec.description,
            "discountable": !spec.proration,
            "livemode": false,
            "parent": {
                "type": "subscription_item_details",
                "invoice_item_details": null,
                "subscription_item_details": {
                    "invoice_item": null,
                    "proration": spec.proration,
                    "proration_details": {"credited_items": null},
                    "subscription": spec.subscription,
                    "subscription_item": spec.item,
                },
            },
            "period": {"start": spec.start, "end": spec.end},
            "pricing": {
                "type": "price_details",
                "price_details": {"price": spec.price["id"], "product": spec.price["product"]},
                "unit_amount_decimal": spec.price["unit_amount"].as_i64().unwrap_or(0).to_string(),
            },
            "quantity": spec.quantity,
            "subtotal": spec.amount,
        }),
    );
    line["object"] = json!("line_item");
    line
}

fn item_of(sub: &Value) -> Value {
    sub["items"]["data"][0].clone()
}

/// The regular line for one period of the subscription's item.
fn period_line(world: &mut World, sub: &Value, start: i64, end: i64) -> Value {
    let item = item_of(sub);
    let quantity = item["quantity"].as_i64().unwrap_or(1);
    priced_period_line(world, sub, &item["price"], quantity, start, end)
}

/// The line for one period of `sub`'s item at `price` × `quantity` (also what a preview of a
/// change shows for the next renewal).
pub fn priced_period_line(
    world: &mut World,
    sub: &Value,
    price: &Value,
    quantity: i64,
    start: i64,
    end: i64,
) -> Value {
    let item = item_of(sub);
    let unit = price["unit_amount"].as_i64().unwrap_or(0);
    let interval = price["recurring"]["interval"].as_str().unwrap_or("month").to_owned();
    let description =
        format!("{quantity} × {} (at {} / {interval})", product_name(world, price), money(unit));
    line(
        world,
        LineSpec {
            subscription: sub["id"].as_str().unwrap_or_default(),
            item: item["id"].as_str().unwrap_or_default(),
            price,
            quantity,
            amount: unit * quantity,
            start,
            end,
            proration: false,
            description,
        },
    )
}

/// The two proration lines of a change of price and/or quantity at `at` (classic mode):
/// a credit for the unused time of the old item and a debit for the remaining time of the new.
pub fn proration_lines(
    world: &mut World,
    sub: &Value,
    new_price: &Value,
    new_quantity: i64,
    at: i64,
) -> Vec<Value> {
    let item = item_of(sub);
    let (start, end) = (
        item["current_period_start"].as_i64().unwrap_or(at),
        item["current_period_end"].as_i64().unwrap_or(at),
    );
    let old_price = item["price"].clone();
    let old_quantity = item["quantity"].as_i64().unwrap_or(1);
    let remaining = end - at;
    let length = end - start;
    let label = |q: i64, name: &str| if q == 1 { name.to_owned() } else { format!("{q} × {name}") };
    let old_name = product_name(world, &old_price);
    let new_name = product_name(world, new_price);
    let sub_id = sub["id"].as_str().unwrap_or_default().to_owned();
    let item_id = item["id"].as_str().unwrap_or_default().to_owned();
    let credit = -prorate(old_price["unit_amount"].as_i64().unwrap_or(0) * old_quantity, remaining, length);
    let debit = prorate(new_price["unit_amount"].as_i64().unwrap_or(0) * new_quantity, remaining, length);
    vec![
        line(
            world,
            LineSpec {
                subscription: &sub_id,
                item: &item_id,
                price: &old_price,
                quantity: old_quantity,
                amount: credit,
                start: at,
                end,
                proration: true,
                description: format!(
                    "Unused time on {} after {}",
                    label(old_quantity, &old_name),
                    date_label(at)
                ),
            },
        ),
        line(
            world,
            LineSpec {
                subscription: &sub_id,
                item: &item_id,
                price: new_price,
                quantity: new_quantity,
                amount: debit,
                start: at,
                end,
                proration: true,
                description: format!(
                    "Remaining time on {} after {}",
                    label(new_quantity, &new_name),
                    date_label(at)
                ),
            },
        ),
    ]
}

/// What the customer's balance does to an invoice of `total`, as Stripe applies it:
/// (starting balance, amount due, ending balance). A credit (negative balance) lowers what is
/// due; what an invoice cannot use, or a negative invoice's whole total, stays as credit.
pub fn apply_balance(world: &World, customer: &str, total: i64) -> (i64, i64, i64) {
    let starting = world.get(customer).and_then(|c| c["balance"].as_i64()).unwrap_or(0);
    let net = total + starting;
    (starting, net.max(0), net.min(0))
}

/// A draft invoice for `sub` with `lines`.
pub fn new_invoice(world: &mut World, sub: &Value, reason: &str, lines: Vec<Value>, now: i64) -> Value {
    let total: i64 = lines.iter().filter_map(|l| l["amount"].as_i64()).sum();
    let customer = sub["customer"].as_str().unwrap_or_default().to_owned();
    let (starting_balance, amount_due, _) = apply_balance(world, &customer, total);
    let (email, name) = world
        .get(&customer)
        .map(|c| (c["email"].clone(), c["name"].clone()))
        .unwrap_or((Value::Null, Value::Null));
    let count = lines.len();
    let period_start = lines.iter().filter_map(|l| l["period"]["start"].as_i64()).min().unwrap_or(now);
    let period_end = lines.iter().filter_map(|l| l["period"]["end"].as_i64()).max().unwrap_or(now);
    let mut invoice = world.create(
        "invoice",
        "in",
        json!({
            "amount_due": amount_due,
            "amount_paid": 0,
            "amount_remaining": amount_due,
            "starting_balance": starting_balance,
            "attempt_count": 0,
            "attempted": false,
            "auto_advance": true,
            "billing_reason": reason,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": sub["currency"],
            "customer": customer,
            "customer_email": email,
            "customer_name": name,
            "livemode": false,
            "next_payment_attempt": null,
            "parent": {
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]},
            },
            "period_start": if reason == "subscription_cycle" { period_start } else { now },
            "period_end": if reason == "subscription_cycle" { period_end } else { now },
            "status": "draft",
            "subtotal": total,
            "total": total,
            "test_clock": sub["test_clock"],
        }),
    );
    let id = invoice["id"].as_str().unwrap_or_default().to_owned();
    let mut lines = lines;
    for l in &mut lines {
        l["invoice"] = json!(id);
    }
    invoice["lines"] = json!({
        "object": "list",
        "data": lines,
        "has_more": false,
        "total_count": count,
        "url": format!("/v1/invoices/{id}/lines"),
    });
    world.put(invoice.clone());
    world.emit("invoice.created", &invoice, None, None);
    invoice
}

/// Finalizes a draft: open, with its hosted page (where the customer pays or authenticates) and
/// PDF, as Stripe gives every finalized invoice.
pub fn finalize(world: &mut World, invoice_id: &str, now: i64) -> Value {
    let hosted = format!("{}/invoice/{invoice_id}", world.base_url);
    let Some(draft) = world.get(invoice_id) else { return Value::Null };
    // The balance is applied when the invoice is finalized, as it stands then.
    let customer = draft["customer"].as_str().unwrap_or_default().to_owned();
    let total = draft["total"].as_i64().unwrap_or(0);
    let (starting, due, ending) = apply_balance(world, &customer, total);
    if let Some(c) = world.get_mut(&customer).filter(|_| starting != ending) {
        c["balance"] = json!(ending);
        let c = c.clone();
        world.emit("customer.updated", &c, Some(json!({"balance": starting})), None);
    }
    let Some(invoice) = world.get_mut(invoice_id) else { return Value::Null };
    invoice["starting_balance"] = json!(starting);
    invoice["ending_balance"] = json!(ending);
    invoice["amount_due"] = json!(due);
    invoice["amount_remaining"] = json!(due);
    invoice["status"] = json!("open");
    invoice["status_transitions"]["finalized_at"] = json!(now);
    invoice["effective_at"] = json!(now);
    invoice["hosted_invoice_url"] = json!(hosted);
    invoice["invoice_pdf"] = json!(format!("{hosted}/pdf"));
    let invoice = invoice.clone();
    world.emit("invoice.finalized", &invoice, None, None);
    invoice
}

/// The payment method an invoice is charged with: the subscription's, else the customer's default.
fn payment_method_for(world: &World, sub: &Value) -> Option<String> {
    sub["default_payment_method"].as_str().map(str::to_owned).or_else(|| {
        let customer = world.get(sub["customer"].as_str()?)?;
        customer["invoice_settings"]["default_payment_method"].as_str().map(str::to_owned)
    })
}

/// Updates the subscription and emits `customer.subscription.updated` with the changed fields'
/// previous values, as Stripe does.
/// Puts `price` and `quantity` on a single-item subscription: the item, its legacy `plan` (the
/// plan view of the price, as Stripe keeps it) and the top-level mirrors of both.
pub fn set_item(sub: &mut Value, price: &Value, quantity: i64) {
    let plan = crate::objects::plan_from_price(price);
    sub["items"]["data"][0]["price"] = price.clone();
    sub["items"]["data"][0]["plan"] = plan.clone();
    sub["items"]["data"][0]["quantity"] = json!(quantity);
    sub["plan"] = plan;
    sub["quantity"] = json!(quantity);
}

pub fn update_subscription(world: &mut World, sub_id: &str, change: impl FnOnce(&mut Value)) -> Value {
    let Some(before) = world.get(sub_id).cloned() else { return Value::Null };
    let mut after = before.clone();
    change(&mut after);
    let previous = previous_attributes(&before, &after);
    world.put(after.clone());
    if previous.as_object().is_some_and(|p| !p.is_empty()) {
        world.emit("customer.subscription.updated", &after, Some(previous), None);
    }
    after
}

/// The top-level fields that changed, at their old values (`items` as `{data: [...]}`).
pub fn previous_attributes(before: &Value, after: &Value) -> Value {
    let mut previous = serde_json::Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (key, old) in b {
            if a.get(key) != Some(old) {
                let value = if key == "items" { json!({"data": old["data"]}) } else { old.clone() };
                previous.insert(key.clone(), value);
            }
        }
    }
    Value::Object(previous)
}

/// The status of a subscription while its first invoice is charged, before it is announced:
/// Stripe's `customer.subscription.created` already carries the outcome.
const CREATING: &str = "creating";

/// One payment attempt on an open invoice. Updates the invoice, its payment intent, the
/// subscription's status, and emits what Stripe emits for the outcome.
pub fn attempt_payment(
    world: &mut World,
    settings: &Settings,
    invoice_id: &str,
    off_session: bool,
    now: i64,
) -> ChargeOutcome {
    let Some(invoice) = world.get(invoice_id).cloned() else { return ChargeOutcome::Declined };
    let sub_id =
        invoice["parent"]["subscription_details"]["subscription"].as_str().unwrap_or_default().to_owned();
    let sub = world.get(&sub_id).cloned().unwrap_or(Value::Null);
    let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
    let amount = invoice["amount_due"].as_i64().unwrap_or(0);
    let pm = payment_method_for(world, &sub);
    let card = pm.as_deref().and_then(|p| world.cards.get(p).copied());
    if amount == 0 {
        // Nothing to collect (a credit covered it, or a negative proration): paid as it is, with
        // no PaymentIntent and no charge, as Stripe does.
        let attempt_count = invoice["attempt_count"].as_i64().unwrap_or(0);
        mark_paid(world, invoice_id, attempt_count, now);
        settle_paid(world, invoice_id, &sub_id, &sub);
        return ChargeOutcome::Succeeded;
    }
    let authenticated = world.authenticated.remove(invoice_id);
    let outcome = if authenticated {
        // The customer completed the challenge for this very payment.
        ChargeOutcome::Succeeded
    } else {
        match card {
            Some(card) => card.charge(off_session, pm.as_deref().is_some_and(|p| world.set_up.contains(p))),
            None => ChargeOutcome::Declined,
        }
    };

    // One payment intent per invoice, reused by every attempt.
    let state = world.invoice_state.entry(invoice_id.to_owned()).or_default();
    let first_attempt = *state.first_attempt_at.get_or_insert(now);
    let pi_id = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().map(str::to_owned);
    let pi_status = match outcome {
        ChargeOutcome::Succeeded => "succeeded",
        ChargeOutcome::Declined => "requires_payment_method",
        ChargeOutcome::RequiresAction => "requires_action",
    };
    let pi_fields = json!({
        "amount": amount,
        "amount_received": if outcome == ChargeOutcome::Succeeded { amount } else { 0 },
        "currency": invoice["currency"],
        "customer": customer,
        "payment_method": pm,
        "status": pi_status,
        "created": now,
        "livemode": false,
        "next_action": if outcome == ChargeOutcome::RequiresAction {
            json!({"type": "use_stripe_sdk", "use_stripe_sdk": {}})
        } else { Value::Null },
        "last_payment_error": if outcome == ChargeOutcome::Declined {
            json!({"type": "card_error", "code": "card_declined", "decline_code": "generic_decline", "message": "Your card was declined."})
        } else { Value::Null },
    });
    let pi = match pi_id.and_then(|id| world.get(&id).cloned()) {
        Some(mut pi) => {
            crate::objects::merge(&mut pi, pi_fields);
            world.put(pi)
        }
        None => {
            let pi = world.create("payment_intent", "pi", pi_fields);
            world.emit("payment_intent.created", &pi, None, None);
            let payment_id = world.new_id("inpay");
            if let Some(inv) = world.get_mut(invoice_id) {
                inv["payments"] = json!({
                    "object": "list",
                    "data": [{
                        "id": payment_id,
                        "object": "invoice_payment",
                        "amount_paid": null,
                        "amount_requested": amount,
                        "created": now,
                        "currency": inv["currency"],
                        "invoice": invoice_id,
                        "is_default": true,
                        "livemode": false,
                        "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                        "status": "open",
                        "status_transitions": {"canceled_at": null, "paid_at": null},
                    }],
                    "has_more": false,
                    "url": format!("/v1/invoice_payments?invoice={invoice_id}"),
                });
            }
            pi
        }
    };

    let attempt_count = invoice["attempt_count"].as_i64().unwrap_or(0) + 1;
    match outcome {
        ChargeOutcome::Succeeded => {
            let charge = world.create(
                "charge",
                "ch",
                json!({"amount": amount, "currency": invoice["currency"], "customer": customer, "paid": true,
                       "status": "succeeded", "payment_intent": pi["id"], "payment_method": pm, "created": now}),
            );
            world.emit("payment_intent.succeeded", &pi, None, None);
            world.emit("charge.succeeded", &charge, None, None);
            mark_paid(world, invoice_id, attempt_count, now);
            let payment =
                world.get(invoice_id).map(|i| i["payments"]["data"][0].clone()).unwrap_or(Value::Null);
            world.emit("invoice_payment.paid", &payment, None, None);
            settle_paid(world, invoice_id, &sub_id, &sub);
        }
        ChargeOutcome::Declined | ChargeOutcome::RequiresAction => {
            if outcome == ChargeOutcome::Declined {
                let charge = world.create(
                    "charge",
                    "ch",
                    json!({"amount": amount, "currency": invoice["currency"], "customer": customer, "paid": false,
                           "status": "failed", "failure_code": "card_declined", "failure_message": "Your card was declined.",
                           "payment_intent": pi["id"], "payment_method": pm, "created": now}),
                );
                world.emit("charge.failed", &charge, None, None);
                world.emit("payment_intent.payment_failed", &pi, None, None);
            } else {
                world.emit("payment_intent.requires_action", &pi, None, None);
            }
            // Authentication-required is a hard decline, never retried automatically; a first
            // invoice is not retried either (the subscription waits, incomplete, for the customer).
            let first_invoice = matches!(sub["status"].as_str(), Some(CREATING | "incomplete"));
            let retryable = outcome == ChargeOutcome::Declined && !first_invoice;
            let retries = if retryable { &settings.retry_schedule[..] } else { &[] };
            let next = retries.get((attempt_count - 1) as usize).map(|offset| first_attempt + offset);
            if let Some(inv) = world.get_mut(invoice_id) {
                inv["attempt_count"] = json!(attempt_count);
                inv["attempted"] = json!(true);
                inv["next_payment_attempt"] = json!(next);
            }
            let failed = world.get(invoice_id).cloned().unwrap_or(Value::Null);
            let before = json!({"attempt_count": attempt_count - 1, "next_payment_attempt": invoice["next_payment_attempt"]});
            world.emit("invoice.updated", &failed, Some(before), None);
            if outcome == ChargeOutcome::RequiresAction {
                world.emit("invoice.payment_action_required", &failed, None, None);
            }
            world.emit("invoice.payment_failed", &failed, None, None);
            if sub["status"] == "active" || sub["status"] == "trialing" {
                update_subscription(world, &sub_id, |s| s["status"] = json!("past_due"));
            }
            let exhausted = retryable && next.is_none();
            if exhausted {
                retries_exhausted(world, settings, &sub_id, invoice_id, now);
            }
        }
    }
    outcome
}

/// What follows a paid invoice: its events, a pending update applied, and a subscription that
/// was behind made active again.
fn settle_paid(world: &mut World, invoice_id: &str, sub_id: &str, sub: &Value) {
    let paid = world.get(invoice_id).cloned().unwrap_or(Value::Null);
    world.emit("invoice.paid", &paid, None, None);
    world.emit("invoice.payment_succeeded", &paid, None, None);
    apply_pending_update(world, invoice_id);
    if matches!(sub["status"].as_str(), Some("past_due" | "incomplete" | "unpaid")) && !sub_id.is_empty() {
        update_subscription(world, sub_id, |s| {
            s["status"] = json!("active");
            s["latest_invoice"] = json!(invoice_id);
        });
    }
}

fn mark_paid(world: &mut World, invoice_id: &str, attempt_count: i64, now: i64) {
    if let Some(inv) = world.get_mut(invoice_id) {
        let due = inv["amount_due"].clone();
        inv["status"] = json!("paid");
        inv["amount_paid"] = due;
        inv["amount_remaining"] = json!(0);
        inv["attempt_count"] = json!(attempt_count);
        inv["attempted"] = json!(true);
        inv["next_payment_attempt"] = Value::Null;
        inv["status_transitions"]["paid_at"] = json!(now);
        if let Some(p) = inv["payments"]["data"].get_mut(0) {
            p["status"] = json!("paid");
            p["amount_paid"] = p["amount_requested"].clone();
            p["status_transitions"]["paid_at"] = json!(now);
        }
    }
}

fn retries_exhausted(world: &mut World, settings: &Settings, sub_id: &str, invoice_id: &str, now: i64) {
    match settings.after_retries {
        AfterRetries::Cancel => {
            if let Some(inv) = world.get_mut(invoice_id) {
                inv["auto_advance"] = json!(false);
            }
            end_subscription(world, sub_id, now, "payment_failed");
        }
        AfterRetries::MarkUnpaid => {
            update_subscription(world, sub_id, |s| s["status"] = json!("unpaid"));
        }
        AfterRetries::LeavePastDue => {}
    }
}

/// Cancels now: `customer.subscription.deleted` with the reason Stripe records.
pub fn end_subscription(world: &mut World, sub_id: &str, now: i64, reason: &str) -> Value {
    let Some(mut sub) = world.get(sub_id).cloned() else { return Value::Null };
    sub["status"] = json!("canceled");
    sub["ended_at"] = json!(now);
    if sub["canceled_at"].is_null() {
        sub["canceled_at"] = json!(now);
    }
    sub["cancellation_details"]["reason"] = json!(reason);
    world.put(sub.clone());
    world.emit("customer.subscription.deleted", &sub, None, None);
    crate::entitlements::refresh(world, sub["customer"].as_str().unwrap_or_default());
    sub
}

/// Applies a change priced on `invoice_id` once it is paid (`payment_behavior=pending_if_incomplete`).
fn apply_pending_update(world: &mut World, invoice_id: &str) {
    let pending = world.invoice_state.get_mut(invoice_id).and_then(|s| s.pending_update.take());
    if let Some(update) = pending {
        let sub_id = update["subscription"].as_str().unwrap_or_default().to_owned();
        let price = update["price"].clone();
        let quantity = update["quantity"].clone();
        update_subscription(world, &sub_id, |s| {
            set_item(s, &price, quantity.as_i64().unwrap_or(1));
            s["pending_update"] = Value::Null;
        });
    }
}

/// The next thing that happens to one subscription or invoice, and when.
#[derive(Debug, PartialEq)]
enum Due {
    PeriodEnd(String),
    CancelAt(String),
    Finalize(String),
    Retry(String),
    ExpireIncomplete(String),
}

fn next_due(
    world: &World,
    settings: &Settings,
    customers: &std::collections::HashSet<&str>,
) -> Option<(i64, Due)> {
    let mut best: Option<(i64, Due)> = None;
    let mut consider = |t: Option<i64>, due: Due| {
        if let Some(t) = t.filter(|t| best.as_ref().is_none_or(|(bt, _)| t < bt)) {
            best = Some((t, due));
        }
    };
    for object in world.objects.values() {
        let Some(customer) = object["customer"].as_str() else { continue };
        // A set: the real-time ticker asks this every second for every customer without a
        // test clock, and a list scanned per object was quadratic in the number of customers.
        if !customers.contains(customer) {
            continue;
        }
        let id = object["id"].as_str().unwrap_or_default().to_owned();
        match (object["object"].as_str(), object["status"].as_str()) {
            (Some("subscription"), Some("active" | "past_due" | "trialing")) => {
                let end = object["items"]["data"][0]["current_period_end"].as_i64();
                let cancel_at = object["cancel_at"].as_i64();
                match (cancel_at, end) {
                    (Some(c), Some(e)) if c < e => consider(Some(c), Due::CancelAt(id)),
                    _ => consider(end, Due::PeriodEnd(id)),
                }
            }
            (Some("subscription"), Some("incomplete")) => {
                consider(
                    object["created"].as_i64().map(|c| c + settings.incomplete_expiry),
                    Due::ExpireIncomplete(id),
                );
            }
            (Some("invoice"), Some("draft")) => {
                consider(world.invoice_state.get(&id).and_then(|s| s.finalize_at), Due::Finalize(id));
            }
            (Some("invoice"), Some("open")) if object["auto_advance"] == true => {
                consider(object["next_payment_attempt"].as_i64(), Due::Retry(id));
            }
            _ => {}
        }
    }
    best
}

/// Runs every lifecycle step of `customers` due up to `until`, in time order, calling `set_time`
/// before each so events carry the time they happen at.
pub fn run_until(
    world: &mut World,
    settings: &Settings,
    customers: &[String],
    until: i64,
    mut set_time: impl FnMut(&mut World, i64),
) {
    let customers: std::collections::HashSet<&str> = customers.iter().map(String::as_str).collect();
    // A bound on steps: a misconfigured schedule must not spin forever.
    for _ in 0..10_000 {
        let Some((at, due)) = next_due(world, settings, &customers) else { break };
        if at > until {
            break;
        }
        set_time(world, at);
        match due {
            Due::PeriodEnd(sub) => renew_or_end(world, settings, &sub, at),
            Due::CancelAt(sub) => {
                end_subscription(world, &sub, at, "cancellation_requested");
            }
            Due::Finalize(invoice) => {
                if let Some(s) = world.invoice_state.get_mut(&invoice) {
                    s.finalize_at = None;
                }
                finalize(world, &invoice, at);
                attempt_payment(world, settings, &invoice, true, at);
            }
            Due::Retry(invoice) => {
                attempt_payment(world, settings, &invoice, true, at);
            }
            Due::ExpireIncomplete(sub) => expire_incomplete(world, &sub, at),
        }
    }
    set_time(world, until);
}

fn renew_or_end(world: &mut World, settings: &Settings, sub_id: &str, at: i64) {
    let Some(sub) = world.get(sub_id).cloned() else { return };
    if sub["cancel_at_period_end"] == true || sub["cancel_at"].as_i64().is_some_and(|c| c <= at) {
        end_subscription(world, sub_id, at, "cancellation_requested");
        return;
    }
    let price = sub["items"]["data"][0]["price"].clone();
    let interval = price["recurring"]["interval"].as_str().unwrap_or("month").to_owned();
    let count = price["recurring"]["interval_count"].as_i64().unwrap_or(1);
    let next_end = period_end(at, &interval, count);
    let renewed = update_subscription(world, sub_id, |s| {
        s["items"]["data"][0]["current_period_start"] = json!(at);
        s["items"]["data"][0]["current_period_end"] = json!(next_end);
    });
    // Pending proration items ride on the renewal invoice.
    let mut lines = pending_item_lines(world, sub_id);
    lines.push(period_line(world, &renewed, at, next_end));
    let invoice = new_invoice(world, &renewed, "subscription_cycle", lines, at);
    let invoice_id = invoice["id"].as_str().unwrap_or_default().to_owned();
    world.invoice_state.entry(invoice_id.clone()).or_default().finalize_at =
        Some(at + settings.finalize_delay);
    update_subscription(world, sub_id, |s| s["latest_invoice"] = json!(invoice_id));
}

/// Lines for the subscription's pending invoice items, which are consumed.
fn pending_item_lines(world: &mut World, sub_id: &str) -> Vec<Value> {
    let pending: Vec<Value> = world
        .objects
        .values()
        .filter(|o| o["object"] == "invoiceitem" && o["subscription"] == sub_id && o["invoice"].is_null())
        .cloned()
        .collect();
    let mut lines = Vec::new();
    for item in pending {
        let Some(mut l) = item["id"].as_str().and_then(|id| world.pending_lines.remove(id)) else {
            continue;
        };
        l["parent"]["subscription_item_details"]["invoice_item"] = item["id"].clone();
        lines.push(l);
        if let Some(stored) = item["id"].as_str().and_then(|id| world.get_mut(id)) {
            // Consumed: the renewal invoice about to be created carries it.
            stored["invoice"] = json!("consumed");
        }
    }
    lines
}

fn expire_incomplete(world: &mut World, sub_id: &str, at: i64) {
    let Some(sub) = world.get(sub_id).cloned() else { return };
    if let Some(invoice) = sub["latest_invoice"].as_str().and_then(|i| world.get_mut(i)) {
        invoice["status"] = json!("void");
        invoice["status_transitions"]["voided_at"] = json!(at);
        let voided = invoice.clone();
        world.emit("invoice.voided", &voided, None, None);
    }
    let mut expired = sub;
    expired["status"] = json!("incomplete_expired");
    expired["ended_at"] = json!(at);
    world.put(expired.clone());
    // Stripe ends an expired incomplete subscription; it is gone for the customer.
    world.emit("customer.subscription.deleted", &expired, None, None);
}

/// How a new subscription's first invoice is paid.
pub struct NewSubscription<'a> {
    pub customer: &'a str,
    pub price: Value,
    pub quantity: i64,
    pub default_payment_method: Option<String>,
    pub metadata: Value,
    pub billing_mode: &'a str,
    /// Through Checkout: 3DS happened on the page and a decline leaves nothing behind.
    pub via_checkout: bool,
}

/// Creates a subscription and charges its first invoice (stripe-lifecycles.md §1 a, b, c, f).
pub fn create_subscription(
    world: &mut World,
    settings: &Settings,
    req: NewSubscription<'_>,
) -> Result<Value, StripeError> {
    let now = world.customer_now(req.customer);
    let interval = req.price["recurring"]["interval"].as_str().unwrap_or("month").to_owned();
    let count = req.price["recurring"]["interval_count"].as_i64().unwrap_or(1);
    let end = period_end(now, &interval, count);
    let item_id = world.new_id("si");
    let test_clock = world.get(req.customer).map_or(Value::Null, |c| c["test_clock"].clone());
    let sub = world.create(
        "subscription",
        "sub",
        json!({
            "billing_cycle_anchor": now,
            "billing_mode": {"type": req.billing_mode, "flexible": null, "updated_at": now},
            "cancel_at": null,
            "cancel_at_period_end": false,
            "canceled_at": null,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": req.price["currency"],
            "customer": req.customer,
            "default_payment_method": req.default_payment_method,
            "ended_at": null,
            "items": {
                "object": "list",
                "data": [crate::objects::complete("subscription_item", json!({
                    "id": item_id,
                    "object": "subscription_item",
                    "created": now,
                    "current_period_start": now,
                    "current_period_end": end,
                    "price": req.price,
                    "plan": req.price,
                    "quantity": req.quantity,
                    "metadata": {},
                }))],
                "has_more": false,
                "total_count": 1,
                "url": "/v1/subscription_items",
            },
            "livemode": false,
            "metadata": req.metadata,
            "plan": req.price,
            "quantity": req.quantity,
            "start_date": now,
            "status": CREATING,
            "test_clock": test_clock,
        }),
    );
    let sub_id = sub["id"].as_str().unwrap_or_default().to_owned();
    if let Some(item) = world.get_mut(&sub_id).and_then(|s| s["items"]["data"].get_mut(0)) {
        item["subscription"] = json!(sub_id);
    }
    let sub = world.get(&sub_id).cloned().unwrap_or(sub);
    let first_line = period_line(world, &sub, now, end);
    let invoice = new_invoice(world, &sub, "subscription_create", vec![first_line], now);
    let invoice_id = invoice["id"].as_str().unwrap_or_default().to_owned();
    finalize(world, &invoice_id, now);
    if let Some(s) = world.get_mut(&sub_id) {
        s["latest_invoice"] = json!(invoice_id);
    }
    if req.via_checkout {
        // Checkout ran any 3-D Secure challenge on its own page: this payment is authenticated
        // and the card it saved (that one only) is set up for later off-session charges.
        if let Some(pm) = &req.default_payment_method {
            world.set_up.insert(pm.clone());
        }
        world.authenticated.insert(invoice_id.clone());
    }
    let outcome = attempt_payment(world, settings, &invoice_id, false, now);
    let status = if outcome == ChargeOutcome::Succeeded { "active" } else { "incomplete" };
    let mut sub = world.get(&sub_id).cloned().unwrap_or(Value::Null);
    sub["status"] = json!(status);
    world.put(sub.clone());
    world.emit("customer.subscription.created", &sub, None, None);
    crate::entitlements::refresh(world, req.customer);
    Ok(sub)
}

/// The card a payment method behaves as, if it is one of ours.
pub fn card_of(world: &World, pm: &str) -> Option<Card> {
    world.cards.get(pm).copied().or_else(|| Card::from_token(pm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proration_rounds_each_line_like_the_worked_examples() {
        // stripe-lifecycles.md §2: 3 → 5 seats at $20 at half the period.
        assert_eq!(-prorate(2000 * 3, 1_296_000, 2_592_000), -3000);
        assert_eq!(prorate(2000 * 5, 1_296_000, 2_592_000), 5000);
        // The rounding trap: 21 of 31 days left gives 2709 net, not 2710.
        let (left, len) = (21 * 86_400, 31 * 86_400);
        assert_eq!(-prorate(6000, left, len) + prorate(10000, left, len), 2709);
        // 2 → 3 seats at $10 with 21 of 31 days left (an observed invoice).
        assert_eq!(prorate(2000, left, len), 1355);
        assert_eq!(prorate(3000, left, len), 2032);
    }

    #[test]
    fn months_are_calendar_months() {
        let jan31 = 1_769_817_600; // 2026-01-31T00:00:00Z
        assert_eq!(period_end(jan31, "month", 1), 1_772_236_800); // 2026-02-28
        assert_eq!(period_end(jan31, "year", 1), 1_801_353_600); // 2027-01-31
    }
}
