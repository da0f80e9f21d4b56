//! The paying customer's API (issue 5) end to end against the simulator: checkout, the success
//! lookup, binding quotes for seats and upgrades, the portal, gating, the lifecycle jobs.

use hydra_billing::http::auth::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DAY, START, WithStripe, error_of, json, spawn_with_stripe};

impl WithStripe {
    async fn checkout(&self, tenant: &str, price: &str, quantity: i64) -> reqwest::Response {
        self.call(
            reqwest::Method::POST,
            "/api/billing/checkout",
            tenant,
            Some(json!({"price_id": price, "quantity": quantity})),
        )
        .await
    }

    /// Delivers every handled event Stripe has for the customer and processes them.
    async fn deliver_all(&self, customer: &str) {
        for e in self.events_of(customer).await {
            assert_eq!(self.app.deliver(&e).await, StatusCode::OK);
        }
        self.app.drain().await;
    }

    /// A tenant on Team monthly with `seats`, paid through our checkout endpoint on a test clock.
    async fn subscribed(&self, tenant: &str, seats: i64) -> (String, String) {
        let (customer, clock) = self.tenant_with_customer(tenant, "pm_card_visa").await;
        let r = json(self.checkout(tenant, &self.prices.team_monthly, seats).await).await;
        let session = r["session_id"].as_str().unwrap().to_owned();
        self.post(
            &format!("/v1/test_helpers/checkout/sessions/{session}/complete"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
        self.deliver_all(&customer).await;
        (customer, clock)
    }
}

#[tokio::test]
async fn a_free_tenant_upgrades_through_checkout_and_is_provisioned_by_webhooks() {
    let s = spawn_with_stripe().await;
    s.app.put_tenant("t1", &json!({"name": "Acme", "billing_email": "ap@acme.test"})).await;
    let r = s.checkout("t1", &s.prices.team_monthly, 3).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    let session_id = body["session_id"].as_str().unwrap().to_owned();
    assert!(body["url"].as_str().unwrap().starts_with(&s.sim().base_url), "the URL comes from Stripe");
    let session = s.get(&format!("/v1/checkout/sessions/{session_id}"), &[]).await;
    assert_eq!(session["client_reference_id"], "t1");
    assert_eq!(
        session["success_url"],
        "http://billing.test/billing/success?session_id={CHECKOUT_SESSION_ID}&plan=team",
        "the success page learns the session and the plan chosen"
    );
    let customer = session["customer"].as_str().unwrap().to_owned();
    assert_eq!(s.app.tenant("t1").await.stripe_customer_id.as_deref(), Some(customer.as_str()));
    // Not paid yet: the success lookup says so.
    let lookup = format!("/api/billing/checkout/session?session_id={session_id}");
    let e = error_of(s.call(reqwest::Method::GET, &lookup, "t1", None).await, StatusCode::CONFLICT).await;
    assert_eq!(e["checkout_status"], "open");
    s.post(
        &format!("/v1/test_helpers/checkout/sessions/{session_id}/complete"),
        &[("payment_method", "pm_card_visa")],
    )
    .await;
    // Paid, no webhook processed yet: provisioning, and the lookup never provisions by itself.
    let r = json(s.call(reqwest::Method::GET, &lookup, "t1", None).await).await;
    assert_eq!((r["status"].as_str(), r["plan_tier"].as_str()), (Some("provisioning"), Some("free")));
    s.deliver_all(&customer).await;
    let r = json(s.call(reqwest::Method::GET, &lookup, "t1", None).await).await;
    assert_eq!((r["status"].as_str(), r["plan_tier"].as_str()), (Some("active"), Some("team")));
    let status = json(s.app.status("t1").await).await;
    assert_eq!(status["plan_tier"], "team");
    assert_eq!(status["seat_count"], 3);
    assert_eq!(status["interval"], "month");
    assert_eq!(status["subscription_status"], "active");
    assert!(status["current_period_end"].is_string());
    // A second checkout is refused: no double subscriptions.
    let e = error_of(s.checkout("t1", &s.prices.business_monthly, 1).await, StatusCode::CONFLICT).await;
    assert_eq!(e["subscription_status"], "active");
}

#[tokio::test]
async fn twenty_concurrent_checkouts_make_exactly_one_customer_and_one_open_session() {
    let s = spawn_with_stripe().await;
    s.app.put_tenant("t1", &json!({"name": "Acme", "billing_email": "race@acme.test"})).await;
    let mut handles = Vec::new();
    for _ in 0..20 {
        let (client, url, token, price) = (
            s.app.client.clone(),
            s.app.url("/api/billing/checkout"),
            s.app.tenant_token("t1"),
            s.prices.team_monthly.clone(),
        );
        handles.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"price_id": price, "quantity": 2}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    let customers = s.get("/v1/customers", &[("email", "race@acme.test"), ("limit", "100")]).await;
    assert_eq!(customers["data"].as_array().unwrap().len(), 1, "exactly one Customer");
    let customer = customers["data"][0]["id"].as_str().unwrap().to_owned();
    let events = s.get("/v1/events", &[("type", "checkout.session.expired"), ("limit", "100")]).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 19, "each new session expired the previous one");
    assert_eq!(s.app.tenant("t1").await.stripe_customer_id.as_deref(), Some(customer.as_str()));
}

#[tokio::test]
async fn checkout_inputs_are_checked() {
    let s = spawn_with_stripe().await;
    s.app.put_tenant("t1", &json!({"name": "Acme"})).await;
    error_of(s.checkout("t1", "price_not_ours", 1).await, StatusCode::BAD_REQUEST).await;
    error_of(s.checkout("t1", &s.prices.team_monthly, 0).await, StatusCode::BAD_REQUEST).await;
    error_of(s.checkout("t1", &s.prices.team_monthly, 501).await, StatusCode::BAD_REQUEST).await;
    let r = s
        .app
        .client
        .post(s.app.url("/api/billing/checkout"))
        .json(&json!({"price_id": s.prices.team_monthly}))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::UNAUTHORIZED).await;
    let member = s.app.tenant_token_with("t1", Role::Member, 600);
    let r = s
        .app
        .client
        .post(s.app.url("/api/billing/checkout"))
        .bearer_auth(member)
        .json(&json!({"price_id": s.prices.team_monthly}))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::FORBIDDEN).await;
    // A session of another tenant is not found, whatever its id.
    let theirs = json(s.checkout("t2", &s.prices.team_monthly, 1).await).await;
    let path = format!("/api/billing/checkout/session?session_id={}", theirs["session_id"].as_str().unwrap());
    error_of(s.call(reqwest::Method::GET, &path, "t1", None).await, StatusCode::NOT_FOUND).await;
    error_of(
        s.call(reqwest::Method::GET, "/api/billing/checkout/session?session_id=nope", "t1", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // A manual plan cannot check out.
    s.app.set_plan("t1", &json!({"plan_tier": "enterprise", "reason": "contract"})).await;
    error_of(s.checkout("t1", &s.prices.team_monthly, 1).await, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_seat_change_charges_exactly_its_preview() {
    let s = spawn_with_stripe().await;
    let (customer, clock) = s.subscribed("t1", 3).await;
    s.advance(&clock, START + 9 * DAY + 4321).await;
    let preview =
        json(s.call(reqwest::Method::POST, "/api/billing/seats", "t1", Some(json!({"quantity": 5}))).await)
            .await;
    let amount = preview["amount_due"].as_i64().unwrap();
    assert!(amount > 0 && amount < 4000, "two seats for part of a month: {preview}");
    assert_eq!(preview["lines"].as_array().unwrap().len(), 2);
    // Time passes on Stripe's side before the customer confirms: the quote's date still rules.
    s.advance(&clock, START + 9 * DAY + 4321 + 300).await;
    let quote = preview["quote_id"].as_str().unwrap();
    let confirm = || {
        s.call(
            reqwest::Method::POST,
            "/api/billing/seats",
            "t1",
            Some(json!({"quote_id": quote, "confirm": true})),
        )
    };
    let done = json(confirm().await).await;
    let invoice = s.get(&format!("/v1/invoices/{}", done["latest_invoice"].as_str().unwrap()), &[]).await;
    assert_eq!(invoice["amount_paid"].as_i64(), Some(amount), "charged exactly the preview");
    assert_eq!(s.app.tenant("t1").await.stripe_seat_count, Some(5));
    assert!(customer.starts_with("cus_"));
    // Single use.
    let e = error_of(confirm().await, StatusCode::CONFLICT).await;
    assert_eq!(e["quote_status"], "used");
}

#[tokio::test]
async fn quotes_expire_belong_to_their_tenant_and_bad_seat_requests_are_refused() {
    let s = spawn_with_stripe().await;
    s.subscribed("t1", 3).await;
    let seats = |body: Value, tenant: &'static str| {
        s.call(reqwest::Method::POST, "/api/billing/seats", tenant, Some(body))
    };
    error_of(seats(json!({"quantity": 0}), "t1").await, StatusCode::BAD_REQUEST).await;
    error_of(seats(json!({"quantity": 501}), "t1").await, StatusCode::BAD_REQUEST).await;
    error_of(seats(json!({"quantity": 3}), "t1").await, StatusCode::BAD_REQUEST).await;
    error_of(
        seats(json!({"quantity": 4, "quote_id": "quo_x", "confirm": true}), "t1").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let preview = json(seats(json!({"quantity": 4}), "t1").await).await;
    let quote = preview["quote_id"].as_str().unwrap().to_owned();
    error_of(seats(json!({"quote_id": quote, "confirm": true}), "t2").await, StatusCode::NOT_FOUND).await;
    s.app.clock.advance(601);
    let e =
        error_of(seats(json!({"quote_id": quote, "confirm": true}), "t1").await, StatusCode::CONFLICT).await;
    assert_eq!(e["quote_status"], "expired");
    assert_eq!(s.app.tenant("t1").await.stripe_seat_count, Some(3), "nothing applied");
    // A tenant without a subscription has nothing to change.
    s.app.put_tenant("t3", &json!({"name": "Free"})).await;
    error_of(
        s.call(reqwest::Method::POST, "/api/billing/seats", "t3", Some(json!({"quantity": 2}))).await,
        StatusCode::CONFLICT,
    )
    .await;
}

#[tokio::test]
async fn a_quote_for_a_subscription_that_changed_since_is_refused() {
    let s = spawn_with_stripe().await;
    s.subscribed("t1", 3).await;
    let preview =
        json(s.call(reqwest::Method::POST, "/api/billing/seats", "t1", Some(json!({"quantity": 4}))).await)
            .await;
    // The portal changes the seats meanwhile.
    let sub = s.app.tenant("t1").await.stripe_subscription_id.unwrap();
    let item = s.get(&format!("/v1/subscriptions/{sub}"), &[]).await["items"]["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post(
        &format!("/v1/subscriptions/{sub}"),
        &[("items[0][id]", &item), ("items[0][quantity]", "6"), ("proration_behavior", "always_invoice")],
    )
    .await;
    let r = s
        .call(
            reqwest::Method::POST,
            "/api/billing/seats",
            "t1",
            Some(json!({"quote_id": preview["quote_id"], "confirm": true})),
        )
        .await;
    error_of(r, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn team_to_business_keeps_the_seats_and_the_interval() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.subscribed("t1", 4).await;
    let preview = json(
        s.call(reqwest::Method::POST, "/api/billing/upgrade", "t1", Some(json!({"tier": "business"}))).await,
    )
    .await;
    assert!(preview["amount_due"].as_i64().unwrap() > 0);
    let done = s
        .call(
            reqwest::Method::POST,
            "/api/billing/upgrade",
            "t1",
            Some(json!({"quote_id": preview["quote_id"], "confirm": true})),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    s.deliver_all(&customer).await;
    let row = s.app.tenant("t1").await;
    assert_eq!(
        (row.plan_tier.as_str(), row.stripe_seat_count, row.stripe_interval.as_deref()),
        ("business", Some(4), Some("month"))
    );
    assert_eq!(row.stripe_price_id.as_deref(), Some(s.prices.business_monthly.as_str()));
    error_of(
        s.call(reqwest::Method::POST, "/api/billing/upgrade", "t1", Some(json!({"tier": "business"}))).await,
        StatusCode::CONFLICT,
    )
    .await;
    error_of(
        s.call(reqwest::Method::POST, "/api/billing/upgrade", "t1", Some(json!({"tier": "team"}))).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn the_portal_answers_a_new_url_every_call_and_needs_a_customer() {
    let s = spawn_with_stripe().await;
    s.post("/v1/billing_portal/configurations", &[("features[invoice_history][enabled]", "true")]).await;
    s.app.put_tenant("free", &json!({"name": "Free"})).await;
    error_of(s.call(reqwest::Method::POST, "/api/billing/portal", "free", None).await, StatusCode::CONFLICT)
        .await;
    s.subscribed("t1", 2).await;
    let a = json(s.call(reqwest::Method::POST, "/api/billing/portal", "t1", None).await).await;
    let b = json(s.call(reqwest::Method::POST, "/api/billing/portal", "t1", None).await).await;
    assert_ne!(a["url"], b["url"]);
    let page = s.app.client.get(a["url"].as_str().unwrap()).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("http://billing.test/billing"), "the portal returns to /billing");
}

#[tokio::test]
async fn a_failed_renewal_keeps_access_through_grace_then_the_grace_job_revokes_it() {
    let s = spawn_with_stripe().await;
    let (customer, clock) = s.subscribed("t1", 2).await;
    let sub = s.app.tenant("t1").await.stripe_subscription_id.unwrap();
    s.post(&format!("/v1/subscriptions/{sub}"), &[("default_payment_method", "pm_card_chargeCustomerFail")])
        .await;
    let end = s.app.tenant("t1").await.stripe_current_period_end.unwrap();
    s.advance(&clock, end + 3600 + 60).await;
    s.deliver_all(&customer).await;
    s.app.clock.set(end + 3600 + 60);
    let status = json(s.app.status("t1").await).await;
    assert_eq!(status["subscription_status"], "past_due");
    assert_eq!(status["plan_tier"], "team");
    assert!(status["access"]["grace_ends_at"].is_string(), "access is kept until the grace end");
    assert_eq!(s.app.run_job("grace-expiry").await, 0, "within grace nothing is revoked");
    s.app.clock.set(end + 3600 + 7 * DAY);
    assert_eq!(s.app.run_job("grace-expiry").await, 1);
    assert_eq!(s.app.run_job("grace-expiry").await, 0, "idempotent");
    let status = json(s.app.status("t1").await).await;
    assert_eq!(status["plan_tier"], "free");
    assert_eq!(status["access"]["reason"], "past_due_grace_ended");
    let audit = s.app.db.audit_log("t1").await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.actor == "job:grace-expiry").count(), 1);
    // A later sync agrees with the job (no flip back to team).
    s.deliver_all(&customer).await;
    s.app.state.reconcile(Some("t1"), "test").await.unwrap();
    assert_eq!(s.app.tenant("t1").await.plan_tier, "free");
}

#[tokio::test]
async fn a_cancellation_keeps_access_until_the_period_end_then_the_period_end_job_tidies() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.subscribed("t1", 2).await;
    let sub = s.app.tenant("t1").await.stripe_subscription_id.unwrap();
    s.post(&format!("/v1/subscriptions/{sub}"), &[("cancel_at_period_end", "true")]).await;
    s.deliver_all(&customer).await;
    let end = s.app.tenant("t1").await.stripe_current_period_end.unwrap();
    let status = json(s.app.status("t1").await).await;
    assert_eq!(
        (status["plan_tier"].as_str(), status["cancel_at_period_end"].as_bool()),
        (Some("team"), Some(true))
    );
    // Deleted on Stripe now; still paid until the period end here.
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/subscriptions/{sub}", s.sim().base_url))
        .bearer_auth("sk_test_fake_harness")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    s.deliver_all(&customer).await;
    s.app.clock.set(end - 1);
    assert_eq!(json(s.app.status("t1").await).await["plan_tier"], "team");
    assert_eq!(s.app.run_job("period-end").await, 0);
    s.app.clock.set(end);
    assert_eq!(s.app.run_job("period-end").await, 1);
    assert_eq!(json(s.app.status("t1").await).await["plan_tier"], "free");
}

#[tokio::test]
async fn two_instances_running_the_jobs_at_once_do_each_tenant_once() {
    let s = spawn_with_stripe().await;
    for i in 0..6 {
        let t = format!("t{i}");
        s.app.put_tenant(&t, &json!({"name": t})).await;
        s.app.store_subscription(&t, "team", "canceled", START + DAY).await;
    }
    s.app.clock.set(START + 2 * DAY);
    let other = crate::helpers::spawn_app_on(s.app.shared_db(), s.app.clock.clone(), |_| {}).await;
    let (a, b) = tokio::join!(s.app.run_job("period-end"), other.run_job("period-end"));
    assert_eq!(a + b, 6, "every tenant done exactly once between the two");
    let audits: Vec<(i64,)> = hydra_billing::with_db!(&s.app.db, |pool| {
        sqlx::query_as("SELECT COUNT(*) FROM billing_audit_log WHERE actor = 'job:period-end'")
            .fetch_all(pool)
            .await
    })
    .unwrap();
    assert_eq!(audits[0].0, 6);
}

#[tokio::test]
async fn a_route_gated_on_jira_lets_business_through_and_explains_refusals() {
    use axum::routing::get;
    let s = spawn_with_stripe().await;
    let router = axum::Router::new()
        .route(
            "/jira",
            get(|gate: hydra_billing::http::gate::RequireFeature<hydra_billing::http::gate::Jira>| async move {
                gate.tenant_id
            }),
        )
        .with_state(s.app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let get_as = |tenant: &str| {
        s.app.client.get(format!("{base}/jira")).bearer_auth(s.app.tenant_token(tenant)).send()
    };
    s.app.put_tenant("biz", &json!({"name": "B"})).await;
    s.app.store_subscription("biz", "business", "active", START + 30 * DAY).await;
    assert_eq!(get_as("biz").await.unwrap().text().await.unwrap(), "biz");
    s.app.put_tenant("team", &json!({"name": "T"})).await;
    s.app.store_subscription("team", "team", "active", START + 30 * DAY).await;
    let e = error_of(get_as("team").await.unwrap(), StatusCode::PAYMENT_REQUIRED).await;
    assert_eq!(
        (e["code"].as_str(), e["feature"].as_str(), e["required_tier"].as_str()),
        (Some("feature_not_in_plan"), Some("jira"), Some("business"))
    );
    assert_eq!(e["upgrade_url"], "http://billing.test/billing/upgrade");
    s.app.put_tenant("lapsed", &json!({"name": "L"})).await;
    s.app.store_subscription("lapsed", "business", "unpaid", START + 30 * DAY).await;
    let e = error_of(get_as("lapsed").await.unwrap(), StatusCode::PAYMENT_REQUIRED).await;
    assert_eq!((e["code"].as_str(), e["reason"].as_str()), (Some("subscription_required"), Some("unpaid")));
    error_of(s.app.client.get(format!("{base}/jira")).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn stripe_calling_endpoints_are_rate_limited_per_tenant() {
    let s = spawn_with_stripe().await;
    s.app.put_tenant("t1", &json!({"name": "Acme"})).await;
    let mut last = None;
    for _ in 0..61 {
        last = Some(s.call(reqwest::Method::POST, "/api/billing/portal", "t1", None).await);
    }
    let r = last.unwrap();
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    let e = error_of(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(e["code"], "rate_limited");
    // Another tenant has its own budget.
    error_of(s.call(reqwest::Method::POST, "/api/billing/portal", "t2", None).await, StatusCode::CONFLICT)
        .await;
}

#[tokio::test]
async fn with_billing_disabled_changes_answer_503_but_the_portal_stays_up() {
    let s = crate::helpers::spawn_with_stripe_and(|env| {
        env.insert("BILLING_ENABLED".into(), "false".into());
    })
    .await;
    s.app.put_tenant("t1", &json!({"name": "Acme"})).await;
    let e =
        error_of(s.checkout("t1", &s.prices.team_monthly, 1).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(e["code"], "billing_disabled");
    error_of(
        s.call(reqwest::Method::POST, "/api/billing/seats", "t1", Some(json!({"quantity": 2}))).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    // The portal is refused only for want of a customer, not for the switch.
    error_of(s.call(reqwest::Method::POST, "/api/billing/portal", "t1", None).await, StatusCode::CONFLICT)
        .await;
}
