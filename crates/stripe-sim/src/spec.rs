//! Owns what each endpoint accepts, as Stripe documents it: its parameters (top level, and one
//! level inside the containers where a misspelling matters: `line_items[]`, `items[]`,
//! `subscription_data`, `subscription_details`, `flow_data`) and the paths `expand[]` may name.
//! Anything else is refused as Stripe refuses it: 400 `parameter_unknown` with the parameter, or
//! 400 for an expansion the object does not offer (including `latest_invoice.payment_intent`,
//! removed in 2025-03-31.basil). Expansions follow the object: a path may go on into what it
//! expands (`latest_invoice.payments`), and a list's start with `data.`.

use serde_json::Value;

use crate::error::StripeError;

/// Accepted by every list endpoint.
const PAGING: &[&str] = &["limit", "starting_after", "ending_before"];

/// One endpoint's parameters: `name`, or `name.sub` / `name[].sub` to also check one level
/// inside `name`; the kind of object it answers with (what `expand[]` may name); and whether it
/// answers with a list of them (then every expansion starts with `data.`, as at Stripe).
pub struct Spec {
    pub params: &'static [&'static str],
    pub object: &'static str,
    pub list: bool,
}

const fn spec(params: &'static [&'static str], object: &'static str) -> Spec {
    Spec { params, object, list: false }
}

const fn list(params: &'static [&'static str], object: &'static str) -> Spec {
    Spec { params, object, list: true }
}

/// What `expand[]` may name on an object of `kind`: each expandable (or includable) path, with
/// the kind it turns into so a path may go on into it (`latest_invoice.payments`), or `""` when
/// the simulator offers nothing further down. Kinds not listed expand nothing.
fn expandable(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "customer" => &[
            ("default_source", ""),
            ("invoice_settings.default_payment_method", "payment_method"),
            ("test_clock", "test_helpers.test_clock"),
        ],
        "subscription" => &[
            ("customer", "customer"),
            ("default_payment_method", "payment_method"),
            ("latest_invoice", "invoice"),
            ("items.data.price.product", "product"),
            ("schedule", ""),
            ("test_clock", "test_helpers.test_clock"),
            ("pending_setup_intent", ""),
        ],
        // No `payment_intent`: removed from the invoice in 2025-03-31.basil (its payments say
        // which PaymentIntent paid it).
        "invoice" => &[
            ("customer", "customer"),
            ("payments", ""),
            ("lines.data.price", ""),
            ("subscription", "subscription"),
            ("parent.subscription_details.subscription", "subscription"),
            ("test_clock", "test_helpers.test_clock"),
        ],
        "checkout.session" => &[
            ("customer", "customer"),
            ("line_items", ""),
            ("subscription", "subscription"),
            ("invoice", "invoice"),
            ("payment_intent", "payment_intent"),
        ],
        "price" => &[("product", "product")],
        "product" => &[("default_price", "price")],
        "payment_method" => &[("customer", "customer")],
        "payment_intent" => {
            &[("customer", "customer"), ("payment_method", "payment_method"), ("latest_charge", "")]
        }
        // A Checkout Session's line item: its price is always whole, the price's product is not.
        "item" => &[("price.product", "product")],
        "product_feature" => &[("entitlement_feature", "")],
        "entitlements.active_entitlement" => &[("feature", "")],
        "billing_portal.session" => &[("configuration", "")],
        _ => &[],
    }
}

/// Whether `path` names something expandable on an object of `kind`, directly or inside an
/// object it expands into.
fn expandable_path(kind: &str, path: &str) -> bool {
    expandable(kind).iter().any(|(field, into)| {
        path == *field
            || (!into.is_empty()
                && path
                    .strip_prefix(field)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|rest| expandable_path(into, rest)))
    })
}

/// The spec of `method path` (path segments after `/v1`), `None` for an unknown route.
pub fn of(method: &str, path: &[&str]) -> Option<Spec> {
    let customer_fields: &'static [&'static str] = &[
        "email",
        "name",
        "metadata",
        "description",
        "phone",
        "address",
        "payment_method",
        "test_clock",
        "invoice_settings.default_payment_method",
        "invoice_settings.custom_fields",
        "invoice_settings.footer",
        "preferred_locales",
        "shipping",
        "tax_exempt",
    ];
    // Stripe sets a customer's clock and first payment method at creation only.
    let customer_update: &'static [&'static str] = &[
        "email",
        "name",
        "metadata",
        "description",
        "phone",
        "address",
        "invoice_settings.default_payment_method",
        "invoice_settings.custom_fields",
        "invoice_settings.footer",
        "preferred_locales",
        "shipping",
        "tax_exempt",
    ];
    Some(match (method, path) {
        ("POST", ["customers"]) => spec(customer_fields, "customer"),
        ("GET", ["customers"]) => list(&["email", "created", "test_clock"], "customer"),
        ("GET", ["customers", _]) => spec(&[], "customer"),
        ("POST", ["customers", _]) => spec(customer_update, "customer"),
        ("GET", ["customers", _, "payment_methods"]) => list(&["type", "allow_redisplay"], "payment_method"),
        ("POST", ["products"]) => spec(
            &["id", "name", "active", "description", "metadata", "default_price_data", "tax_code", "url"],
            "product",
        ),
        ("GET", ["products"]) => list(&["active", "ids", "created", "url"], "product"),
        ("GET", ["products", _]) => spec(&[], "product"),
        ("POST", ["products", _]) => {
            spec(&["name", "active", "description", "metadata", "default_price", "url"], "product")
        }
        ("POST", ["products", _, "features"]) => spec(&["entitlement_feature"], "product_feature"),
        ("GET", ["products", _, "features"]) => list(&[], "product_feature"),
        ("DELETE", ["products", _, "features", _]) => spec(&[], "product_feature"),
        ("POST", ["prices"]) => spec(
            &[
                "product",
                "product_data",
                "unit_amount",
                "unit_amount_decimal",
                "currency",
                "recurring",
                "lookup_key",
                "nickname",
                "metadata",
                "active",
                "transfer_lookup_key",
                "tax_behavior",
                "billing_scheme",
            ],
            "price",
        ),
        ("GET", ["prices"]) => {
            list(&["lookup_keys", "active", "product", "type", "currency", "recurring", "created"], "price")
        }
        ("GET", ["prices", _]) => spec(&[], "price"),
        ("POST", ["prices", _]) => spec(
            &["active", "lookup_key", "nickname", "metadata", "transfer_lookup_key", "tax_behavior"],
            "price",
        ),
        ("GET", ["payment_methods"]) => list(&["customer", "type", "allow_redisplay"], "payment_method"),
        ("GET", ["payment_methods", _]) => spec(&[], "payment_method"),
        ("POST", ["payment_methods", _, "attach"]) => spec(&["customer"], "payment_method"),
        ("POST", ["payment_methods", _, "detach"]) => spec(&[], "payment_method"),
        ("POST", ["checkout", "sessions"]) => spec(
            &[
                "mode",
                "customer",
                "customer_email",
                "client_reference_id",
                "success_url",
                "cancel_url",
                "return_url",
                "metadata",
                "locale",
                "expires_at",
                "ui_mode",
                "allow_promotion_codes",
                "billing_address_collection",
                "payment_method_types",
                "payment_method_collection",
                "customer_update",
                "automatic_tax",
                "consent_collection",
                "tax_id_collection",
                "custom_text",
                "line_items[].price",
                "line_items[].quantity",
                "line_items[].adjustable_quantity",
                "line_items[].price_data",
                "line_items[].tax_rates",
                "line_items[].dynamic_tax_rates",
                "subscription_data.metadata",
                "subscription_data.billing_mode",
                "subscription_data.description",
                "subscription_data.trial_period_days",
                "subscription_data.trial_end",
                "subscription_data.default_tax_rates",
                "subscription_data.invoice_settings",
                "subscription_data.proration_behavior",
                "subscription_data.application_fee_percent",
                "subscription_data.on_behalf_of",
            ],
            "checkout.session",
        ),
        ("GET", ["checkout", "sessions"]) => {
            list(&["customer", "status", "subscription", "created"], "checkout.session")
        }
        ("GET", ["checkout", "sessions", _]) => spec(&[], "checkout.session"),
        ("POST", ["checkout", "sessions", _, "expire"]) => spec(&[], "checkout.session"),
        ("GET", ["checkout", "sessions", _, "line_items"]) => list(&[], "item"),
        ("POST", ["subscriptions"]) => spec(
            &[
                "customer",
                "metadata",
                "billing_mode",
                "payment_behavior",
                "default_payment_method",
                "proration_behavior",
                "collection_method",
                "days_until_due",
                "cancel_at_period_end",
                "cancel_at",
                "off_session",
                "description",
                "trial_period_days",
                "trial_end",
                "automatic_tax",
                "currency",
                "test_clock",
                "items[].price",
                "items[].quantity",
                "items[].metadata",
                "items[].price_data",
                "items[].tax_rates",
                "items[].discounts",
            ],
            "subscription",
        ),
        ("GET", ["subscriptions"]) => list(
            &["customer", "status", "price", "test_clock", "created", "collection_method"],
            "subscription",
        ),
        ("GET", ["subscriptions", _]) => spec(&[], "subscription"),
        ("POST", ["subscriptions", _]) => spec(
            &[
                "proration_behavior",
                "proration_date",
                "payment_behavior",
                "cancel_at_period_end",
                "cancel_at",
                "cancellation_details",
                "metadata",
                "default_payment_method",
                "billing_cycle_anchor",
                "off_session",
                "pause_collection",
                "description",
                "trial_end",
                "items[].id",
                "items[].price",
                "items[].quantity",
                "items[].deleted",
                "items[].metadata",
                "items[].price_data",
                "items[].tax_rates",
                "items[].discounts",
                "items[].clear_usage",
            ],
            "subscription",
        ),
        ("DELETE", ["subscriptions", _]) => {
            spec(&["invoice_now", "prorate", "cancellation_details"], "subscription")
        }
        ("POST", ["subscriptions", _, "resume"]) => {
            spec(&["billing_cycle_anchor", "proration_behavior", "proration_date"], "subscription")
        }
        ("POST", ["invoices", "create_preview"]) => spec(
            &[
                "customer",
                "subscription",
                "currency",
                "automatic_tax",
                "preview_mode",
                "schedule",
                "subscription_details.items",
                "subscription_details.proration_behavior",
                "subscription_details.proration_date",
                "subscription_details.billing_cycle_anchor",
                "subscription_details.cancel_at",
                "subscription_details.cancel_at_period_end",
                "subscription_details.cancel_now",
                "subscription_details.default_tax_rates",
                "subscription_details.resume_at",
                "subscription_details.start_date",
                "subscription_details.trial_end",
            ],
            "invoice",
        ),
        ("GET", ["invoices"]) => {
            list(&["customer", "subscription", "status", "created", "collection_method"], "invoice")
        }
        ("GET", ["invoices", _]) => spec(&[], "invoice"),
        ("GET", ["invoices", _, "lines"]) => list(&[], "line_item"),
        ("POST", ["invoices", _, "pay"]) => {
            spec(&["payment_method", "off_session", "forgive", "paid_out_of_band", "mandate"], "invoice")
        }
        ("POST", ["invoices", _, "void"]) => spec(&[], "invoice"),
        ("GET", ["payment_intents", _]) => spec(&["client_secret"], "payment_intent"),
        ("POST", ["billing_portal", "configurations"]) => spec(
            &["features", "business_profile", "default_return_url", "metadata", "login_page", "name"],
            "billing_portal.configuration",
        ),
        ("GET", ["billing_portal", "configurations"]) => {
            list(&["active", "is_default"], "billing_portal.configuration")
        }
        ("GET", ["billing_portal", "configurations", _]) => spec(&[], "billing_portal.configuration"),
        ("POST", ["billing_portal", "configurations", _]) => spec(
            &[
                "features",
                "business_profile",
                "default_return_url",
                "metadata",
                "login_page",
                "name",
                "active",
            ],
            "billing_portal.configuration",
        ),
        ("POST", ["billing_portal", "sessions"]) => spec(
            &[
                "customer",
                "return_url",
                "configuration",
                "locale",
                "on_behalf_of",
                "flow_data.type",
                "flow_data.after_completion",
                "flow_data.payment_method_update",
                "flow_data.subscription_cancel",
                "flow_data.subscription_update",
                "flow_data.subscription_update_confirm",
            ],
            "billing_portal.session",
        ),
        ("POST", ["entitlements", "features"]) => {
            spec(&["name", "lookup_key", "metadata"], "entitlements.feature")
        }
        ("GET", ["entitlements", "features"]) => list(&["lookup_key", "archived"], "entitlements.feature"),
        ("GET", ["entitlements", "active_entitlements"]) => {
            list(&["customer"], "entitlements.active_entitlement")
        }
        ("POST", ["webhook_endpoints"]) => spec(
            &["url", "enabled_events", "api_version", "description", "metadata", "connect"],
            "webhook_endpoint",
        ),
        ("GET", ["webhook_endpoints"]) => list(&[], "webhook_endpoint"),
        ("GET", ["webhook_endpoints", _]) => spec(&[], "webhook_endpoint"),
        ("POST", ["webhook_endpoints", _]) => {
            spec(&["url", "enabled_events", "description", "metadata", "disabled"], "webhook_endpoint")
        }
        ("DELETE", ["webhook_endpoints", _]) => spec(&[], "webhook_endpoint"),
        ("GET", ["events"]) => list(&["type", "types", "created", "delivery_success"], "event"),
        ("GET", ["events", _]) => spec(&[], "event"),
        ("POST", ["test_helpers", "test_clocks"]) => {
            spec(&["frozen_time", "name"], "test_helpers.test_clock")
        }
        ("GET", ["test_helpers", "test_clocks"]) => list(&[], "test_helpers.test_clock"),
        ("GET" | "DELETE", ["test_helpers", "test_clocks", _]) => spec(&[], "test_helpers.test_clock"),
        ("POST", ["test_helpers", "test_clocks", _, "advance"]) => {
            spec(&["frozen_time"], "test_helpers.test_clock")
        }
        // The simulator's own helpers (Stripe has no such endpoints): what they document.
        ("POST", ["test_helpers", "checkout", "sessions", _, "complete"]) => {
            spec(&["payment_method", "quantity"], "checkout.session")
        }
        ("POST", ["test_helpers", "payment_intents", _, "authenticate"]) => {
            spec(&["outcome"], "payment_intent")
        }
        _ => return None,
    })
}

/// Refuses what `spec` does not document, as Stripe does.
pub fn check(spec: &Spec, params: &Value) -> Result<(), StripeError> {
    let Some(fields) = params.as_object() else { return Ok(()) };
    for (name, value) in fields {
        if name == "expand" || (spec.list && PAGING.contains(&name.as_str())) {
            continue;
        }
        let nested: Vec<&str> = spec
            .params
            .iter()
            .filter_map(|p| p.strip_prefix(name.as_str()))
            .filter_map(|rest| rest.strip_prefix("[].").or_else(|| rest.strip_prefix('.')))
            .collect();
        let top = spec.params.iter().any(|p| *p == name);
        if !top && nested.is_empty() {
            return Err(StripeError::unknown_parameter(name));
        }
        if nested.is_empty() {
            continue;
        }
        let entries: Vec<(String, &Value)> = match value {
            Value::Array(items) => {
                items.iter().enumerate().map(|(i, v)| (format!("{name}[{i}]"), v)).collect()
            }
            other => vec![(name.clone(), other)],
        };
        for (prefix, entry) in entries {
            for key in entry.as_object().map(|o| o.keys().collect::<Vec<_>>()).unwrap_or_default() {
                if !nested.contains(&key.as_str()) {
                    return Err(StripeError::unknown_parameter(&format!("{prefix}[{key}]")));
                }
            }
        }
    }
    for path in params["expand"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        // A list's expansions name its items' fields through `data.`; the bare path names a
        // field the list object does not have.
        let on_object = if spec.list { path.strip_prefix("data.") } else { Some(path) };
        if !on_object.is_some_and(|p| expandable_path(spec.object, p)) {
            return Err(StripeError::invalid(
                "expand",
                &format!(
                    "This property cannot be expanded ({path}). You may want to try expanding another field."
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_and_misspelt_parameters_are_refused_with_their_name() {
        let subs = of("POST", &["subscriptions", "sub_1"]).unwrap();
        assert!(
            check(&subs, &json!({"items": [{"id": "si_1", "quantity": "2"}], "proration_behavior": "none"}))
                .is_ok()
        );
        let e = check(&subs, &json!({"proration_behaviour": "none"})).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref(), e.param.as_deref()),
            (400, Some("parameter_unknown"), Some("proration_behaviour"))
        );
        let e = check(&subs, &json!({"items": [{"id": "si_1", "quantiy": "2"}]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("items[0][quantiy]"));
        // Free-form containers stay free.
        assert!(check(&subs, &json!({"metadata": {"anything": "goes"}})).is_ok());
        let lists = of("GET", &["subscriptions"]).unwrap();
        assert!(
            check(&lists, &json!({"customer": "cus_1", "limit": "10", "starting_after": "sub_0"})).is_ok()
        );
    }

    #[test]
    fn only_documented_expansions_are_allowed() {
        let sub = of("GET", &["subscriptions", "sub_1"]).unwrap();
        assert!(check(&sub, &json!({"expand": ["latest_invoice"]})).is_ok());
        assert!(
            check(&sub, &json!({"expand": ["latest_invoice.payment_intent"]})).is_err(),
            "removed in basil"
        );
        let session = of("GET", &["checkout", "sessions", "cs_1"]).unwrap();
        assert!(check(&session, &json!({"expand": ["line_items"]})).is_ok());
        // Into what an expansion returns, as far as that object offers.
        assert!(check(&sub, &json!({"expand": ["latest_invoice.payments"]})).is_ok());
        assert!(check(&session, &json!({"expand": ["invoice.payments"]})).is_ok());
        assert!(check(&sub, &json!({"expand": ["latest_invoice.customer.test_clock"]})).is_ok());
        assert!(check(&sub, &json!({"expand": ["schedule.phases"]})).is_err());
    }

    #[test]
    fn every_list_expands_its_objects_paths_under_data_and_refuses_the_bare_path() {
        let lists: [(&str, &[&str]); 8] = [
            ("customer", &["customers"]),
            ("invoice", &["invoices"]),
            ("subscription", &["subscriptions"]),
            ("checkout.session", &["checkout", "sessions"]),
            ("price", &["prices"]),
            ("product", &["products"]),
            ("payment_method", &["payment_methods"]),
            ("entitlements.active_entitlement", &["entitlements", "active_entitlements"]),
        ];
        for (kind, path) in lists {
            let spec = of("GET", path).unwrap();
            assert!(spec.list, "{path:?}");
            assert_eq!(spec.object, kind, "{path:?}");
            for (field, _) in expandable(kind) {
                assert!(
                    check(&spec, &json!({"expand": [format!("data.{field}")]})).is_ok(),
                    "{path:?}: data.{field}"
                );
                assert!(check(&spec, &json!({"expand": [field]})).is_err(), "{path:?}: bare {field}");
            }
        }
        let customers = of("GET", &["customers"]).unwrap();
        assert!(check(&customers, &json!({"expand": ["data.test_clock"]})).is_ok());
        assert!(check(&customers, &json!({"expand": ["test_clock"]})).is_err());
        let subs = of("GET", &["subscriptions"]).unwrap();
        assert!(check(&subs, &json!({"expand": ["data.latest_invoice.payments"]})).is_ok());
        assert!(check(&subs, &json!({"expand": ["data.latest_invoice.payment_intent"]})).is_err());
    }
}
