//! Owns the `/v1` resources: one function per Stripe endpoint we model, routed by method and path.
//! Each runs under the world lock and returns the object in the current shape; the dispatcher in
//! `lib.rs` renders it for the caller's API version, expands, and records idempotent results.

pub mod pages;

use axum::http::Method;
use serde_json::{Value, json};

use crate::billing::{self, NewSubscription};
use crate::cards::Card;
use crate::error::StripeError;
use crate::form::Params;
use crate::world::World;
use crate::{Req, Shared};

type Result<T> = std::result::Result<T, StripeError>;

pub fn route(world: &mut World, shared: &Shared, req: &Req) -> Result<Value> {
    let p: Vec<&str> = req.path.iter().map(String::as_str).collect();
    let get = req.method == Method::GET;
    let post = req.method == Method::POST;
    let delete = req.method == Method::DELETE;
    match p.as_slice() {
        ["customers"] if post => create_customer(world, req),
        ["customers"] if get => {
            list(world, req, "customer", |o, q| q.str_param("email").is_none_or(|e| o["email"] == e))
        }
        ["customers", id] if get => world.fetch("customer", id),
        ["customers", id] if post => update_customer(world, req, id),

        ["products"] if post => create_product(world, req),
        ["products"] if get => list(world, req, "product", |_, _| true),
        ["products", id] if get => world.fetch("product", id),
        ["products", id] if post => {
            update_simple(world, req, "product", id, &["name", "active", "description"])
        }
        ["products", id, "features"] if post => attach_feature(world, req, id),
        ["products", id, "features", feature] if delete => detach_feature(world, id, feature),
        ["products", id, "features"] if get => {
            world.fetch("product", id)?;
            let data = world
                .list("product_feature")
                .into_iter()
                .filter(|pf| {
                    pf["id"].as_str().and_then(|f| world.product_of_feature.get(f)).is_some_and(|p| p == id)
                })
                .collect();
            Ok(list_of(data, req))
        }

        ["prices"] if post => create_price(world, req),
        ["prices"] if get => {
            let keys: Vec<String> = req
                .params
                .list_param("lookup_keys")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            list(world, req, "price", move |o, q| {
                (keys.is_empty() || o["lookup_key"].as_str().is_some_and(|k| keys.iter().any(|x| x == k)))
                    && q.str_param("product").is_none_or(|pr| o["product"] == pr)
                    && q.str_param("active").is_none_or(|a| o["active"] == (a == "true"))
            })
        }
        ["prices", id] if get => world.fetch("price", id),
        ["prices", id] if post => update_price(world, req, id),

        ["payment_methods"] if get => {
            let customer = req.params.required_str("customer")?.to_owned();
            list(world, req, "payment_method", move |o, _| o["customer"] == customer.as_str())
        }
        ["customers", id, "payment_methods"] if get => {
            world.fetch("customer", id)?;
            list(world, req, "payment_method", |o, _| o["customer"] == *id)
        }
        ["payment_methods", id, "detach"] if post => detach_payment_method(world, id),
        ["payment_methods", id] if get => world.fetch("payment_method", id),
        ["payment_methods", id, "attach"] if post => {
            let customer = req.params.required_str("customer")?;
            attach_payment_method(world, id, customer)
        }

        ["checkout", "sessions"] if post => create_checkout_session(world, shared, req),
        ["checkout", "sessions"] if get => list(world, req, "checkout.session", |o, q| {
            q.str_param("customer").is_none_or(|c| o["customer"] == c)
                && q.str_param("status").is_none_or(|st| o["status"] == st)
                && q.str_param("subscription").is_none_or(|sub| o["subscription"] == sub)
        }),
        ["checkout", "sessions", id] if get => world.fetch("checkout.session", id),
        ["checkout", "sessions", id, "expire"] if post => expire_checkout_session(world, id),
        ["checkout", "sessions", id, "line_items"] if get => {
            world.fetch("checkout.session", id)?;
            let all = crate::world::checkout_line_items(world, id);
            Ok(list_of(all["data"].as_array().cloned().unwrap_or_default(), req))
        }
        ["test_helpers", "checkout", "sessions", id, "complete"] if post => {
            complete_checkout_session(world, shared, req, id)
        }

        ["subscriptions"] if post => create_subscription(world, shared, req),
        ["subscriptions"] if get => list(world, req, "subscription", |o, q| {
            q.str_param("customer").is_none_or(|c| o["customer"] == c)
                && match q.str_param("status") {
                    Some("all") => true,
                    Some(s) => o["status"] == s,
                    None => o["status"] != "canceled" && o["status"] != "incomplete_expired",
                }
        }),
        ["subscriptions", id] if get => world.fetch("subscription", id),
        ["subscriptions", id, "resume"] if post => resume_subscription(world, id),
        ["subscriptions", id] if post => update_subscription(world, shared, req, id),
        ["subscriptions", id] if delete => {
            let sub = world.fetch("subscription", id)?;
            if sub["status"] == "canceled" {
                return Err(StripeError::state("This subscription has already been canceled."));
            }
            let now = world.customer_now(sub["customer"].as_str().unwrap_or_default());
            Ok(billing::end_subscription(world, id, now, "cancellation_requested"))
        }

        ["invoices", "create_preview"] if post => create_preview(world, req),
        ["invoices"] if get => list(world, req, "invoice", |o, q| {
            q.str_param("customer").is_none_or(|c| o["customer"] == c)
                && q.str_param("subscription")
                    .is_none_or(|s| o["parent"]["subscription_details"]["subscription"] == s)
                && q.str_param("status").is_none_or(|s| o["status"] == s)
        }),
        ["invoices", id] if get => world.fetch("invoice", id),
        ["invoices", id, "pay"] if post => pay_invoice(world, shared, req, id),
        ["invoices", id, "lines"] if get => {
            let invoice = world.fetch("invoice", id)?;
            Ok(list_of(invoice["lines"]["data"].as_array().cloned().unwrap_or_default(), req))
        }
        ["invoices", id, "void"] if post => void_invoice(world, id),

        ["payment_intents", id] if get => world.fetch("payment_intent", id),
        ["test_helpers", "payment_intents", id, "authenticate"] if post => {
            authenticate(world, shared, req, id)
        }

        ["billing_portal", "configurations"] if post => create_portal_configuration(world, req),
        ["billing_portal", "configurations"] if get => {
            list(world, req, "billing_portal.configuration", |_, _| true)
        }
        ["billing_portal", "configurations", id] if get => world.fetch("billing_portal.configuration", id),
        ["billing_portal", "configurations", id] if post => update_portal_configuration(world, req, id),
        ["billing_portal", "sessions"] if post => create_portal_session(world, shared, req),

        ["entitlements", "features"] if post => create_feature(world, req),
        ["entitlements", "features"] if get => list(world, req, "entitlements.feature", |_, _| true),
        ["entitlements", "active_entitlements"] if get => {
            let customer = req.params.required_str("customer")?;
            let features = crate::entitlements::active_features(world, customer);
            Ok(list_of(features.iter().map(crate::entitlements::active_entitlement).collect(), req))
        }

        ["webhook_endpoints"] if post => create_webhook_endpoint(world, req),
        ["webhook_endpoints"] if get => list(world, req, "webhook_endpoint", |_, _| true),
        ["webhook_endpoints", id] if get => world.fetch("webhook_endpoint", id),
        ["webhook_endpoints", id] if post => update_webhook_endpoint(world, req, id),
        ["webhook_endpoints", id] if delete => {
            let endpoint = world.fetch("webhook_endpoint", id)?;
            world.objects.remove(*id);
            Ok(json!({"id": endpoint["id"], "object": "webhook_endpoint", "deleted": true}))
        }

        ["events"] if get => {
            list(world, req, "event", |o, q| q.str_param("type").is_none_or(|t| o["type"] == t))
        }
        ["events", id] if get => world.fetch("event", id),

        ["test_helpers", "test_clocks"] if post => create_test_clock(world, req),
        ["test_helpers", "test_clocks"] if get => list(world, req, "test_helpers.test_clock", |_, _| true),
        ["test_helpers", "test_clocks", id] if get => world.fetch("test_helpers.test_clock", id),
        ["test_helpers", "test_clocks", id] if delete => delete_test_clock(world, id),
        ["test_helpers", "test_clocks", id, "advance"] if post => advance_test_clock(world, req, id),

        _ => Err(StripeError::no_such("route", &format!("/v1/{}", req.path.join("/"))).with(
            "message",
            format!("Unrecognized request URL ({}: /v1/{}).", req.method, req.path.join("/")),
        )),
    }
}

/// A Stripe list object of `data`, honouring `limit` (default 10, at most 100) and `starting_after`.
fn list_of(data: Vec<Value>, req: &Req) -> Value {
    let limit = req.params.int_param("limit").ok().flatten().unwrap_or(10).clamp(1, 100) as usize;
    let start = req
        .params
        .str_param("starting_after")
        .and_then(|after| data.iter().position(|o| o["id"] == after).map(|i| i + 1))
        .unwrap_or(0);
    let page: Vec<Value> = data.iter().skip(start).take(limit).cloned().collect();
    let has_more = data.len() > start + page.len();
    json!({"object": "list", "data": page, "has_more": has_more, "url": format!("/v1/{}", req.path.join("/"))})
}

fn list(world: &World, req: &Req, kind: &str, keep: impl Fn(&Value, &Value) -> bool) -> Result<Value> {
    let data: Vec<Value> = world.list_where(kind, |o| keep(o, &req.params));
    Ok(list_of(data, req))
}

/// Stripe's metadata rules: string values, merged on update, an empty value unsets a key.
fn merge_metadata(existing: &Value, params: &Value) -> Result<Value> {
    let mut out = existing.as_object().cloned().unwrap_or_default();
    match params.get("metadata") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => out.clear(),
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if k.len() > 40 {
                    return Err(StripeError::invalid("metadata", "keys are at most 40 characters"));
                }
                match v.as_str() {
                    Some("") => {
                        out.remove(k);
                    }
                    Some(s) if s.len() <= 500 => {
                        out.insert(k.clone(), json!(s));
                    }
                    _ => {
                        return Err(StripeError::invalid(
                            "metadata",
                            "values are strings of at most 500 characters",
                        ));
                    }
                }
            }
        }
        Some(_) => return Err(StripeError::invalid("metadata", "must be a hash")),
    }
    if out.len() > 50 {
        return Err(StripeError::invalid("metadata", "at most 50 keys"));
    }
    Ok(Value::Object(out))
}

fn now_for(world: &World, req: &Req) -> i64 {
    match req.params.str_param("customer") {
        Some(c) => world.customer_now(c),
        None => world.now(None),
    }
}

fn create_customer(world: &mut World, req: &Req) -> Result<Value> {
    // A payment method that cannot be attached refuses the whole call: no customer is left behind.
    if let Some(pm) = req.params.str_param("payment_method") {
        let card = billing::card_of(world, pm)
            .ok_or_else(|| StripeError::no_such_param("PaymentMethod", pm, "payment_method"))?;
        card.check_attach()?;
    }
    let clock = req.params.str_param("test_clock").map(str::to_owned);
    if let Some(c) = &clock {
        world
            .fetch("test_helpers.test_clock", c)
            .map_err(|_| StripeError::no_such_param("test_clock", c, "test_clock"))?;
    }
    let now = world.now(clock.as_deref());
    let metadata = merge_metadata(&json!({}), &req.params)?;
    let customer = world.create(
        "customer",
        "cus",
        json!({
            "created": now,
            "email": req.params.str_param("email"),
            "name": req.params.str_param("name"),
            "description": req.params.str_param("description"),
            "metadata": metadata,
            "test_clock": clock,
            "livemode": false,
        }),
    );
    let id = customer["id"].as_str().unwrap_or_default().to_owned();
    let mut customer = customer;
    if let Some(pm) = req.params.str_param("payment_method") {
        let attached =
            attach_payment_method(world, pm, &id).map_err(|e| in_param(e, pm, "payment_method"))?;
        if let Some(c) = world.get_mut(&id) {
            c["invoice_settings"]["default_payment_method"] = attached["id"].clone();
            customer = c.clone();
        }
    }
    world.emit("customer.created", &customer, None, Some((&req.request_id, req.idempotency_key.as_deref())));
    Ok(customer)
}

fn update_customer(world: &mut World, req: &Req, id: &str) -> Result<Value> {
    let before = world.fetch("customer", id)?;
    let mut after = before.clone();
    for field in ["email", "name", "description"] {
        if let Some(v) = req.params.str_param(field) {
            after[field] = if v.is_empty() { Value::Null } else { json!(v) };
        }
    }
    after["metadata"] = merge_metadata(&before["metadata"], &req.params)?;
    if let Some(pm) = req.params["invoice_settings"].str_param("default_payment_method") {
        let pm = resolve_payment_method(world, pm, id, "invoice_settings[default_payment_method]")?;
        after["invoice_settings"]["default_payment_method"] = json!(pm);
    }
    let previous = billing::previous_attributes(&before, &after);
    world.put(after.clone());
    world.emit(
        "customer.updated",
        &after,
        Some(previous),
        Some((&req.request_id, req.idempotency_key.as_deref())),
    );
    Ok(after)
}

fn create_product(world: &mut World, req: &Req) -> Result<Value> {
    let name = req.params.required_str("name")?.to_owned();
    let metadata = merge_metadata(&json!({}), &req.params)?;
    let now = world.now(None);
    let fields = json!({"name": name, "metadata": metadata, "created": now, "updated": now, "active": true,
                        "description": req.params.str_param("description"), "livemode": false});
    let product = match req.params.str_param("id") {
        Some(id) => {
            if world.get(id).is_some() {
                return Err(StripeError::invalid("id", "Product already exists.")
                    .with("code", "resource_already_exists"));
            }
            let mut p = crate::objects::complete("product", fields);
            p["id"] = json!(id);
            world.put(p)
        }
        None => world.create("product", "prod", fields),
    };
    world.emit("product.created", &product, None, None);
    Ok(product)
}

fn update_simple(world: &mut World, req: &Req, kind: &str, id: &str, fields: &[&str]) -> Result<Value> {
    let before = world.fetch(kind, id)?;
    let mut after = before.clone();
    for field in fields {
        if let Some(v) = req.params.str_param(field) {
            after[*field] = match v {
                "true" => json!(true),
                "false" => json!(false),
                "" => Value::Null,
                other => json!(other),
            };
        }
    }
    after["metadata"] = merge_metadata(&before["metadata"], &req.params)?;
    Ok(world.put(after))
}

fn create_price(world: &mut World, req: &Req) -> Result<Value> {
    let product = req.params.required_str("product")?.to_owned();
    world
        .fetch("product", &product)
        .map_err(|_| StripeError::no_such_param("product", &product, "product"))?;
    let unit_amount =
        req.params.int_param("unit_amount")?.ok_or_else(|| StripeError::missing("unit_amount"))?;
    if unit_amount < 0 {
        return Err(StripeError::invalid("unit_amount", "must be at least 0"));
    }
    let currency = req.params.required_str("currency")?.to_ascii_lowercase();
    let recurring = &req.params["recurring"];
    let interval = recurring.str_param("interval");
    if interval.is_some_and(|i| !matches!(i, "day" | "week" | "month" | "year")) {
        return Err(StripeError::invalid("recurring[interval]", "must be one of day, week, month or year"));
    }
    let lookup_key = req.params.str_param("lookup_key").map(str::to_owned);
    if let Some(key) = &lookup_key {
        let taken: Vec<String> = world
            .list("price")
            .into_iter()
            .filter(|p| p["lookup_key"] == key.as_str())
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect();
        if !taken.is_empty() && req.params.bool_param("transfer_lookup_key")? != Some(true) {
            return Err(StripeError::invalid(
                "lookup_key",
                "A price with this lookup_key already exists; pass transfer_lookup_key=true to move it.",
            ));
        }
        for id in taken {
            if let Some(p) = world.get_mut(&id) {
                p["lookup_key"] = Value::Null;
            }
        }
    }
    let metadata = merge_metadata(&json!({}), &req.params)?;
    let now = world.now(None);
    let price = world.create(
        "price",
        "price",
        json!({
            "active": true,
            "billing_scheme": "per_unit",
            "created": now,
            "currency": currency,
            "livemode": false,
            "lookup_key": lookup_key,
            "metadata": metadata,
            "nickname": req.params.str_param("nickname"),
            "product": product,
            "recurring": interval.map(|i| json!({
                "interval": i,
                "interval_count": recurring.int_param("interval_count").ok().flatten().unwrap_or(1),
                "meter": null,
                "usage_type": "licensed",
                "trial_period_days": null,
            })),
            "type": if interval.is_some() { "recurring" } else { "one_time" },
            "unit_amount": unit_amount,
            "unit_amount_decimal": unit_amount.to_string(),
        }),
    );
    world.emit("price.created", &price, None, None);
    Ok(price)
}

fn update_price(world: &mut World, req: &Req, id: &str) -> Result<Value> {
    if let Some(key) = req.params.str_param("lookup_key") {
        let others: Vec<String> = world
            .list("price")
            .into_iter()
            .filter(|p| p["lookup_key"] == key && p["id"] != id)
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect();
        if !others.is_empty() && req.params.bool_param("transfer_lookup_key")? != Some(true) {
            return Err(StripeError::invalid("lookup_key", "A price with this lookup_key already exists."));
        }
        for other in others {
            if let Some(p) = world.get_mut(&other) {
                p["lookup_key"] = Value::Null;
            }
        }
    }
    update_simple(world, req, "price", id, &["active", "nickname", "lookup_key"])
}

/// Attaches a test PaymentMethod (`pm_card_visa`, …) or an existing payment method to a
/// customer. Anything else (a card number, a `tok_…`) is no PaymentMethod: 404, as at Stripe.
pub fn attach_payment_method(world: &mut World, pm: &str, customer: &str) -> Result<Value> {
    world
        .fetch("customer", customer)
        .map_err(|_| StripeError::no_such_param("customer", customer, "customer"))?;
    let card = billing::card_of(world, pm).ok_or_else(|| StripeError::no_such("PaymentMethod", pm))?;
    card.check_attach()?;
    let now = world.customer_now(customer);
    let existing = world.get(pm).cloned();
    let method = match existing {
        Some(mut m) => {
            m["customer"] = json!(customer);
            world.put(m)
        }
        None => {
            let m = world.create(
                "payment_method",
                "pm",
                json!({
                    "type": "card",
                    "created": now,
                    "customer": customer,
                    "livemode": false,
                    "card": {"brand": "visa", "country": "US", "exp_month": 12, "exp_year": 2034, "funding": "credit", "last4": card.last4()},
                }),
            );
            if let Some(id) = m["id"].as_str() {
                world.cards.insert(id.to_owned(), card);
            }
            m
        }
    };
    world.emit("payment_method.attached", &method, None, None);
    Ok(method)
}

/// `POST /v1/payment_methods/{id}/detach`: no longer the customer's (nor its default).
fn detach_payment_method(world: &mut World, id: &str) -> Result<Value> {
    let mut method = world.fetch("payment_method", id)?;
    let Some(customer) = method["customer"].as_str().map(str::to_owned) else {
        return Err(StripeError::state(format!("The payment method {id} is not attached to a customer.")));
    };
    method["customer"] = Value::Null;
    let method = world.put(method);
    if let Some(c) =
        world.get_mut(&customer).filter(|c| c["invoice_settings"]["default_payment_method"] == id)
    {
        c["invoice_settings"]["default_payment_method"] = Value::Null;
    }
    world.emit("payment_method.detached", &method, Some(json!({"customer": customer})), None);
    Ok(method)
}

/// `POST /v1/invoices/{id}/void`: an open invoice is never collected.
fn void_invoice(world: &mut World, id: &str) -> Result<Value> {
    let invoice = world.fetch("invoice", id)?;
    if invoice["status"] != "open" {
        return Err(StripeError::state(format!(
            "You can only void open invoices; this one is {}.",
            invoice["status"].as_str().unwrap_or("closed")
        )));
    }
    let now = world.customer_now(invoice["customer"].as_str().unwrap_or_default());
    let mut voided = invoice;
    voided["status"] = json!("void");
    voided["amount_remaining"] = json!(0);
    voided["next_payment_attempt"] = Value::Null;
    voided["status_transitions"]["voided_at"] = json!(now);
    let voided = world.put(voided);
    world.emit("invoice.voided", &voided, Some(json!({"status": "open"})), None);
    world.emit("invoice.updated", &voided, Some(json!({"status": "open"})), None);
    Ok(voided)
}

/// `POST /v1/subscriptions/{id}/resume`: a paused subscription collects again.
fn resume_subscription(world: &mut World, id: &str) -> Result<Value> {
    let sub = world.fetch("subscription", id)?;
    if sub["status"] != "paused" {
        return Err(StripeError::state(format!(
            "Only paused subscriptions can be resumed; this one is {}.",
            sub["status"].as_str().unwrap_or("unknown")
        )));
    }
    billing::update_subscription(world, id, |s| {
        s["status"] = json!("active");
        s["pause_collection"] = Value::Null;
    });
    let resumed = world.fetch("subscription", id)?;
    world.emit("customer.subscription.resumed", &resumed, None, None);
    Ok(resumed)
}

/// A payment method the customer can be charged with, named by the body parameter `param`: one
/// of the customer's own by id, or a test PaymentMethod (`pm_card_…`) attached to the customer
/// first, as Stripe does in test mode.
fn resolve_payment_method(world: &mut World, pm: &str, customer: &str, param: &str) -> Result<String> {
    if let Some(existing) = world.get(pm).filter(|o| o["object"] == "payment_method") {
        if existing["customer"] != customer {
            return Err(StripeError::invalid(
                param,
                &format!(
                    "The customer does not have a payment method with the ID {pm}. The payment method must be \
                     attached to the customer."
                ),
            ));
        }
        return Ok(pm.to_owned());
    }
    let attached = attach_payment_method(world, pm, customer).map_err(|e| in_param(e, pm, param))?;
    Ok(attached["id"].as_str().unwrap_or_default().to_owned())
}

/// An unknown payment method named in a body parameter is a 400 naming that parameter (a 404 is
/// for ids in the path).
fn in_param(e: StripeError, pm: &str, param: &str) -> StripeError {
    if e.status == 404 { StripeError::no_such_param("PaymentMethod", pm, param) } else { e }
}

/// A new subscription's metadata and billing mode, from its create parameters (or Checkout's
/// `subscription_data`). Stripe's default mode is flexible since 2025-09-30.
fn new_subscription_fields(params: &Value) -> Result<(Value, String)> {
    let metadata = merge_metadata(&json!({}), params)?;
    let billing_mode = params["billing_mode"].str_param("type").unwrap_or("flexible").to_owned();
    Ok((metadata, billing_mode))
}

fn configured_price(world: &World, id: &str, param: &str) -> Result<Value> {
    match world.get(id) {
        Some(p) if p["object"] == "price" => {
            if p["recurring"].is_null() {
                return Err(StripeError::invalid(param, "a subscription needs a recurring price"));
            }
            Ok(p.clone())
        }
        _ => Err(StripeError::no_such_param("price", id, param)),
    }
}

fn create_checkout_session(world: &mut World, shared: &Shared, req: &Req) -> Result<Value> {
    if req.params.str_param("mode") != Some("subscription") {
        return Err(StripeError::invalid("mode", "the simulator models subscription mode only"));
    }
    let success_url = req.params.required_str("success_url")?.to_owned();
    let item = req
        .params
        .list_param("line_items")
        .first()
        .cloned()
        .ok_or_else(|| StripeError::missing("line_items"))?;
    let price = configured_price(world, item.required_str("price")?, "line_items[0][price]")?;
    let quantity = item.int_param("quantity")?.unwrap_or(1);
    let adjustable = &item["adjustable_quantity"];
    let (min, max) =
        (adjustable.int_param("minimum")?.unwrap_or(1), adjustable.int_param("maximum")?.unwrap_or(99));
    if !(1..=999_999).contains(&quantity) {
        return Err(StripeError::invalid("line_items[0][quantity]", "must be at least 1"));
    }
    let customer = req.params.str_param("customer").map(str::to_owned);
    if let Some(c) = &customer {
        world.fetch("customer", c).map_err(|_| StripeError::no_such_param("customer", c, "customer"))?;
    }
    let now = now_for(world, req);
    let amount = price["unit_amount"].as_i64().unwrap_or(0) * quantity;
    let metadata = merge_metadata(&json!({}), &req.params)?;
    let session = world.create(
        "checkout.session",
        "cs_test",
        json!({
            "mode": "subscription",
            "status": "open",
            "payment_status": "unpaid",
            "created": now,
            "expires_at": now + 24 * 3600,
            "customer": customer,
            "customer_email": req.params.str_param("customer_email"),
            "client_reference_id": req.params.str_param("client_reference_id"),
            "success_url": success_url,
            "cancel_url": req.params.str_param("cancel_url"),
            "currency": price["currency"],
            "amount_subtotal": amount,
            "amount_total": amount,
            "metadata": metadata,
            "livemode": false,
            "subscription": null,
            "invoice": null,
            "payment_intent": null,
        }),
    );
    let id = session["id"].as_str().unwrap_or_default().to_owned();
    let url = format!("{}/checkout/{id}", shared.base_url);
    let session = {
        let s = world.get_mut(&id).ok_or_else(|| StripeError::state("session vanished"))?;
        s["url"] = json!(url);
        s.clone()
    };
    let enabled = adjustable.bool_param("enabled")?.unwrap_or(false);
    let product_name = world
        .get(price["product"].as_str().unwrap_or_default())
        .and_then(|p| p["name"].as_str().map(str::to_owned));
    let line_item = json!({
        "id": world.new_id("li"), "object": "item", "amount_discount": 0, "amount_subtotal": amount,
        "amount_tax": 0, "amount_total": amount, "currency": price["currency"],
        "description": product_name.map_or(price["nickname"].clone(), Value::from), "metadata": {},
        "price": price, "quantity": quantity,
        "adjustable_quantity": if enabled { json!({"enabled": true, "maximum": max, "minimum": min}) } else { Value::Null },
    });
    world.checkout_items.insert(
        id,
        json!({
            "line_item": line_item,
            "price": price["id"],
            "quantity": quantity,
            "adjustable": {"enabled": enabled, "minimum": min, "maximum": max},
            "subscription_data": req.params["subscription_data"],
        }),
    );
    Ok(session)
}

fn expire_checkout_session(world: &mut World, id: &str) -> Result<Value> {
    let session = world.fetch("checkout.session", id)?;
    if session["status"] != "open" {
        return Err(StripeError::state(format!(
            "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
            session["status"].as_str().unwrap_or("unknown")
        )));
    }
    let mut expired = session;
    expired["status"] = json!("expired");
    expired["url"] = Value::Null;
    world.put(expired.clone());
    world.emit("checkout.session.expired", &expired, None, None);
    Ok(expired)
}

/// Pays a Checkout Session with a test card, as the hosted page does.
pub fn complete_checkout(
    world: &mut World,
    shared: &Shared,
    id: &str,
    payment_method: &str,
    quantity: Option<i64>,
) -> Result<Value> {
    let session = world.fetch("checkout.session", id)?;
    if session["status"] != "open" {
        return Err(StripeError::state(format!(
            "This Checkout Session is {}.",
            session["status"].as_str().unwrap_or("closed")
        )));
    }
    let card = Card::from_token(payment_method)
        .ok_or_else(|| StripeError::no_such_param("PaymentMethod", payment_method, "payment_method"))?;
    let items = world.checkout_items.get(id).cloned().unwrap_or(Value::Null);
    let quantity = match quantity {
        Some(q) => {
            let adj = &items["adjustable"];
            let ok = adj["enabled"] == true
                && q >= adj["minimum"].as_i64().unwrap_or(1)
                && q <= adj["maximum"].as_i64().unwrap_or(99);
            if !ok && Some(q) != items["quantity"].as_i64() {
                return Err(StripeError::invalid("quantity", "outside the session's adjustable quantity"));
            }
            q
        }
        None => items["quantity"].as_i64().unwrap_or(1),
    };
    // A declined card leaves the session open and creates nothing (basil Checkout).
    if card == Card::Declined || card == Card::AttachThenDecline {
        return Err(StripeError::card_declined("generic_decline"));
    }
    let customer = match session["customer"].as_str() {
        Some(c) => c.to_owned(),
        None => {
            let now = world.now(None);
            let c = world.create(
                "customer",
                "cus",
                json!({"created": now, "email": session["customer_email"], "livemode": false}),
            );
            world.emit("customer.created", &c, None, None);
            c["id"].as_str().unwrap_or_default().to_owned()
        }
    };
    let pm = attach_payment_method(world, payment_method, &customer)?;
    if let Some(c) = world.get_mut(&customer) {
        c["invoice_settings"]["default_payment_method"] = pm["id"].clone();
    }
    let price = configured_price(world, items["price"].as_str().unwrap_or_default(), "price")?;
    let (metadata, billing_mode) = new_subscription_fields(&items["subscription_data"])?;
    let sub = billing::create_subscription(
        world,
        &shared.settings.billing,
        NewSubscription {
            customer: &customer,
            price,
            quantity,
            default_payment_method: pm["id"].as_str().map(str::to_owned),
            metadata,
            billing_mode: &billing_mode,
            via_checkout: true,
        },
    )?;
    let mut done = world.fetch("checkout.session", id)?;
    done["status"] = json!("complete");
    done["payment_status"] = json!("paid");
    done["customer"] = json!(customer);
    done["subscription"] = sub["id"].clone();
    done["invoice"] = sub["latest_invoice"].clone();
    done["url"] = Value::Null;
    done["amount_total"] =
        json!(sub["items"]["data"][0]["price"]["unit_amount"].as_i64().unwrap_or(0) * quantity);
    done["amount_subtotal"] = done["amount_total"].clone();
    world.put(done.clone());
    world.emit("checkout.session.completed", &done, None, None);
    Ok(done)
}

fn complete_checkout_session(world: &mut World, shared: &Shared, req: &Req, id: &str) -> Result<Value> {
    let pm = req.params.str_param("payment_method").unwrap_or("pm_card_visa").to_owned();
    let quantity = req.params.int_param("quantity")?;
    complete_checkout(world, shared, id, &pm, quantity)
}

fn create_subscription(world: &mut World, shared: &Shared, req: &Req) -> Result<Value> {
    let customer = req.params.required_str("customer")?.to_owned();
    world
        .fetch("customer", &customer)
        .map_err(|_| StripeError::no_such_param("customer", &customer, "customer"))?;
    let items = req.params.list_param("items");
    let [item] = items else {
        return Err(StripeError::invalid(
            "items",
            "the simulator models subscriptions with exactly one item",
        ));
    };
    let price = configured_price(world, item.required_str("price")?, "items[0][price]")?;
    let quantity = item.int_param("quantity")?.unwrap_or(1);
    if quantity < 1 {
        return Err(StripeError::invalid("items[0][quantity]", "must be at least 1"));
    }
    let default_pm = match req.params.str_param("default_payment_method") {
        Some(pm) => Some(resolve_payment_method(world, pm, &customer, "default_payment_method")?),
        None => None,
    };
    let (metadata, billing_mode) = new_subscription_fields(&req.params)?;
    let payment_behavior = req.params.str_param("payment_behavior").unwrap_or("allow_incomplete");
    let sub = billing::create_subscription(
        world,
        &shared.settings.billing,
        NewSubscription {
            customer: &customer,
            price,
            quantity,
            default_payment_method: default_pm,
            metadata,
            billing_mode: &billing_mode,
            via_checkout: false,
        },
    )?;
    if payment_behavior == "error_if_incomplete" && sub["status"] == "incomplete" {
        return Err(StripeError::card_declined("generic_decline").with("subscription", sub["id"].clone()));
    }
    Ok(sub)
}

/// The price and quantity a subscription update (or its preview) asks for; quantity falls back
/// to 1 when the price changes without one, as Stripe does.
fn requested_item(world: &World, sub: &Value, items: &[Value], param: &str) -> Result<Option<(Value, i64)>> {
    let Some(item) = items.first() else { return Ok(None) };
    let current = &sub["items"]["data"][0];
    if let Some(id) = item.str_param("id") {
        if current["id"] != id {
            return Err(StripeError::invalid(&format!("{param}[0][id]"), "not an item of this subscription"));
        }
    } else {
        return Err(StripeError::invalid(
            &format!("{param}[0][id]"),
            "the simulator models single-item subscriptions: pass the item id",
        ));
    }
    let price = match item.str_param("price") {
        Some(p) => configured_price(world, p, &format!("{param}[0][price]"))?,
        None => current["price"].clone(),
    };
    let price_changed = price["id"] != current["price"]["id"];
    let quantity = match item.int_param("quantity")? {
        Some(q) if q >= 1 => q,
        Some(_) => return Err(StripeError::invalid(&format!("{param}[0][quantity]"), "must be at least 1")),
        None if price_changed => 1,
        None => current["quantity"].as_i64().unwrap_or(1),
    };
    Ok(Some((price, quantity)))
}

fn proration_time(sub: &Value, requested: Option<i64>, now: i64, param: &str) -> Result<i64> {
    let item = &sub["items"]["data"][0];
    let (start, end) = (
        item["current_period_start"].as_i64().unwrap_or(now),
        item["current_period_end"].as_i64().unwrap_or(now),
    );
    let at = requested.unwrap_or(now);
    if at < start || at > end {
        return Err(StripeError::invalid(param, "must be within the current subscription period"));
    }
    Ok(at)
}

fn update_subscription(world: &mut World, shared: &Shared, req: &Req, id: &str) -> Result<Value> {
    let sub = world.fetch("subscription", id)?;
    if matches!(sub["status"].as_str(), Some("canceled" | "incomplete_expired")) {
        return Err(StripeError::state(
            "A canceled subscription can only update its metadata and cancellation_details.",
        ));
    }
    let customer = sub["customer"].as_str().unwrap_or_default().to_owned();
    let now = world.customer_now(&customer);
    let behavior = req.params.str_param("proration_behavior").unwrap_or("create_prorations");
    if !matches!(behavior, "create_prorations" | "always_invoice" | "none") {
        return Err(StripeError::invalid(
            "proration_behavior",
            "must be one of create_prorations, always_invoice or none",
        ));
    }
    let payment_behavior = req.params.str_param("payment_behavior").unwrap_or("allow_incomplete");
    let change = requested_item(world, &sub, req.params.list_param("items"), "items")?;
    let metadata = merge_metadata(&sub["metadata"], &req.params)?;
    let cancel_at_period_end = req.params.bool_param("cancel_at_period_end")?;
    // A test token (`pm_card_…`) is attached to the customer first, as Stripe does in test mode.
    let default_pm = match req.params.str_param("default_payment_method") {
        Some(pm) => Some(resolve_payment_method(world, pm, &customer, "default_payment_method")?),
        None => None,
    };

    let mut applied_change = None;
    if let Some((price, quantity)) = change {
        let current = &sub["items"]["data"][0];
        let changed = price["id"] != current["price"]["id"] || Some(quantity) != current["quantity"].as_i64();
        if changed {
            let at = proration_time(&sub, req.params.int_param("proration_date")?, now, "proration_date")?;
            applied_change = Some((price, quantity, at));
        }
    }

    if let Some((price, quantity, at)) = applied_change.clone() {
        let lines = if behavior == "none" {
            Vec::new()
        } else {
            billing::proration_lines(world, &sub, &price, quantity, at)
        };
        match behavior {
            "always_invoice" => {
                let invoice = billing::new_invoice(world, &sub, "subscription_update", lines, now);
                let invoice_id = invoice["id"].as_str().unwrap_or_default().to_owned();
                crate::api::finalize_now(world, &invoice_id, now);
                let pending = payment_behavior == "pending_if_incomplete";
                if pending {
                    world.invoice_state.entry(invoice_id.clone()).or_default().pending_update =
                        Some(json!({"subscription": id, "price": price, "quantity": quantity}));
                }
                if payment_behavior == "error_if_incomplete" {
                    // Charge first; on failure nothing is applied and the invoice is voided.
                    let outcome =
                        billing::attempt_payment(world, &shared.settings.billing, &invoice_id, true, now);
                    if outcome != crate::cards::ChargeOutcome::Succeeded {
                        if let Some(inv) = world.get_mut(&invoice_id) {
                            inv["status"] = json!("void");
                        }
                        return Err(StripeError::card_declined("generic_decline"));
                    }
                    apply_item(world, id, &price, quantity, Some(&invoice_id));
                } else if pending {
                    let outcome =
                        billing::attempt_payment(world, &shared.settings.billing, &invoice_id, true, now);
                    if outcome != crate::cards::ChargeOutcome::Succeeded {
                        let expires = now + 23 * 3600;
                        let mut s = world.fetch("subscription", id)?;
                        s["pending_update"] = json!({
                            "expires_at": expires,
                            "subscription_items": [{"id": s["items"]["data"][0]["id"], "price": price, "quantity": quantity}],
                            "billing_cycle_anchor": null,
                            "trial_end": null,
                            "trial_from_plan": null,
                        });
                        s["latest_invoice"] = json!(invoice_id);
                        world.put(s);
                    }
                    // On success the pending update was applied by the payment.
                    if let Some(s) = world.get_mut(id) {
                        s["latest_invoice"] = json!(invoice_id);
                    }
                } else {
                    apply_item(world, id, &price, quantity, Some(&invoice_id));
                    billing::attempt_payment(world, &shared.settings.billing, &invoice_id, true, now);
                }
            }
            "create_prorations" => {
                for l in lines {
                    let ii = world.create(
                        "invoiceitem",
                        "ii",
                        json!({"amount": l["amount"], "currency": l["currency"], "customer": customer, "date": now,
                               "description": l["description"], "period": l["period"], "proration": true,
                               "quantity": l["quantity"], "subscription": id, "invoice": null, "livemode": false}),
                    );
                    if let Some(ii_id) = ii["id"].as_str() {
                        world.pending_lines.insert(ii_id.to_owned(), l);
                    }
                    world.emit("invoiceitem.created", &ii, None, None);
                }
                apply_item(world, id, &price, quantity, None);
            }
            _ => apply_item(world, id, &price, quantity, None),
        }
    }

    let updated = billing::update_subscription(world, id, |s| {
        s["metadata"] = metadata.clone();
        if let Some(pm) = &default_pm {
            s["default_payment_method"] = json!(pm);
        }
        match cancel_at_period_end {
            Some(true) => {
                s["cancel_at_period_end"] = json!(true);
                s["cancel_at"] = s["items"]["data"][0]["current_period_end"].clone();
                s["canceled_at"] = json!(now);
                s["cancellation_details"]["reason"] = json!("cancellation_requested");
            }
            Some(false) => {
                s["cancel_at_period_end"] = json!(false);
                s["cancel_at"] = Value::Null;
                s["canceled_at"] = Value::Null;
                s["cancellation_details"]["reason"] = Value::Null;
            }
            None => {}
        }
    });
    crate::entitlements::refresh(world, &customer);
    Ok(updated)
}

/// Puts the new price and quantity on the subscription's single item.
fn apply_item(world: &mut World, sub_id: &str, price: &Value, quantity: i64, invoice: Option<&str>) {
    billing::update_subscription(world, sub_id, |s| {
        billing::set_item(s, price, quantity);
        if let Some(i) = invoice {
            s["latest_invoice"] = json!(i);
        }
    });
}

pub fn finalize_now(world: &mut World, invoice_id: &str, now: i64) {
    crate::billing::finalize(world, invoice_id, now);
}

/// `POST /v1/invoices/create_preview`: the invoice a change would produce, priced exactly as the
/// update with the same `proration_date` will be.
fn create_preview(world: &mut World, req: &Req) -> Result<Value> {
    let sub_id = req.params.required_str("subscription")?.to_owned();
    let sub = world
        .fetch("subscription", &sub_id)
        .map_err(|_| StripeError::no_such_param("subscription", &sub_id, "subscription"))?;
    let details = &req.params["subscription_details"];
    let now = world.customer_now(sub["customer"].as_str().unwrap_or_default());
    let behavior = details.str_param("proration_behavior").unwrap_or("create_prorations");
    if behavior == "none" {
        return Err(StripeError::invalid(
            "subscription_details[proration_behavior]",
            "a preview of prorations cannot use none",
        ));
    }
    let (price, quantity) =
        requested_item(world, &sub, details.list_param("items"), "subscription_details[items]")?
            .ok_or_else(|| StripeError::missing("subscription_details[items]"))?;
    let at = proration_time(
        &sub,
        details.int_param("proration_date")?,
        now,
        "subscription_details[proration_date]",
    )?;
    let mut lines = billing::proration_lines(world, &sub, &price, quantity, at);
    if behavior == "create_prorations" {
        // The upcoming renewal: these prorations and the next period at the new price.
        let item = &sub["items"]["data"][0];
        let start = item["current_period_end"].as_i64().unwrap_or(now);
        let interval = price["recurring"]["interval"].as_str().unwrap_or("month").to_owned();
        let end = billing::period_end(start, &interval, 1);
        lines.push(billing::priced_period_line(world, &sub, &price, quantity, start, end));
    }
    let total: i64 = lines.iter().filter_map(|l| l["amount"].as_i64()).sum();
    // The customer's credit applies to what the change will charge, so the preview is the charge.
    let (starting_balance, amount_due, ending_balance) =
        billing::apply_balance(world, sub["customer"].as_str().unwrap_or_default(), total);
    let id = format!("upcoming_{}", world.new_id("in"));
    let count = lines.len();
    let mut invoice = crate::objects::complete(
        "invoice",
        json!({
            "id": id,
            "object": "invoice",
            "amount_due": amount_due,
            "amount_remaining": amount_due,
            "starting_balance": starting_balance,
            "ending_balance": ending_balance,
            "billing_reason": "upcoming",
            "created": now,
            "currency": price["currency"],
            "customer": sub["customer"],
            "livemode": false,
            "parent": {
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {"metadata": sub["metadata"], "subscription": sub_id, "subscription_proration_date": at},
            },
            "period_start": at,
            "period_end": at,
            "status": "draft",
            "subtotal": total,
            "total": total,
        }),
    );
    invoice["lines"] = json!({"object": "list", "data": lines, "has_more": false, "total_count": count, "url": format!("/v1/invoices/{id}/lines")});
    Ok(invoice)
}

fn pay_invoice(world: &mut World, shared: &Shared, req: &Req, id: &str) -> Result<Value> {
    let invoice = world.fetch("invoice", id)?;
    if invoice["status"] != "open" {
        return Err(StripeError::state(format!(
            "Invoice is already {}.",
            invoice["status"].as_str().unwrap_or("closed")
        )));
    }
    let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
    if let Some(pm) = req.params.str_param("payment_method") {
        let attached = resolve_payment_method(world, pm, &customer, "payment_method")?;
        let sub_id =
            invoice["parent"]["subscription_details"]["subscription"].as_str().unwrap_or_default().to_owned();
        if let Some(s) = world.get_mut(&sub_id) {
            s["default_payment_method"] = json!(attached);
        }
    }
    let now = world.customer_now(&customer);
    let outcome = billing::attempt_payment(world, &shared.settings.billing, id, false, now);
    let after = world.fetch("invoice", id)?;
    match outcome {
        crate::cards::ChargeOutcome::Succeeded => Ok(after),
        crate::cards::ChargeOutcome::Declined => Err(StripeError::card_declined("generic_decline")),
        crate::cards::ChargeOutcome::RequiresAction => {
            Err(StripeError::card_declined("authentication_required")
                .with("code", "invoice_payment_intent_requires_action"))
        }
    }
}

/// Completes (or fails) the authentication a payment intent waits for.
fn authenticate(world: &mut World, shared: &Shared, req: &Req, id: &str) -> Result<Value> {
    let succeed = match req.params.str_param("outcome").unwrap_or("succeed") {
        "succeed" => true,
        "fail" => false,
        _ => return Err(StripeError::invalid("outcome", "must be succeed or fail")),
    };
    authenticate_payment(world, &shared.settings.billing, id, succeed)
}

/// The customer answers the 3-D Secure challenge of payment intent `id` (the test helper and
/// the hosted invoice page both end here). Passed: the invoice it pays is charged again, now
/// authenticated, and the card is set up for later off-session payments. Failed: the intent
/// waits for another payment method.
pub fn authenticate_payment(
    world: &mut World,
    settings: &billing::Settings,
    id: &str,
    succeed: bool,
) -> Result<Value> {
    let pi = world.fetch("payment_intent", id)?;
    if pi["status"] != "requires_action" {
        return Err(StripeError::state("This PaymentIntent does not require action."));
    }
    let customer = pi["customer"].as_str().unwrap_or_default().to_owned();
    let invoice = world
        .objects
        .values()
        .find(|o| o["object"] == "invoice" && o["payments"]["data"][0]["payment"]["payment_intent"] == id)
        .and_then(|o| o["id"].as_str().map(str::to_owned));
    if succeed {
        if let Some(pm) = pi["payment_method"].as_str() {
            world.set_up.insert(pm.to_owned());
        }
        if let Some(invoice) = invoice {
            world.authenticated.insert(invoice.clone());
            let now = world.customer_now(&customer);
            billing::attempt_payment(world, settings, &invoice, false, now);
        }
        return world.fetch("payment_intent", id);
    }
    let mut failed = pi;
    failed["status"] = json!("requires_payment_method");
    failed["next_action"] = Value::Null;
    failed["last_payment_error"] = json!({"type": "card_error", "code": "payment_intent_authentication_failure",
        "message": "The provided PaymentMethod has failed authentication."});
    world.put(failed.clone());
    world.emit("payment_intent.payment_failed", &failed, None, None);
    Ok(failed)
}

fn create_portal_configuration(world: &mut World, req: &Req) -> Result<Value> {
    let now = world.now(None);
    let mut features = req.params["features"].clone();
    normalise_form_types(&mut features);
    check_portal_features(&features)?;
    default_adjustable_quantity(&mut features);
    let metadata = merge_metadata(&json!({}), &req.params)?;
    let mut business_profile =
        json!({"headline": null, "privacy_policy_url": null, "terms_of_service_url": null});
    if req.params["business_profile"].is_object() {
        crate::objects::merge(&mut business_profile, req.params["business_profile"].clone());
    }
    let config = world.create(
        "billing_portal.configuration",
        "bpc",
        json!({
            "active": true,
            "created": now,
            "updated": now,
            "default_return_url": req.params.str_param("default_return_url"),
            "features": features,
            "is_default": world.list("billing_portal.configuration").is_empty(),
            "livemode": false,
            "metadata": metadata,
            "name": req.params.str_param("name"),
            "business_profile": business_profile,
        }),
    );
    world.emit("billing_portal.configuration.created", &config, None, None);
    Ok(config)
}

fn update_portal_configuration(world: &mut World, req: &Req, id: &str) -> Result<Value> {
    let mut config = world.fetch("billing_portal.configuration", id)?;
    if req.params.get("features").is_some() {
        let mut features = req.params["features"].clone();
        normalise_form_types(&mut features);
        check_portal_features(&features)?;
        crate::objects::merge(&mut config["features"], features);
    }
    if let Some(active) = req.params.bool_param("active")? {
        config["active"] = json!(active);
    }
    config["metadata"] = merge_metadata(&config["metadata"], &req.params)?;
    config["updated"] = json!(world.now(None));
    Ok(world.put(config))
}

/// Stripe's rules on portal feature values the simulator knows: a cancellation can prorate
/// (`create_prorations`) or not (`none`), never invoice at once.
fn check_portal_features(features: &Value) -> Result<()> {
    let cancel = &features["subscription_cancel"]["proration_behavior"];
    match cancel.as_str() {
        None | Some("none" | "create_prorations") => Ok(()),
        Some(other) => Err(StripeError::invalid(
            "features[subscription_cancel][proration_behavior]",
            &format!("must be one of none or create_prorations, not {other}"),
        )),
    }
}

/// Each product a portal lets customers switch to has `adjustable_quantity`, off unless given.
fn default_adjustable_quantity(features: &mut Value) {
    if let Some(products) = features["subscription_update"]["products"].as_array_mut() {
        for product in products {
            let mut adjustable = json!({"enabled": false, "maximum": null, "minimum": 1});
            if product["adjustable_quantity"].is_object() {
                crate::objects::merge(&mut adjustable, product["adjustable_quantity"].clone());
            }
            product["adjustable_quantity"] = adjustable;
        }
    }
}

/// Form values arrive as strings; portal features hold booleans and integers.
fn normalise_form_types(value: &mut Value) {
    match value {
        Value::String(s) if s == "true" => *value = json!(true),
        Value::String(s) if s == "false" => *value = json!(false),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() < 12 => {
            *value = json!(s.parse::<i64>().unwrap_or(0));
        }
        Value::Object(map) => map.values_mut().for_each(normalise_form_types),
        Value::Array(items) => items.iter_mut().for_each(normalise_form_types),
        _ => {}
    }
}

fn create_portal_session(world: &mut World, shared: &Shared, req: &Req) -> Result<Value> {
    let customer = req.params.required_str("customer")?.to_owned();
    world
        .fetch("customer", &customer)
        .map_err(|_| StripeError::no_such_param("customer", &customer, "customer"))?;
    let configuration = match req.params.str_param("configuration") {
        Some(c) => world
            .fetch("billing_portal.configuration", c)
            .map_err(|_| StripeError::no_such_param("configuration", c, "configuration"))?,
        None => world
            .list("billing_portal.configuration")
            .into_iter()
            .find(|c| c["is_default"] == true)
            .ok_or_else(|| StripeError::state("No default portal configuration exists; create one first."))?,
    };
    let flow = portal_flow(world, &customer, &req.params["flow_data"])?;
    let now = world.customer_now(&customer);
    let session = world.create(
        "billing_portal.session",
        "bps",
        json!({"configuration": configuration["id"], "created": now, "customer": customer, "livemode": false,
               "flow": flow,
               "return_url": req.params.str_param("return_url").or(configuration["default_return_url"].as_str())}),
    );
    let id = session["id"].as_str().unwrap_or_default().to_owned();
    let mut session = session;
    session["url"] = json!(format!("{}/portal/{id}", shared.base_url));
    Ok(world.put(session))
}

/// A portal session's deep link (`flow_data`): straight to updating the payment method, or to
/// cancelling one of the customer's subscriptions. `null` without one.
fn portal_flow(world: &World, customer: &str, flow: &Value) -> Result<Value> {
    if flow.is_null() {
        return Ok(Value::Null);
    }
    let kind = flow["type"].as_str().ok_or_else(|| StripeError::missing("flow_data[type]"))?;
    let after = json!({"type": flow["after_completion"]["type"].as_str().unwrap_or("portal_homepage")});
    match kind {
        "payment_method_update" => Ok(json!({
            "type": kind, "after_completion": after, "payment_method_update": {},
            "subscription_cancel": null, "subscription_update": null, "subscription_update_confirm": null,
        })),
        "subscription_cancel" => {
            let sub = flow["subscription_cancel"]["subscription"]
                .as_str()
                .ok_or_else(|| StripeError::missing("flow_data[subscription_cancel][subscription]"))?;
            let found = world.fetch("subscription", sub)?;
            if found["customer"] != customer {
                return Err(StripeError::invalid(
                    "flow_data[subscription_cancel][subscription]",
                    "the subscription belongs to another customer",
                ));
            }
            Ok(json!({
                "type": kind, "after_completion": after, "payment_method_update": null,
                "subscription_cancel": {"subscription": sub, "retention": null},
                "subscription_update": null, "subscription_update_confirm": null,
            }))
        }
        other => Err(StripeError::invalid(
            "flow_data[type]",
            &format!("{other} is not a flow the simulator offers"),
        )),
    }
}

fn create_feature(world: &mut World, req: &Req) -> Result<Value> {
    let name = req.params.required_str("name")?.to_owned();
    let lookup_key = req.params.required_str("lookup_key")?.to_owned();
    if world.list("entitlements.feature").iter().any(|f| f["lookup_key"] == lookup_key.as_str()) {
        return Err(StripeError::invalid("lookup_key", "A feature with this lookup_key already exists."));
    }
    let metadata = merge_metadata(&json!({}), &req.params)?;
    let now = world.now(None);
    Ok(world.create("entitlements.feature", "feat", json!({"name": name, "lookup_key": lookup_key, "active": true, "metadata": metadata, "livemode": false, "created": now})))
}

fn attach_feature(world: &mut World, req: &Req, product: &str) -> Result<Value> {
    world.fetch("product", product)?;
    let feature_id = req.params.required_str("entitlement_feature")?.to_owned();
    let feature = world
        .fetch("entitlements.feature", &feature_id)
        .map_err(|_| StripeError::no_such_param("feature", &feature_id, "entitlement_feature"))?;
    let now = world.now(None);
    let pf = world.create(
        "product_feature",
        "prodft",
        json!({"entitlement_feature": feature, "livemode": false, "created": now}),
    );
    if let Some(id) = pf["id"].as_str() {
        world.product_of_feature.insert(id.to_owned(), product.to_owned());
    }
    let customers: Vec<String> =
        world.list("customer").iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect();
    for c in customers {
        crate::entitlements::refresh(world, &c);
    }
    Ok(pf)
}

/// `DELETE /v1/products/{id}/features/{id}`: the product no longer grants the feature.
fn detach_feature(world: &mut World, product: &str, attachment: &str) -> Result<Value> {
    world.fetch("product", product)?;
    if world.product_of_feature.get(attachment).is_none_or(|p| p != product) {
        return Err(StripeError::no_such("product_feature", attachment));
    }
    world.product_of_feature.remove(attachment);
    world.objects.remove(attachment);
    let customers: Vec<String> =
        world.list("customer").iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect();
    for c in customers {
        crate::entitlements::refresh(world, &c);
    }
    Ok(json!({"id": attachment, "object": "product_feature", "deleted": true}))
}

fn create_webhook_endpoint(world: &mut World, req: &Req) -> Result<Value> {
    let url = req.params.required_str("url")?.to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(StripeError::invalid("url", "must be an http(s) URL"));
    }
    let events: Vec<Value> = req.params.list_param("enabled_events").to_vec();
    if events.is_empty() {
        return Err(StripeError::missing("enabled_events"));
    }
    if let Some(version) = req.params.str_param("api_version") {
        // An endpoint's version decides its events' shape: only versions Stripe knows.
        crate::world::check_version(version).map_err(|_| {
            StripeError::invalid("api_version", &format!("{version} is not a Stripe API version"))
        })?;
    }
    let metadata = merge_metadata(&json!({}), &req.params)?;
    let now = world.now(None);
    let endpoint = world.create(
        "webhook_endpoint",
        "we",
        json!({"url": url, "enabled_events": events, "api_version": req.params.str_param("api_version"),
               "description": req.params.str_param("description"), "status": "enabled", "metadata": metadata,
               "created": now, "livemode": false}),
    );
    let id = endpoint["id"].as_str().unwrap_or_default().to_owned();
    let secret = format!("whsec_fake_{}", world.new_id("sim").trim_start_matches("sim_"));
    world.secrets.insert(id, secret.clone());
    let mut shown = endpoint;
    // Stripe shows the signing secret only in the creation response.
    shown["secret"] = json!(secret);
    Ok(shown)
}

fn update_webhook_endpoint(world: &mut World, req: &Req, id: &str) -> Result<Value> {
    let mut endpoint = world.fetch("webhook_endpoint", id)?;
    if let Some(url) = req.params.str_param("url") {
        endpoint["url"] = json!(url);
    }
    let events = req.params.list_param("enabled_events");
    if !events.is_empty() {
        endpoint["enabled_events"] = json!(events);
    }
    if let Some(disabled) = req.params.bool_param("disabled")? {
        endpoint["status"] = json!(if disabled { "disabled" } else { "enabled" });
    }
    endpoint["metadata"] = merge_metadata(&endpoint["metadata"], &req.params)?;
    Ok(world.put(endpoint))
}

fn create_test_clock(world: &mut World, req: &Req) -> Result<Value> {
    let frozen = req.params.int_param("frozen_time")?.ok_or_else(|| StripeError::missing("frozen_time"))?;
    let now = world.now(None);
    let clock = world.create(
        "test_helpers.test_clock",
        "clock",
        json!({"created": now, "deletes_after": now + 30 * 86_400, "frozen_time": frozen, "livemode": false,
               "name": req.params.str_param("name"), "status": "ready", "status_details": {}}),
    );
    world.emit("test_helpers.test_clock.created", &clock, None, None);
    Ok(clock)
}

fn delete_test_clock(world: &mut World, id: &str) -> Result<Value> {
    world.fetch("test_helpers.test_clock", id)?;
    let customers: Vec<String> = world
        .list("customer")
        .into_iter()
        .filter(|c| c["test_clock"] == id)
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    for customer in &customers {
        let subs: Vec<String> = world
            .list("subscription")
            .into_iter()
            .filter(|s| s["customer"] == customer.as_str() && s["status"] != "canceled")
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        let now = world.customer_now(customer);
        for s in subs {
            billing::end_subscription(world, &s, now, "cancellation_requested");
        }
        world.objects.remove(customer);
    }
    world.objects.remove(id);
    Ok(json!({"id": id, "object": "test_helpers.test_clock", "deleted": true}))
}

/// Moves a clock forward and runs, in order, everything that happens to its customers on the way.
/// Stripe advances asynchronously; the simulator finishes within the request but reports the
/// states Stripe reports (`advancing`, then `ready` with `test_helpers.test_clock.ready`).
/// `POST …/advance`: answers `advancing` at once; the clock reaches its target (renewals,
/// retries and their events on the way) in the background, then turns `ready`. A client must
/// wait for `ready`, as on Stripe.
fn advance_test_clock(world: &mut World, req: &Req, id: &str) -> Result<Value> {
    let clock = world.fetch("test_helpers.test_clock", id)?;
    let target = req.params.int_param("frozen_time")?.ok_or_else(|| StripeError::missing("frozen_time"))?;
    if clock["status"] == "advancing" {
        return Err(StripeError::state(format!(
            "The test clock {id} is advancing; wait until it is ready before advancing it again."
        )));
    }
    let current = clock["frozen_time"].as_i64().unwrap_or(0);
    if target <= current {
        return Err(StripeError::invalid(
            "frozen_time",
            "must be after the test clock's current frozen time",
        ));
    }
    let mut advancing = clock;
    advancing["status"] = json!("advancing");
    advancing["status_details"] = json!({"advancing": {"target_frozen_time": target}});
    world.put(advancing.clone());
    world.emit("test_helpers.test_clock.advancing", &advancing, None, None);
    world.pending_advances.push((id.to_owned(), target));
    Ok(advancing)
}

/// Moves one advancing clock to its target and marks it `ready` (the advancer calls this).
pub fn finish_advance(world: &mut World, settings: &crate::billing::Settings, id: &str, target: i64) {
    let customers: Vec<String> = world
        .list("customer")
        .into_iter()
        .filter(|c| c["test_clock"] == id)
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    let clock_id = id.to_owned();
    billing::run_until(world, settings, &customers, target, |w, t| {
        if let Some(c) = w.get_mut(&clock_id) {
            c["frozen_time"] = json!(t);
        }
    });
    let Some(ready) = world.get_mut(id) else { return };
    ready["frozen_time"] = json!(target);
    ready["status"] = json!("ready");
    ready["status_details"] = json!({});
    let ready = ready.clone();
    world.emit("test_helpers.test_clock.ready", &ready, None, None);
}
