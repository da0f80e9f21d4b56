//! Object shapes: the complete JSON of every Stripe object type the simulator returns, with our defaults.
//!
//! The engine only knows the handful of fields it models (ids, amounts, statuses, links between
//! objects). Real Stripe clients, however, deserialize the *whole* object, so every field Stripe
//! sends must be present with the right JSON type. This module owns that: `complete(kind, known)`
//! starts from a full default object and deep-merges what the engine knows over it.
//!
//! Default policy (checked against Stripe's published example objects by `tests/fidelity.rs`):
//! - fields Stripe always sets get a neutral value of the same JSON type (`0`, `""`, `false`,
//!   `{}`, `[]`, or Stripe's own creation default where it has one, e.g. `quantity: 1`);
//! - fields Stripe documents as nullable default to `null`, including optional sub-objects whose
//!   mere presence means something to clients (`next_action`, `pause_collection`, `discount`);
//! - sub-objects that are always present get all of their keys, so a partial sub-object from the
//!   engine merges into a complete one;
//! - key order is Stripe's: `id`, `object`, then the rest alphabetically (`preserve_order` is on).

use serde_json::{Value, json};

/// Every object type the simulator returns, by its Stripe `object` name.
pub const KINDS: &[&str] = &[
    "customer",
    "product",
    "price",
    "payment_method",
    "checkout.session",
    "subscription",
    "subscription_item",
    "invoice",
    "line_item",
    "payment_intent",
    "charge",
    "billing_portal.configuration",
    "billing_portal.session",
    "webhook_endpoint",
    "event",
    "test_helpers.test_clock",
    "entitlements.feature",
    "product_feature",
    "entitlements.active_entitlement",
    "entitlements.active_entitlement_summary",
    "invoiceitem",
];

/// The complete object of `kind`: every field Stripe's object has, with our defaults, and then
/// `known` deep-merged over them (objects merge key by key; any other value replaces).
///
/// Nullable sub-objects default to `null`, but once the engine fills one (even partially) it gets
/// all of its keys. Embedded objects of other kinds are completed too (subscription items inside
/// a subscription, lines inside an invoice, entitlements inside a summary, the object inside an
/// event), and the legacy `plan` mirrors that Stripe still derives from prices are filled in when
/// the engine did not supply them. Completing an already complete object is a no-op.
///
/// An unknown `kind` has no defaults: `known` is returned unchanged.
pub fn complete(kind: &str, known: Value) -> Value {
    let Some(mut out) = defaults(kind) else {
        return known;
    };
    merge(&mut out, known);
    complete_nullable_objects(kind, &mut out);
    complete_embedded(kind, &mut out);
    out
}

/// Deep merge helper used by `complete` (public: the engine reuses it).
///
/// Objects merge key by key (recursively); any other `over` value, including `null` and arrays,
/// replaces what is in `base`.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn defaults(kind: &str) -> Option<Value> {
    Some(match kind {
        "customer" => defaults_customer(),
        "product" => defaults_product(),
        "price" => defaults_price(),
        "payment_method" => defaults_payment_method(),
        "checkout.session" => defaults_checkout_session(),
        "subscription" => defaults_subscription(),
        "subscription_item" => defaults_subscription_item(),
        "invoice" => defaults_invoice(),
        "line_item" => defaults_line_item(),
        "payment_intent" => defaults_payment_intent(),
        "charge" => defaults_charge(),
        "billing_portal.configuration" => defaults_billing_portal_configuration(),
        "billing_portal.session" => defaults_billing_portal_session(),
        "webhook_endpoint" => defaults_webhook_endpoint(),
        "event" => defaults_event(),
        "test_helpers.test_clock" => defaults_test_clock(),
        "entitlements.feature" => defaults_entitlements_feature(),
        "product_feature" => defaults_product_feature(),
        "entitlements.active_entitlement" => defaults_active_entitlement(),
        "entitlements.active_entitlement_summary" => defaults_active_entitlement_summary(),
        "invoiceitem" => defaults_invoiceitem(),
        _ => return None,
    })
}

/// Nullable sub-objects the engine fills in some states, by JSON pointer, with their full shape.
/// They default to `null` (Stripe sends `null` while they do not apply, and clients read presence
/// as meaning), so their keys live here rather than in the defaults.
fn nullable_object_shapes(kind: &str) -> Vec<(&'static str, Value)> {
    match kind {
        "customer" => vec![
            ("/address", blank_address()),
            ("/invoice_settings/rendering_options", json!({ "amount_tax_display": null, "template": null })),
            ("/shipping", json!({ "address": blank_address(), "name": "", "phone": null })),
        ],
        "checkout.session" => vec![(
            "/customer_details",
            json!({
                "address": blank_address(),
                "business_name": null,
                "email": null,
                "individual_name": null,
                "name": null,
                "phone": null,
                "tax_exempt": "none",
                "tax_ids": [],
            }),
        )],
        "subscription" => vec![("/pause_collection", json!({ "behavior": "", "resumes_at": null }))],
        "invoice" => vec![("/customer_address", blank_address())],
        // Only `type` is common to every next action; the branch named by it comes from the engine.
        "payment_intent" => vec![("/next_action", json!({ "type": "" }))],
        "charge" => vec![(
            "/outcome",
            json!({
                "advice_code": null,
                "network_advice_code": null,
                "network_decline_code": null,
                "network_status": null,
                "reason": null,
                "seller_message": null,
                "type": "",
            }),
        )],
        "billing_portal.session" => vec![(
            "/flow",
            json!({
                "after_completion": { "hosted_confirmation": null, "redirect": null, "type": "" },
                "subscription_cancel": null,
                "subscription_update": null,
                "subscription_update_confirm": null,
                "type": "",
            }),
        )],
        // A tagged union like `invoice.parent`: only the branch named by `type` is non-null.
        "invoiceitem" => vec![("/parent", json!({ "subscription_details": null, "type": "" }))],
        _ => Vec::new(),
    }
}

fn complete_nullable_objects(kind: &str, out: &mut Value) {
    for (pointer, shape) in nullable_object_shapes(kind) {
        if let Some(slot) = out.pointer_mut(pointer).filter(|slot| slot.is_object()) {
            let mut full = shape;
            merge(&mut full, slot.take());
            *slot = full;
        }
    }
}

/// Fills what Stripe derives from other fields or embeds from other kinds.
fn complete_embedded(kind: &str, out: &mut Value) {
    match kind {
        "subscription" => {
            complete_list_items(out.pointer_mut("/items/data"), "subscription_item");
            mirror_single_item(out);
        }
        "subscription_item" => mirror_plan_from_price(out),
        "invoice" => complete_list_items(out.pointer_mut("/lines/data"), "line_item"),
        "entitlements.active_entitlement_summary" => {
            complete_list_items(out.pointer_mut("/entitlements/data"), "entitlements.active_entitlement");
        }
        "event" => {
            // `data.object` is a snapshot of whatever the event is about; complete it as its own
            // kind when we know that kind (and leave e.g. a plan or a deleted stub alone).
            if let Some(object) = out.pointer_mut("/data/object") {
                let inner = object.get("object").and_then(Value::as_str).map(str::to_owned);
                if let Some(inner) = inner.filter(|k| KINDS.contains(&k.as_str())) {
                    let taken = object.take();
                    *object = complete(&inner, taken);
                }
            }
        }
        _ => {}
    }
}

fn complete_list_items(data: Option<&mut Value>, kind: &str) {
    if let Some(Value::Array(items)) = data {
        for item in items.iter_mut() {
            let taken = item.take();
            *item = complete(kind, taken);
        }
    }
}

/// Stripe still sends the deprecated top-level `plan` and `quantity` on a subscription when it
/// has exactly one item (and `null` for both otherwise). Fill them unless the engine already did.
fn mirror_single_item(sub: &mut Value) {
    let single = match sub.pointer("/items/data") {
        Some(Value::Array(items)) if items.len() == 1 => items.first().cloned(),
        _ => None,
    };
    let Some(item) = single else { return };
    let Some(fields) = sub.as_object_mut() else { return };
    for key in ["plan", "quantity"] {
        if fields.get(key).is_none_or(Value::is_null) {
            fields.insert(key.to_owned(), item.get(key).cloned().unwrap_or(Value::Null));
        }
    }
}

/// A subscription item's legacy `plan` is Stripe's plan view of the item's `price` (same id).
/// When the engine gave a price but no plan, the default plan still has an empty id: derive it.
fn mirror_plan_from_price(item: &mut Value) {
    let plan_missing = item.pointer("/plan/id").and_then(Value::as_str).is_some_and(str::is_empty);
    let price_known = item.pointer("/price/id").and_then(Value::as_str).is_some_and(|id| !id.is_empty());
    if plan_missing
        && price_known
        && let Some(price) = item.get("price").cloned()
        && let Some(fields) = item.as_object_mut()
    {
        fields.insert("plan".to_owned(), plan_from_price(&price));
    }
}

/// The legacy `plan` object Stripe exposes for a recurring `price`.
pub fn plan_from_price(price: &Value) -> Value {
    let get = |pointer: &str| price.pointer(pointer).cloned().unwrap_or(Value::Null);
    let mut plan = defaults_plan();
    merge(
        &mut plan,
        json!({
            "id": get("/id"),
            "active": get("/active"),
            "amount": get("/unit_amount"),
            "amount_decimal": get("/unit_amount_decimal"),
            "billing_scheme": get("/billing_scheme"),
            "created": get("/created"),
            "currency": get("/currency"),
            "interval": get("/recurring/interval"),
            "interval_count": get("/recurring/interval_count"),
            "livemode": get("/livemode"),
            "metadata": get("/metadata"),
            "meter": get("/recurring/meter"),
            "nickname": get("/nickname"),
            "product": get("/product"),
            "tiers_mode": get("/tiers_mode"),
            "transform_usage": get("/transform_quantity"),
            "trial_period_days": get("/recurring/trial_period_days"),
            "usage_type": get("/recurring/usage_type"),
        }),
    );
    plan
}

// ---------------------------------------------------------------------------------------------
// Shared sub-objects
// ---------------------------------------------------------------------------------------------

/// One object from several `json!` blocks, in order. Large objects are written in a few blocks
/// because one `json!` literal with ~60 keys exceeds the macro recursion limit.
fn joined<const N: usize>(parts: [Value; N]) -> Value {
    let mut out = json!({});
    for part in parts {
        merge(&mut out, part);
    }
    out
}

/// An empty embedded list. `url` is left for the engine (it names the parent's id).
fn empty_list() -> Value {
    json!({ "object": "list", "data": [], "has_more": false, "total_count": 0, "url": "" })
}

/// An address with every line unknown (Stripe sends this, not `null`, inside billing details).
fn blank_address() -> Value {
    json!({
        "city": null,
        "country": null,
        "line1": null,
        "line2": null,
        "postal_code": null,
        "state": null,
    })
}

fn blank_billing_details() -> Value {
    json!({ "address": blank_address(), "email": null, "name": null, "phone": null, "tax_id": null })
}

fn blank_card_checks() -> Value {
    json!({ "address_line1_check": null, "address_postal_code_check": null, "cvc_check": null })
}

/// Invoice-line and invoice-item `pricing`. `price_details` is in Stripe's API reference (the price
/// and product the amount came from) even though the example object leaves it out.
fn blank_pricing() -> Value {
    json!({
        "price_details": { "price": "", "product": "" },
        "type": "price_details",
        "unit_amount_decimal": null,
    })
}

/// The deprecated `plan` view of a price, still embedded in subscription items.
fn defaults_plan() -> Value {
    json!({
        "id": "",
        "object": "plan",
        "active": true,
        "amount": 0,
        "amount_decimal": "0",
        "billing_scheme": "per_unit",
        "created": 0,
        "currency": "usd",
        "interval": "month",
        "interval_count": 1,
        "livemode": false,
        "metadata": {},
        "meter": null,
        "nickname": null,
        "product": "",
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": "licensed",
    })
}

// ---------------------------------------------------------------------------------------------
// Core billing objects
// ---------------------------------------------------------------------------------------------

fn defaults_customer() -> Value {
    json!({
        "id": "",
        "object": "customer",
        // Nullable: a customer has no address until one is collected.
        "address": null,
        "balance": 0,
        "created": 0,
        // Stripe leaves a new customer's currency null until its first invoice or subscription.
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "discount": null,
        "email": null,
        "invoice_prefix": null,
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null,
        },
        "livemode": false,
        "metadata": {},
        "name": null,
        // Stripe numbers a customer's invoices from 1.
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null,
    })
}

fn defaults_product() -> Value {
    json!({
        "id": "",
        "object": "product",
        // Products (and prices, features, portal configurations) are active unless archived.
        "active": true,
        "created": 0,
        "default_price": null,
        "description": null,
        "images": [],
        "livemode": false,
        "marketing_features": [],
        "metadata": {},
        "name": "",
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "type": "service",
        "unit_label": null,
        "updated": 0,
        "url": null,
    })
}

fn defaults_price() -> Value {
    json!({
        "id": "",
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": 0,
        "currency": "usd",
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": null,
        "metadata": {},
        "nickname": null,
        "product": "",
        // The simulator bills subscriptions, so prices are recurring by default; the engine sets
        // `recurring: null` and `type: "one_time"` for one-off prices.
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": null,
            "trial_period_days": null,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": "recurring",
        "unit_amount": 0,
        "unit_amount_decimal": "0",
    })
}

fn defaults_payment_method() -> Value {
    json!({
        "id": "",
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": blank_billing_details(),
        // Card details are filled by the engine from the test card used.
        "card": {
            "brand": "unknown",
            "checks": blank_card_checks(),
            "country": null,
            "display_brand": null,
            "exp_month": 0,
            "exp_year": 0,
            "fingerprint": null,
            "funding": "unknown",
            "generated_from": null,
            "last4": "",
            "networks": { "available": [], "preferred": null },
            "regulated_status": null,
            "three_d_secure_usage": { "supported": false },
            "wallet": null,
        },
        "created": 0,
        "customer": null,
        "customer_account": null,
        "livemode": false,
        "metadata": {},
        "type": "card",
    })
}

fn defaults_checkout_session() -> Value {
    joined([
        json!({
            "id": "",
            "object": "checkout.session",
            "adaptive_pricing": null,
            "after_expiration": null,
            "allow_promotion_codes": null,
            "amount_subtotal": null,
            "amount_total": null,
            "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
            "billing_address_collection": null,
            "cancel_url": null,
            "client_reference_id": null,
            "client_secret": null,
            "collected_information": null,
            "consent": null,
            "consent_collection": null,
            "created": 0,
            "currency": null,
            "currency_conversion": null,
            "custom_fields": [],
            // Always present; each message is null unless the merchant configured custom text.
            "custom_text": {
                "after_submit": null,
                "shipping_address": null,
                "submit": null,
                "terms_of_service_acceptance": null,
            },
        }),
        json!({
            "customer": null,
            "customer_account": null,
            "customer_creation": null,
            // Null until the customer has filled in the form.
            "customer_details": null,
            "customer_email": null,
            "discounts": null,
            "expires_at": 0,
            "integration_identifier": null,
            "invoice": null,
            "invoice_creation": null,
            "livemode": false,
            "locale": null,
            "managed_payments": { "enabled": false },
            "metadata": {},
        }),
        json!({
            // The simulator's sessions sell subscriptions; the engine sets the requested mode anyway.
            "mode": "subscription",
            "origin_context": null,
            "payment_intent": null,
            "payment_link": null,
            "payment_method_collection": null,
            "payment_method_configuration_details": null,
            "payment_method_options": {},
            "payment_method_types": [],
            "payment_status": "unpaid",
            "permissions": null,
            "phone_number_collection": { "enabled": false },
            "recovered_from": null,
            "saved_payment_method_options": null,
            "setup_intent": null,
            "shipping_address_collection": null,
            "shipping_cost": null,
            "shipping_options": [],
            "status": "open",
            "submit_type": null,
            "subscription": null,
            "success_url": null,
            // Present for payment and subscription sessions (the only modes simulated).
            "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
            "ui_mode": null,
            "url": null,
            "wallet_options": null,
        }),
    ])
}

fn defaults_subscription() -> Value {
    joined([
        json!({
            "id": "",
            "object": "subscription",
            "application": null,
            "application_fee_percent": null,
            "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
            "billing_cycle_anchor": 0,
            "billing_cycle_anchor_config": null,
            // `flexible` only carries settings when `type` is "flexible".
            "billing_mode": { "flexible": null, "type": "classic" },
            "billing_schedules": [],
            "billing_thresholds": null,
            "cancel_at": null,
            "cancel_at_period_end": false,
            "canceled_at": null,
            // Always present; its fields stay null until the subscription is cancelled.
            "cancellation_details": { "comment": null, "feedback": null, "reason": null },
            "collection_method": "charge_automatically",
            "created": 0,
            "currency": "usd",
            "customer": "",
            "customer_account": null,
            "days_until_due": null,
        }),
        json!({
            "default_payment_method": null,
            "default_source": null,
            "default_tax_rates": [],
            "description": null,
            "discounts": [],
            "ended_at": null,
            "invoice_settings": {
                "account_tax_ids": null,
                "custom_fields": null,
                "description": null,
                "footer": null,
                "issuer": { "type": "self" },
            },
            // Elements are completed as `subscription_item`s by `complete`. Billing periods live on
            // the items (`current_period_start/end`), not on the subscription, in the current API.
            "items": empty_list(),
            "latest_invoice": null,
            "livemode": false,
            "managed_payments": { "enabled": false },
            "metadata": {},
            "next_pending_invoice_item_invoice": null,
            "on_behalf_of": null,
        }),
        json!({
            "pause_collection": null,
            "payment_settings": {
                "payment_method_options": null,
                "payment_method_types": null,
                // What Stripe reports when the subscription was created without this setting.
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": null,
            "pending_setup_intent": null,
            "pending_update": null,
            // Deprecated but still sent: the single item's plan and quantity, else null (see
            // `mirror_single_item`).
            "plan": null,
            "quantity": null,
            "schedule": null,
            "start_date": 0,
            // A subscription starts incomplete until its first invoice is paid; the engine moves it on.
            "status": "incomplete",
            "test_clock": null,
            "transfer_data": null,
            "trial_end": null,
            // Always present; "create_invoice" is Stripe's default when a trial ends without a card.
            "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
            "trial_start": null,
        }),
    ])
}

fn defaults_subscription_item() -> Value {
    json!({
        "id": "",
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": 0,
        "current_period_end": 0,
        "current_period_start": 0,
        "discounts": [],
        "metadata": {},
        // Derived from `price` by `mirror_plan_from_price` when the engine does not give one.
        "plan": defaults_plan(),
        // Always expanded inside a subscription item.
        "price": defaults_price(),
        // Stripe's default quantity for licensed prices.
        "quantity": 1,
        "subscription": "",
        "tax_rates": [],
    })
}

fn defaults_invoice() -> Value {
    joined([
        json!({
            "id": "",
            "object": "invoice",
            // The simulated platform account is a US account billing in USD.
            "account_country": "US",
            "account_name": null,
            "account_tax_ids": null,
            "amount_due": 0,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "application": null,
            "attempt_count": 0,
            "attempted": false,
            "auto_advance": false,
            "automatic_tax": {
                "disabled_reason": null,
                "enabled": false,
                "liability": null,
                "provider": null,
                "status": null,
            },
            "automatically_finalizes_at": null,
            "billing_reason": "manual",
            "collection_method": "charge_automatically",
            "created": 0,
            "currency": "usd",
            "custom_fields": null,
        }),
        json!({
            "customer": "",
            "customer_account": null,
            "customer_address": null,
            "customer_email": null,
            "customer_name": null,
            "customer_phone": null,
            "customer_shipping": null,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": null,
            "default_source": null,
            "default_tax_rates": [],
            "description": null,
            "discounts": [],
            "due_date": null,
            "effective_at": null,
            "ending_balance": null,
            "footer": null,
            "from_invoice": null,
            "hosted_invoice_url": null,
            "invoice_pdf": null,
            "issuer": { "type": "self" },
            "last_finalization_error": null,
            "latest_revision": null,
        }),
        json!({
            // Elements are completed as `line_item`s by `complete`.
            "lines": empty_list(),
            "livemode": false,
            "metadata": {},
            "next_payment_attempt": null,
            "number": null,
            "on_behalf_of": null,
            // Every simulated invoice comes from a subscription. `parent` is a tagged union: only the
            // branch named by `type` is non-null. The engine sets `parent: null` for a manual invoice.
            "parent": {
                "quote_details": null,
                "subscription_details": { "metadata": null, "subscription": "" },
                "type": "subscription_details",
            },
            "payment_settings": {
                "default_mandate": null,
                "payment_method_options": null,
                "payment_method_types": null,
            },
        }),
        json!({
            "period_end": 0,
            "period_start": 0,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": null,
            "rendering": {
                "amount_tax_display": null,
                "pdf": null,
                "template": null,
                "template_version": null,
            },
            "shipping_cost": null,
            "shipping_details": null,
            "starting_balance": 0,
            "statement_descriptor": null,
            "status": "draft",
            "status_transitions": {
                "finalized_at": null,
                "marked_uncollectible_at": null,
                "paid_at": null,
                "voided_at": null,
            },
            // Superseded by `parent.subscription_details.subscription` but still in the example object.
            "subscription": null,
            "subtotal": 0,
            "subtotal_excluding_tax": 0,
            "test_clock": null,
            "total": 0,
            "total_discount_amounts": [],
            "total_excluding_tax": 0,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": null,
        }),
    ])
}

/// An invoice line item (`object: "line_item"`), the kind found in `invoice.lines`.
fn defaults_line_item() -> Value {
    json!({
        "id": "",
        "object": "line_item",
        "amount": 0,
        "currency": "usd",
        "description": null,
        "discount_amounts": [],
        "discountable": true,
        "discounts": [],
        "invoice": null,
        "livemode": false,
        "metadata": {},
        // Same tagged-union shape as `invoice.parent`; simulated lines bill a subscription item.
        "parent": {
            "invoice_item_details": null,
            "subscription_item_details": {
                "invoice_item": null,
                "proration": false,
                // Always an object; `credited_items` is only set on proration credits.
                "proration_details": { "credited_items": null },
                "subscription": null,
                "subscription_item": "",
            },
            "type": "subscription_item_details",
        },
        "period": { "end": 0, "start": 0 },
        "pretax_credit_amounts": [],
        "pricing": blank_pricing(),
        "quantity": 1,
        "quantity_decimal": null,
        "subscription": null,
        "subtotal": 0,
        "taxes": [],
    })
}

fn defaults_invoiceitem() -> Value {
    json!({
        "id": "",
        "object": "invoiceitem",
        "amount": 0,
        "currency": "usd",
        "customer": "",
        "customer_account": null,
        "date": 0,
        "description": null,
        "discountable": true,
        "discounts": [],
        "invoice": null,
        "livemode": false,
        "metadata": {},
        "net_amount": 0,
        // Null for an item created through the API; the engine sets
        // `{"type": "subscription_details", "subscription_details": {...}}` for proration items.
        "parent": null,
        "period": { "end": 0, "start": 0 },
        "pricing": blank_pricing(),
        "proration": false,
        "quantity": 1,
        "quantity_decimal": null,
        "tax_rates": [],
        "test_clock": null,
    })
}

// ---------------------------------------------------------------------------------------------
// Payments
// ---------------------------------------------------------------------------------------------

fn defaults_payment_intent() -> Value {
    joined([
        json!({
            "id": "",
            "object": "payment_intent",
            "amount": 0,
            "amount_capturable": 0,
            "amount_details": { "tip": {} },
            "amount_received": 0,
            "application": null,
            "application_fee_amount": null,
            "automatic_payment_methods": null,
            "canceled_at": null,
            "cancellation_reason": null,
            "capture_method": "automatic",
            "client_secret": null,
            "confirmation_method": "automatic",
            "created": 0,
            "currency": "usd",
            "customer": null,
            "customer_account": null,
        }),
        json!({
            "description": null,
            "excluded_payment_method_types": null,
            "last_payment_error": null,
            "latest_charge": null,
            "livemode": false,
            "managed_payments": { "enabled": false },
            "metadata": {},
            // Null unless the status is `requires_action`: clients treat a non-null `next_action` as
            // "3-D Secure or a redirect is needed", so it must not default to an object.
            "next_action": null,
            "on_behalf_of": null,
        }),
        json!({
            "payment_method": null,
            "payment_method_configuration_details": null,
            "payment_method_options": {},
            "payment_method_types": [],
            "processing": null,
            "receipt_email": null,
            "review": null,
            "setup_future_usage": null,
            "shipping": null,
            "source": null,
            "statement_descriptor": null,
            "statement_descriptor_suffix": null,
            "status": "requires_payment_method",
            "transfer_data": null,
            "transfer_group": null,
        }),
    ])
}

fn defaults_charge() -> Value {
    joined([
        json!({
            "id": "",
            "object": "charge",
            "amount": 0,
            "amount_captured": 0,
            "amount_refunded": 0,
            "application": null,
            "application_fee": null,
            "application_fee_amount": null,
            "balance_transaction": null,
            "billing_details": blank_billing_details(),
            "calculated_statement_descriptor": null,
            "captured": false,
            "created": 0,
            "currency": "usd",
            "customer": null,
            "description": null,
            "disputed": false,
            "failure_balance_transaction": null,
            "failure_code": null,
            "failure_message": null,
            "fraud_details": {},
        }),
        json!({
            "livemode": false,
            "metadata": {},
            "on_behalf_of": null,
            // Null until the charge has been attempted.
            "outcome": null,
            "paid": false,
            "payment_intent": null,
            "payment_method": null,
            // The simulator only charges cards, so the card branch is always the one present; the
            // sub-objects are the ones Stripe sends for a plain card charge.
            "payment_method_details": {
                "card": {
                    "amount_authorized": null,
                    "authorization_code": null,
                    "brand": "unknown",
                    "checks": blank_card_checks(),
                    "country": null,
                    "exp_month": 0,
                    "exp_year": 0,
                    "extended_authorization": { "status": "disabled" },
                    "fingerprint": null,
                    "funding": "unknown",
                    "incremental_authorization": { "status": "unavailable" },
                    "installments": null,
                    "last4": "",
                    "mandate": null,
                    "multicapture": { "status": "unavailable" },
                    "network": null,
                    "network_token": { "used": false },
                    "network_transaction_id": null,
                    "overcapture": { "maximum_amount_capturable": 0, "status": "unavailable" },
                    "regulated_status": null,
                    "three_d_secure": null,
                    "transaction_link_id": null,
                    "wallet": null,
                },
                "type": "card",
            },
        }),
        json!({
            "receipt_email": null,
            "receipt_number": null,
            "receipt_url": null,
            "refunded": false,
            "refunds": empty_list(),
            "review": null,
            "shipping": null,
            "source": null,
            "source_transfer": null,
            "statement_descriptor": null,
            "statement_descriptor_suffix": null,
            "status": "pending",
            "transfer_data": null,
            "transfer_group": null,
        }),
    ])
}

// ---------------------------------------------------------------------------------------------
// Customer portal
// ---------------------------------------------------------------------------------------------

fn defaults_billing_portal_configuration() -> Value {
    json!({
        "id": "",
        "object": "billing_portal.configuration",
        "active": true,
        "application": null,
        "business_profile": { "headline": null, "privacy_policy_url": null, "terms_of_service_url": null },
        "created": 0,
        "default_return_url": null,
        // Every feature section is always present; all disabled until configured.
        "features": {
            "customer_update": { "allowed_updates": [], "enabled": false },
            "invoice_history": { "enabled": false },
            "payment_method_update": { "enabled": false, "payment_method_configuration": null },
            "subscription_cancel": {
                "cancellation_reason": { "enabled": false, "options": [] },
                "enabled": false,
                "mode": "at_period_end",
                "proration_behavior": "none",
            },
            "subscription_update": {
                "billing_cycle_anchor": null,
                "default_allowed_updates": [],
                "enabled": false,
                // In Stripe's API reference, absent from the example object.
                "products": null,
                "proration_behavior": "none",
                "schedule_at_period_end": { "conditions": [] },
                "trial_update_behavior": "end_trial",
            },
        },
        "is_default": false,
        "livemode": false,
        "login_page": { "enabled": false, "url": null },
        "metadata": {},
        "name": null,
        "updated": 0,
    })
}

fn defaults_billing_portal_session() -> Value {
    json!({
        "id": "",
        "object": "billing_portal.session",
        "configuration": "",
        "created": 0,
        "customer": "",
        "customer_account": null,
        // Null unless the session was created with `flow_data` (a deep link into one flow).
        "flow": null,
        "livemode": false,
        "locale": null,
        "on_behalf_of": null,
        "return_url": null,
        "url": "",
    })
}

// ---------------------------------------------------------------------------------------------
// Webhooks, events, test clocks
// ---------------------------------------------------------------------------------------------

fn defaults_webhook_endpoint() -> Value {
    json!({
        "id": "",
        "object": "webhook_endpoint",
        // Null means "the account's default API version".
        "api_version": null,
        "application": null,
        "created": 0,
        "description": null,
        "enabled_events": [],
        "livemode": false,
        "metadata": {},
        "status": "enabled",
        "url": "",
    })
}

fn defaults_event() -> Value {
    json!({
        "id": "",
        "object": "event",
        "api_version": null,
        "created": 0,
        // `data.object` is the event's subject; `complete` completes it as its own kind.
        "data": { "object": {} },
        "livemode": false,
        "pending_webhooks": 0,
        "request": { "id": null, "idempotency_key": null },
        "type": "",
    })
}

fn defaults_test_clock() -> Value {
    json!({
        "id": "",
        "object": "test_helpers.test_clock",
        "created": 0,
        "deletes_after": 0,
        "frozen_time": 0,
        "livemode": false,
        "name": null,
        "status": "ready",
        "status_details": {},
    })
}

// ---------------------------------------------------------------------------------------------
// Entitlements
// ---------------------------------------------------------------------------------------------

fn defaults_entitlements_feature() -> Value {
    json!({
        "id": "",
        "object": "entitlements.feature",
        "active": true,
        "livemode": false,
        "lookup_key": "",
        "metadata": {},
        "name": "",
    })
}

fn defaults_product_feature() -> Value {
    json!({
        "id": "",
        "object": "product_feature",
        // Always expanded: the attached feature itself.
        "entitlement_feature": defaults_entitlements_feature(),
        "livemode": false,
    })
}

fn defaults_active_entitlement() -> Value {
    json!({
        "id": "",
        "object": "entitlements.active_entitlement",
        // An expandable reference: the feature's id unless the request expanded it.
        "feature": "",
        "livemode": false,
        "lookup_key": "",
    })
}

fn defaults_active_entitlement_summary() -> Value {
    // No `id`: a summary is addressed by its customer.
    json!({
        "object": "entitlements.active_entitlement_summary",
        "customer": "",
        // Elements are completed as `entitlements.active_entitlement`s by `complete`.
        "entitlements": empty_list(),
        "livemode": false,
    })
}
