//! Owns what Stripe receives from us: the checkout, customer and portal requests as they arrive
//! at "Stripe" (a recording proxy in front of the simulator), checked against the design, so a
//! wrong parameter fails here instead of on Stripe.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{HARNESS_KEY, spawn_app_with};
use crate::stripe_proxy::StripeProxy;

fn as_map(params: &[(String, String)]) -> HashMap<&str, &str> {
    params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn checkout_customer_and_portal_requests_carry_what_the_design_says() {
    let sim = stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), Default::default()).await.unwrap();
    let stripe = hydra_billing::stripe::StripeClient::new(
        &sim.base_url,
        hydra_billing::config::Secret::new(HARNESS_KEY),
    );
    // Webhooks of this setup go to a closed local port: this test reads requests, not events.
    let report = hydra_billing::stripe::setup::run(&stripe, "http://127.0.0.1:9").await.unwrap();
    let mut env: HashMap<String, String> = report
        .env
        .iter()
        .filter_map(|line| line.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .filter(|(k, _)| k != "STRIPE_WEBHOOK_SECRET")
        .collect();
    let proxy = StripeProxy::start(&sim.base_url).await;
    env.insert("STRIPE_API_BASE".into(), proxy.base.clone());
    let price = env["STRIPE_TEAM_ANNUAL_PRICE_ID"].clone();
    let portal_config = env["STRIPE_PORTAL_CONFIG_ID"].clone();
    let app = spawn_app_with(move |e| e.extend(env)).await;
    app.put_tenant("t1", &json!({"name": "Acme", "billing_email": "ap@acme.test"})).await;
    let token = app.tenant_token("t1");

    let r = app
        .client
        .post(app.url("/api/billing/checkout"))
        .bearer_auth(&token)
        .json(&json!({"price_id": price, "quantity": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let customers = proxy.received(Method::POST, "/v1/customers");
    assert_eq!(customers.len(), 1, "one Customer made");
    let customer = as_map(&customers[0]);
    assert_eq!(customer.get("metadata[hydra_tenant_id]"), Some(&"t1"));
    assert_eq!(customer.get("email"), Some(&"ap@acme.test"));
    let sessions = proxy.received(Method::POST, "/v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    let session = as_map(&sessions[0]);
    let stored = app.tenant("t1").await.stripe_customer_id.unwrap();
    for (param, expected) in [
        ("mode", "subscription"),
        ("customer", stored.as_str()),
        ("client_reference_id", "t1"),
        ("line_items[0][price]", price.as_str()),
        ("line_items[0][quantity]", "3"),
        ("line_items[0][adjustable_quantity][enabled]", "true"),
        ("line_items[0][adjustable_quantity][minimum]", "1"),
        ("line_items[0][adjustable_quantity][maximum]", "500"),
        ("subscription_data[metadata][hydra_tenant_id]", "t1"),
        ("subscription_data[billing_mode][type]", "classic"),
    ] {
        assert_eq!(session.get(param), Some(&expected), "{param} as Stripe received it: {session:?}");
    }
    let cancel = session.get("cancel_url").copied().unwrap_or_default();
    assert!(
        cancel.starts_with("http://billing.test/billing/upgrade?tier=")
            && cancel.ends_with("&seats=3&checkout=cancelled"),
        "leaving Checkout returns to the same choices: {cancel}"
    );
    let success = session.get("success_url").copied().unwrap_or_default();
    assert!(
        success.starts_with("http://billing.test/billing/success?session_id={CHECKOUT_SESSION_ID}"),
        "Stripe fills in the session id: {success}"
    );

    let r = app.client.post(app.url("/api/billing/portal")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let portals = proxy.received(Method::POST, "/v1/billing_portal/sessions");
    assert_eq!(portals.len(), 1);
    let portal = as_map(&portals[0]);
    assert_eq!(portal.get("configuration"), Some(&portal_config.as_str()), "the configured portal");
    assert_eq!(portal.get("customer"), Some(&stored.as_str()));
    assert_eq!(portal.get("return_url"), Some(&"http://billing.test/billing"));
    assert_eq!(portal.get("flow_data[type]"), None, "a plain session opens the portal's home");

    // Deep links: the payment method form, and (with no subscription yet) no cancel flow.
    let portal_with = |body: serde_json::Value| {
        let request = app.client.post(app.url("/api/billing/portal")).bearer_auth(&token).json(&body);
        async move { request.send().await.unwrap() }
    };
    assert_eq!(portal_with(json!({"flow": "payment_method_update"})).await.status(), StatusCode::OK);
    let flows = proxy.received(Method::POST, "/v1/billing_portal/sessions");
    assert_eq!(as_map(&flows[1]).get("flow_data[type]"), Some(&"payment_method_update"));
    assert_eq!(portal_with(json!({"flow": "subscription_cancel"})).await.status(), StatusCode::CONFLICT);
    assert_eq!(portal_with(json!({"flow": "refund_me"})).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(portal_with(json!({"flows": "x"})).await.status(), StatusCode::BAD_REQUEST, "unknown fields");
}

/// A fake Stripe answering the first `failures` calls with `status` (and `headers`), then 200.
async fn flaky_stripe(
    failures: usize,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |request_headers: axum::http::HeaderMap| {
        let log = log.clone();
        async move {
            let key =
                request_headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let n = {
                let mut l = log.lock().unwrap();
                l.push((std::time::Instant::now(), key));
                l.len()
            };
            let mut response = if n <= failures {
                let code = axum::http::StatusCode::from_u16(status).unwrap();
                (code, axum::Json(json!({"error": {"type": "invalid_request_error", "code": "rate_limit"}})))
                    .into_response()
            } else {
                axum::Json(json!({"id": "cus_1", "object": "customer"})).into_response()
            };
            for (k, v) in headers {
                response.headers_mut().insert(*k, axum::http::HeaderValue::from_static(v));
            }
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

use axum::response::IntoResponse;

#[tokio::test]
async fn the_client_waits_out_429s_as_stripe_asks_and_keeps_one_idempotency_key() {
    let (base, seen) = flaky_stripe(2, 429, &[("retry-after", "1"), ("stripe-should-retry", "true")]).await;
    let client = hydra_billing::stripe::StripeClient::new(
        &base,
        hydra_billing::config::Secret::new("sk_test_fake_flaky"),
    );
    let params = hydra_billing::stripe::params(&[("email", "a@b.test")]);
    let created = client.post("/v1/customers", &params, Some("make-customer-1".into())).await.unwrap();
    assert_eq!(created["id"], "cus_1");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two 429s waited out, then served");
    assert!(seen.iter().all(|(_, key)| key == "make-customer-1"), "one key for every try: {seen:?}");
    for pair in seen.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= std::time::Duration::from_millis(950),
            "Retry-After: 1 was honoured"
        );
    }
}

#[tokio::test]
async fn the_client_does_not_retry_what_stripe_says_not_to() {
    let (base, seen) = flaky_stripe(5, 500, &[("stripe-should-retry", "false")]).await;
    let client = hydra_billing::stripe::StripeClient::new(
        &base,
        hydra_billing::config::Secret::new("sk_test_fake_flaky"),
    );
    let err = client.post("/v1/customers", &[], Some("k".into())).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1, "Stripe-Should-Retry: false is final");
}

/// The portal's cancel deep link for a subscribed team: the session Stripe is asked for names the
/// flow and the team's own subscription, and the page answers with the session's URL.
#[tokio::test]
async fn the_cancel_deep_link_names_the_teams_subscription() {
    let (s, proxy) = crate::helpers::spawn_with_stripe_proxy().await;
    s.post("/v1/billing_portal/configurations", &[("features[invoice_history][enabled]", "true")]).await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let sub = s.subscribe(&customer, &s.prices.team_monthly, "2").await;
    s.app.state.reconcile(Some("t1"), "test").await.unwrap();
    let token = s.app.tenant_token("t1");
    let r = s
        .app
        .client
        .post(s.app.url("/api/billing/portal"))
        .bearer_auth(&token)
        .json(&json!({"flow": "subscription_cancel"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let url = r.json::<serde_json::Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    let sent = proxy.received(Method::POST, "/v1/billing_portal/sessions");
    let sent = as_map(&sent[0]);
    assert_eq!(sent.get("flow_data[type]"), Some(&"subscription_cancel"));
    assert_eq!(sent.get("flow_data[subscription_cancel][subscription]"), Some(&sub["id"].as_str().unwrap()));
    assert_eq!(sent.get("customer"), Some(&customer.as_str()));
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the session's page opens");
}
