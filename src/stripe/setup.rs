//! Owns `hydra-billing stripe setup` (BILL-01): the Stripe objects billing needs, found or created
//! idempotently (products by fixed id, prices by lookup key, the portal configuration and the
//! webhook endpoint by what they are for), and the environment lines that point `serve` at them.
//! Running it again creates nothing new.

use serde_json::Value;

use super::{HANDLED_EVENTS as HANDLED, STRIPE_API_VERSION, StripeCallError, StripeClient, params};
use crate::domain::catalogue::{MAX_SEATS, MIN_SEATS, PLANS, PRODUCTS, STRIPE_FEATURES, product_features};

/// What setup found or made.
#[derive(Debug, Default)]
pub struct SetupReport {
    /// `NAME=value` lines for the environment.
    pub env: Vec<String>,
    /// What was created this run (empty on a second run).
    pub created: Vec<String>,
}

pub fn webhook_url(public_url: &str) -> String {
    format!("{public_url}/api/webhooks/stripe")
}

async fn find_or_create_product(
    stripe: &StripeClient,
    id: &str,
    name: &str,
    report: &mut SetupReport,
) -> anyhow::Result<()> {
    match stripe.get(&format!("/v1/products/{id}"), &[]).await {
        Ok(_) => Ok(()),
        Err(StripeCallError::Api { status: 404, .. }) => {
            stripe
                .post(
                    "/v1/products",
                    &params(&[("id", id), ("name", name), ("metadata[hydra]", "billing")]),
                    Some(format!("hydra-setup-{id}")),
                )
                .await?;
            report.created.push(format!("product {id}"));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Finds or creates everything; prints nothing (the CLI does).
pub async fn run(stripe: &StripeClient, public_url: &str) -> anyhow::Result<SetupReport> {
    let mut report = SetupReport::default();
    let price_ids = catalogue(stripe, &mut report).await?;
    ensure_features(stripe, &mut report).await?;
    let portal = ensure_portal(stripe, &price_ids, public_url, &mut report).await?;
    report.env.push(format!("STRIPE_PORTAL_CONFIG_ID={portal}"));
    if let Some(secret) = ensure_webhook(stripe, public_url, &mut report).await? {
        report.env.push(format!("STRIPE_WEBHOOK_SECRET={secret}"));
    }
    Ok(report)
}

/// The two products and four prices only (what a test run against Stripe test mode needs),
/// adding their env lines to `report`. Returns (product, price id) pairs.
pub async fn catalogue(
    stripe: &StripeClient,
    report: &mut SetupReport,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut price_ids: Vec<(String, String)> = Vec::new();
    for product in &PRODUCTS {
        find_or_create_product(stripe, product.id, product.name, report).await?;
        for plan in PLANS.iter().filter(|p| p.tier == product.tier) {
            let (lookup_key, env, interval) = (plan.lookup_key, plan.env_var, plan.interval.as_str());
            let found = stripe
                .get("/v1/prices", &params(&[("lookup_keys[]", lookup_key), ("active", "true")]))
                .await?;
            let existing = found["data"]
                .as_array()
                .and_then(|d| d.first())
                .and_then(|p| p["id"].as_str())
                .map(str::to_owned);
            let id = match existing {
                Some(id) => id,
                None => {
                    let amount_text = plan.unit_amount.to_string();
                    let created = stripe
                        .post(
                            "/v1/prices",
                            &params(&[
                                ("product", product.id),
                                ("unit_amount", &amount_text),
                                ("currency", "usd"),
                                ("recurring[interval]", interval),
                                ("lookup_key", lookup_key),
                                ("nickname", lookup_key),
                            ]),
                            Some(format!("hydra-setup-{lookup_key}")),
                        )
                        .await?;
                    report.created.push(format!("price {lookup_key}"));
                    created["id"].as_str().unwrap_or_default().to_owned()
                }
            };
            report.env.push(format!("{env}={id}"));
            price_ids.push((product.id.to_owned(), id));
        }
    }
    Ok(price_ids)
}

/// One Entitlements feature per gated capability, found by lookup key or created, and attached
/// to each product whose tier has it by the tier table (attachments already there are kept).
pub async fn ensure_features(stripe: &StripeClient, report: &mut SetupReport) -> anyhow::Result<()> {
    let existing = stripe.list_all("/v1/entitlements/features", &[]).await?;
    let mut ids = std::collections::HashMap::new();
    for feature in &STRIPE_FEATURES {
        let found =
            existing.iter().find(|f| f["lookup_key"] == feature.lookup_key).and_then(|f| f["id"].as_str());
        let id = match found {
            Some(id) => id.to_owned(),
            None => {
                let created = stripe
                    .post(
                        "/v1/entitlements/features",
                        &params(&[("name", feature.name), ("lookup_key", feature.lookup_key)]),
                        Some(format!("hydra-setup-feature-{}", feature.lookup_key)),
                    )
                    .await?;
                report.created.push(format!("feature {}", feature.lookup_key));
                created["id"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("Stripe returned a feature without id"))?
                    .to_owned()
            }
        };
        ids.insert(feature.lookup_key, id);
    }
    for product in &PRODUCTS {
        let attached = attached_features(stripe, product.id).await?;
        for feature in product_features(product.tier).filter(|f| !attached.iter().any(|a| a == f.lookup_key))
        {
            let id = ids
                .get(feature.lookup_key)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no feature {} was found or made", feature.lookup_key))?;
            stripe
                .post(
                    &format!("/v1/products/{}/features", product.id),
                    &params(&[("entitlement_feature", &id)]),
                    Some(format!("hydra-setup-{}-{}", product.id, feature.lookup_key)),
                )
                .await?;
            report.created.push(format!("feature {} on {}", feature.lookup_key, product.id));
        }
    }
    Ok(())
}

/// The lookup keys of the features attached to a product.
pub async fn attached_features(stripe: &StripeClient, product: &str) -> anyhow::Result<Vec<String>> {
    let attached = stripe.list_all(&format!("/v1/products/{product}/features"), &[]).await?;
    Ok(attached
        .iter()
        .filter_map(|a| a["entitlement_feature"]["lookup_key"].as_str().map(str::to_owned))
        .collect())
}

/// The portal: seats 1..=500, switching among the four prices (always_invoice; shortening the
/// interval waits for the period end), cancellation at period end, invoice history, payment method.
async fn ensure_portal(
    stripe: &StripeClient,
    prices: &[(String, String)],
    public_url: &str,
    report: &mut SetupReport,
) -> anyhow::Result<String> {
    let configs = stripe.list_all("/v1/billing_portal/configurations", &[]).await?;
    let ours = configs.iter().find(|c| c["metadata"]["hydra"] == "billing");
    if let Some(id) = ours.and_then(|c| c["id"].as_str()) {
        return Ok(id.to_owned());
    }
    let mut form = params(&[
        ("metadata[hydra]", "billing"),
        ("default_return_url", &format!("{public_url}/billing")),
        ("features[invoice_history][enabled]", "true"),
        ("features[payment_method_update][enabled]", "true"),
        ("features[subscription_cancel][enabled]", "true"),
        ("features[subscription_cancel][mode]", "at_period_end"),
        ("features[subscription_update][enabled]", "true"),
        ("features[subscription_update][default_allowed_updates][]", "price"),
        ("features[subscription_update][default_allowed_updates][]", "quantity"),
        ("features[subscription_update][proration_behavior]", "always_invoice"),
        ("features[subscription_update][schedule_at_period_end][conditions][0][type]", "shortening_interval"),
    ]);
    for (i, product) in PRODUCTS.iter().map(|p| p.id).enumerate() {
        let base = format!("features[subscription_update][products][{i}]");
        form.push((format!("{base}[product]"), product.to_owned()));
        for (j, (_, price)) in prices.iter().filter(|(p, _)| p == product).enumerate() {
            form.push((format!("{base}[prices][{j}]"), price.clone()));
        }
        form.push((format!("{base}[adjustable_quantity][enabled]"), "true".into()));
        form.push((format!("{base}[adjustable_quantity][minimum]"), MIN_SEATS.to_string()));
        form.push((format!("{base}[adjustable_quantity][maximum]"), MAX_SEATS.to_string()));
    }
    let created =
        stripe.post("/v1/billing_portal/configurations", &form, Some("hydra-setup-portal".into())).await?;
    report.created.push("portal configuration".into());
    Ok(created["id"].as_str().unwrap_or_default().to_owned())
}

/// What a portal configuration lacks of the one `ensure_portal` makes (empty when it is right):
/// previews equal charges only while the portal prorates with `always_invoice`, and a customer
/// must be able to cancel (at period end), update the card, read invoices and move among the
/// four prices. `prices` pairs each product with a configured price.
pub fn portal_problems(config: &Value, prices: &[(&str, &str)]) -> Vec<String> {
    let features = &config["features"];
    let mut problems = Vec::new();
    if config["active"] != true {
        problems.push("the configuration is inactive".to_owned());
    }
    for feature in ["invoice_history", "payment_method_update", "subscription_cancel", "subscription_update"]
    {
        if features[feature]["enabled"] != true {
            problems.push(format!("{feature} is off"));
        }
    }
    if features["subscription_cancel"]["enabled"] == true
        && features["subscription_cancel"]["mode"] != "at_period_end"
    {
        problems.push("cancellation is not at period end".to_owned());
    }
    let update = &features["subscription_update"];
    if update["enabled"] == true {
        if update["proration_behavior"] != "always_invoice" {
            problems.push(format!(
                "subscription_update prorates with {}, not always_invoice",
                update["proration_behavior"].as_str().unwrap_or("nothing")
            ));
        }
        let allowed: Vec<&str> = update["default_allowed_updates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for needed in ["price", "quantity"] {
            if !allowed.contains(&needed) {
                problems.push(format!("subscription_update does not allow {needed} changes"));
            }
        }
        let products = update["products"].as_array().cloned().unwrap_or_default();
        for (product, price) in prices {
            let listed = products.iter().find(|p| p["product"] == *product);
            let has_price =
                listed.and_then(|p| p["prices"].as_array()).is_some_and(|ps| ps.iter().any(|p| p == price));
            if !has_price {
                problems.push(format!("subscription_update does not offer {price} of {product}"));
            }
        }
    }
    problems
}

/// The webhook endpoint for our URL with all 8 events at our API version. Returns its secret
/// when it was just created (Stripe never shows it again).
async fn ensure_webhook(
    stripe: &StripeClient,
    public_url: &str,
    report: &mut SetupReport,
) -> anyhow::Result<Option<String>> {
    let url = webhook_url(public_url);
    let endpoints = stripe.list_all("/v1/webhook_endpoints", &[]).await?;
    if let Some(existing) = endpoints.iter().find(|e| e["url"] == url.as_str()) {
        let missing = missing_events(existing);
        if !missing.is_empty() {
            let id = existing["id"].as_str().unwrap_or_default();
            let mut form: Vec<(String, String)> =
                HANDLED.iter().map(|t| ("enabled_events[]".to_owned(), (*t).to_owned())).collect();
            form.push(("disabled".into(), "false".into()));
            stripe.post(&format!("/v1/webhook_endpoints/{id}"), &form, None).await?;
            report.created.push(format!("webhook events {}", missing.join(", ")));
        }
        return Ok(None);
    }
    let mut form =
        params(&[("url", &url), ("api_version", STRIPE_API_VERSION), ("description", "hydra-billing")]);
    form.extend(HANDLED.iter().map(|t| ("enabled_events[]".to_owned(), (*t).to_owned())));
    let created =
        stripe.post("/v1/webhook_endpoints", &form, Some(format!("hydra-setup-webhook-{url}"))).await?;
    report.created.push("webhook endpoint".into());
    Ok(created["secret"].as_str().map(str::to_owned))
}

/// The handled event types an endpoint does not subscribe to.
pub fn missing_events(endpoint: &Value) -> Vec<&'static str> {
    let enabled: Vec<&str> =
        endpoint["enabled_events"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if enabled.contains(&"*") {
        return Vec::new();
    }
    HANDLED.iter().copied().filter(|t| !enabled.contains(t)).collect()
}
