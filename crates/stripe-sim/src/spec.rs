//! Owns what each endpoint accepts, as Stripe documents it: its parameters (top level, and one
//! level inside the containers where a misspelling matters: `line_items[]`, `items[]`,
//! `subscription_data`, `subscription_details`, `flow_data`) and the paths `expand[]` may name.
//! Anything else is refused as Stripe refuses it: 400 `parameter_unknown` with the parameter, or
//! 400 for an expansion the object does not offer (including `latest_invoice.payment_intent`,
//! removed in 2025-03-31.basil).

use serde_json::Value;

use crate::error::StripeError;

/// Accepted by every list endpoint.
const PAGING: &[&str] = &["limit", "starting_after", "ending_before"];

/// One endpoint's parameters: `name`, or `name.sub` / `name[].sub` to also check one level
/// inside `name`; and the expandable paths.
pub struct Spec {
    pub params: &'static [&'static str],
    pub expand: &'static [&'static str],
    pub list: bool,
}

const fn spec(params: &'static [&'static str], expand: &'static [&'static str]) -> Spec {
    Spec { params, expand, list: false }
}

const fn list(params: &'static [&'static str], expand: &'static [&'static str]) -> Spec {
    Spec { params, expand, list: true }
}

const CUSTOMER_X: &[&str] = &["default_source", "invoice_settings.default_payment_method", "test_clock"];
const SUBSCRIPTION_X: &[&str] = &[
    "customer",
    "default_payment_method",
    "latest_invoice",
    "items.data.price.product",
    "schedule",
    "test_clock",
    "pending_setup_intent",
];
const INVOICE_X: &[&str] = &[
    "customer",
    "payments",
    "lines.data.price",
    "subscription",
    "parent.subscription_details.subscription",
    "test_clock",
];
const SESSION_X: &[&str] = &["customer", "line_items", "subscription", "invoice", "payment_intent"];

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
    Some(match (method, path) {
        ("POST", ["customers"]) => spec(customer_fields, CUSTOMER_X),
        ("GET", ["customers"]) => list(&["email", "created", "test_clock"], CUSTOMER_X),
        ("GET", ["customers", _]) => spec(&[], CUSTOMER_X),
        ("POST", ["customers", _]) => spec(customer_fields, CUSTOMER_X),
        ("GET", ["customers", _, "payment_methods"]) => list(&["type", "allow_redisplay"], &[]),
        ("POST", ["products"]) => spec(
            &["id", "name", "active", "description", "metadata", "default_price_data", "tax_code", "url"],
            &[],
        ),
        ("GET", ["products"]) => list(&["active", "ids", "created", "url"], &[]),
        ("GET", ["products", _]) => spec(&[], &[]),
        ("POST", ["products", _]) => {
            spec(&["name", "active", "description", "metadata", "default_price", "url"], &[])
        }
        ("POST", ["products", _, "features"]) => spec(&["entitlement_feature"], &["entitlement_feature"]),
        ("GET", ["products", _, "features"]) => list(&[], &[]),
        ("DELETE", ["products", _, "features", _]) => spec(&[], &[]),
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
            &["product"],
        ),
        ("GET", ["prices"]) => list(
            &["lookup_keys", "active", "product", "type", "currency", "recurring", "created"],
            &["data.product"],
        ),
        ("GET", ["prices", _]) => spec(&[], &["product"]),
        ("POST", ["prices", _]) => spec(
            &["active", "lookup_key", "nickname", "metadata", "transfer_lookup_key", "tax_behavior"],
            &["product"],
        ),
        ("GET", ["payment_methods"]) => list(&["customer", "type", "allow_redisplay"], &[]),
        ("GET", ["payment_methods", _]) => spec(&[], &["customer"]),
        ("POST", ["payment_methods", _, "attach"]) => spec(&["customer"], &["customer"]),
        ("POST", ["payment_methods", _, "detach"]) => spec(&[], &[]),
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
            SESSION_X,
        ),
        ("GET", ["checkout", "sessions"]) => list(&["customer", "status", "subscription", "created"], &[]),
        ("GET", ["checkout", "sessions", _]) => spec(&[], SESSION_X),
        ("POST", ["checkout", "sessions", _, "expire"]) => spec(&[], SESSION_X),
        ("GET", ["checkout", "sessions", _, "line_items"]) => list(&[], &["data.price.product"]),
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
            SUBSCRIPTION_X,
        ),
        ("GET", ["subscriptions"]) => list(
            &["customer", "status", "price", "test_clock", "created", "collection_method"],
            &["data.latest_invoice"],
        ),
        ("GET", ["subscriptions", _]) => spec(&[], SUBSCRIPTION_X),
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
            SUBSCRIPTION_X,
        ),
        ("DELETE", ["subscriptions", _]) => {
            spec(&["invoice_now", "prorate", "cancellation_details"], SUBSCRIPTION_X)
        }
        ("POST", ["subscriptions", _, "resume"]) => {
            spec(&["billing_cycle_anchor", "proration_behavior", "proration_date"], SUBSCRIPTION_X)
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
            &["lines.data.price"],
        ),
        ("GET", ["invoices"]) => {
            list(&["customer", "subscription", "status", "created", "collection_method"], &["data.payments"])
        }
        ("GET", ["invoices", _]) => spec(&[], INVOICE_X),
        ("GET", ["invoices", _, "lines"]) => list(&[], &[]),
        ("POST", ["invoices", _, "pay"]) => {
            spec(&["payment_method", "off_session", "forgive", "paid_out_of_band", "mandate"], INVOICE_X)
        }
        ("POST", ["invoices", _, "void"]) => spec(&[], INVOICE_X),
        ("GET", ["payment_intents", _]) => {
            spec(&["client_secret"], &["customer", "payment_method", "latest_charge"])
        }
        ("POST", ["billing_portal", "configurations"]) => spec(
            &["features", "business_profile", "default_return_url", "metadata", "login_page", "name"],
            &[],
        ),
        ("GET", ["billing_portal", "configurations"]) => list(&["active", "is_default"], &[]),
        ("GET", ["billing_portal", "configurations", _]) => spec(&[], &[]),
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
            &[],
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
            &["configuration"],
        ),
        ("POST", ["entitlements", "features"]) => spec(&["name", "lookup_key", "metadata"], &[]),
        ("GET", ["entitlements", "features"]) => list(&["lookup_key", "archived"], &[]),
        ("GET", ["entitlements", "active_entitlements"]) => list(&["customer"], &["data.feature"]),
        ("POST", ["webhook_endpoints"]) => {
            spec(&["url", "enabled_events", "api_version", "description", "metadata", "connect"], &[])
        }
        ("GET", ["webhook_endpoints"]) => list(&[], &[]),
        ("GET", ["webhook_endpoints", _]) => spec(&[], &[]),
        ("POST", ["webhook_endpoints", _]) => {
            spec(&["url", "enabled_events", "description", "metadata", "disabled"], &[])
        }
        ("DELETE", ["webhook_endpoints", _]) => spec(&[], &[]),
        ("GET", ["events"]) => list(&["type", "types", "created", "delivery_success"], &[]),
        ("GET", ["events", _]) => spec(&[], &[]),
        ("POST", ["test_helpers", "test_clocks"]) => spec(&["frozen_time", "name"], &[]),
        ("GET", ["test_helpers", "test_clocks"]) => list(&[], &[]),
        ("GET" | "DELETE", ["test_helpers", "test_clocks", _]) => spec(&[], &[]),
        ("POST", ["test_helpers", "test_clocks", _, "advance"]) => spec(&["frozen_time"], &[]),
        // The simulator's own helpers (Stripe has no such endpoints): what they document.
        ("POST", ["test_helpers", "checkout", "sessions", _, "complete"]) => {
            spec(&["payment_method", "quantity"], SESSION_X)
        }
        ("POST", ["test_helpers", "payment_intents", _, "authenticate"]) => spec(&["outcome"], &[]),
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
        if !spec.expand.contains(&path) {
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
    }
}
