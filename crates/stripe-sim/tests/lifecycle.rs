//! The simulator through its HTTP API, as a Stripe client sees it: wire format, errors,
//! idempotency, API versions, Checkout, proration, test-clock renewals with failing and 3-D Secure
//! cards, cancellation, signed webhook deliveries with retries, chaos, and the hosted pages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use stripe_sim::{Chaos, SimSettings, Simulator};
use tokio::sync::Mutex;

const KEY: &str = "sk_test_fake_simulator";
const DAY: i64 = 86_400;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

struct Client {
    http: reqwest::Client,
    base: String,
    version: Option<&'static str>,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, &str)],
        key: Option<&str>,
    ) -> (StatusCode, Value, HeaderMap) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(KEY);
        if method == reqwest::Method::GET {
            req = req.query(params);
        } else {
            req = req.form(params);
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        if let Some(v) = self.version {
            req = req.header("stripe-version", v);
        }
        let r = req.send().await.unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let headers = r.headers().clone();
        (status, r.json().await.unwrap(), headers)
    }

    async fn post(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let (status, body, _) = self.call(reqwest::Method::POST, path, params, None).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {body}");
        body
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let (status, body, _) = self.call(reqwest::Method::GET, path, params, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn error(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let (status, body, _) = self.call(method, path, params, None).await;
        (status, body["error"].clone())
    }
}

/// A webhook receiver that verifies each signature itself (not with the simulator's code) and
/// records verified events; `fail_first` answers 500 to the first delivery of each event.
#[derive(Default)]
struct Receiver {
    events: Vec<Value>,
    rejected: usize,
    fail_first: bool,
    seen: std::collections::HashSet<String>,
    /// The first delivery exactly as received: signature header and raw body.
    raw: Option<(String, Vec<u8>)>,
}

fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    sigs.contains(&expected)
}

struct Setup {
    sim: Simulator,
    secret: String,
    client: Client,
    receiver: Arc<Mutex<Receiver>>,
    team_monthly: String,
    business_monthly: String,
    team_annual: String,
}

async fn setup_with(settings: SimSettings, fail_first: bool) -> Setup {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), settings).await.unwrap();
    let client = Client { http: reqwest::Client::new(), base: sim.base_url.clone(), version: None };
    let receiver = Arc::new(Mutex::new(Receiver { fail_first, ..Receiver::default() }));
    let secret: Arc<Mutex<String>> = Arc::default();
    let app = {
        let (receiver, secret) = (receiver.clone(), secret.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (receiver, secret) = (receiver.clone(), secret.clone());
                async move {
                    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                    let mut r = receiver.lock().await;
                    if r.raw.is_none() {
                        r.raw = Some((header.to_owned(), body.to_vec()));
                    }
                    if !verify(&secret.lock().await, header, &body) {
                        r.rejected += 1;
                        return StatusCode::BAD_REQUEST;
                    }
                    let event: Value = serde_json::from_slice(&body).unwrap();
                    let id = event["id"].as_str().unwrap().to_owned();
                    if r.fail_first && r.seen.insert(id) {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    r.events.push(event);
                    StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint =
        client.post("/v1/webhook_endpoints", &[("url", &hook_url), ("enabled_events[]", "*")]).await;
    *secret.lock().await = endpoint["secret"].as_str().unwrap().to_owned();
    let secret = endpoint["secret"].as_str().unwrap().to_owned();

    let team = client.post("/v1/products", &[("name", "Hydra Team")]).await;
    let business = client.post("/v1/products", &[("name", "Hydra Business")]).await;
    let price = |product: &Value, amount: &'static str, interval: &'static str, key: &'static str| {
        let product = product["id"].as_str().unwrap().to_owned();
        let client = &client;
        async move {
            client
                .post(
                    "/v1/prices",
                    &[
                        ("product", &product),
                        ("unit_amount", amount),
                        ("currency", "usd"),
                        ("recurring[interval]", interval),
                        ("lookup_key", key),
                    ],
                )
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let team_monthly = price(&team, "2000", "month", "team_monthly").await;
    let team_annual = price(&team, "19200", "year", "team_annual").await;
    let business_monthly = price(&business, "4000", "month", "business_monthly").await;
    Setup { sim, secret, client, receiver, team_monthly, business_monthly, team_annual }
}

async fn setup() -> Setup {
    setup_with(SimSettings::default(), false).await
}

impl Setup {
    /// A customer on a fresh test clock at T0, with `card` as its default payment method.
    async fn customer_on_clock(&self, card: &str) -> (String, String) {
        let clock =
            self.client.post("/v1/test_helpers/test_clocks", &[("frozen_time", &T0.to_string())]).await;
        let clock = clock["id"].as_str().unwrap().to_owned();
        let customer = self
            .client
            .post(
                "/v1/customers",
                &[
                    ("email", "ap@acme.test"),
                    ("test_clock", &clock),
                    ("payment_method", card),
                    ("metadata[hydra_tenant_id]", "t1"),
                ],
            )
            .await;
        (customer["id"].as_str().unwrap().to_owned(), clock)
    }

    /// A Team monthly subscription paid with 4242 at signup, whose customer then switches its
    /// default card to `card` (0341 and 3184 attach fine and fail later).
    async fn subscribed_then_failing_over_to(&self, card: &str) -> (String, Value) {
        let (customer, clock) = self.customer_on_clock("pm_card_visa").await;
        let sub = self.subscribe(&customer, &self.team_monthly, "1").await;
        self.client
            .post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", card)])
            .await;
        (clock, sub)
    }

    /// A subscription-mode Checkout Session for Team monthly, with `extra` parameters.
    async fn session(&self, extra: &[(&str, &str)]) -> Value {
        let mut params = vec![("mode", "subscription"), ("line_items[0][price]", self.team_monthly.as_str())];
        params.extend_from_slice(extra);
        self.client.post("/v1/checkout/sessions", &params).await
    }

    /// A portal configuration letting customers switch to `price` (on its product).
    async fn portal_configuration(&self, price: &str) -> Value {
        let product = s(&self.client.get(&format!("/v1/prices/{price}"), &[]).await["product"]);
        self.client
            .post(
                "/v1/billing_portal/configurations",
                &[
                    ("features[subscription_update][enabled]", "true"),
                    ("features[subscription_update][products][0][product]", &product),
                    ("features[subscription_update][products][0][prices][0]", price),
                ],
            )
            .await
    }

    async fn subscribe(&self, customer: &str, price: &str, quantity: &str) -> Value {
        self.client
            .post(
                "/v1/subscriptions",
                &[
                    ("customer", customer),
                    ("items[0][price]", price),
                    ("items[0][quantity]", quantity),
                    ("billing_mode[type]", "classic"),
                ],
            )
            .await
    }

    async fn advance(&self, clock: &str, to: i64) {
        let c = self
            .client
            .post(
                &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
                &[("frozen_time", &to.to_string())],
            )
            .await;
        assert_eq!(c["status"], "advancing");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.client.get(&format!("/v1/test_helpers/test_clocks/{clock}"), &[]).await["status"]
            != "ready"
        {
            assert!(Instant::now() < deadline, "clock never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the receiver holds an event of `kind` matching `pred`; returns it.
    async fn event(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.receiver.lock().await.events.iter().find(|e| e["type"] == kind && pred(e)) {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "no {kind} event delivered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn count(&self, kind: &str, object: &str) -> usize {
        self.receiver
            .lock()
            .await
            .events
            .iter()
            .filter(|e| e["type"] == kind && e["data"]["object"]["id"] == object)
            .count()
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn requests_without_a_test_key_and_bad_parameters_get_stripes_errors() {
    let t = setup().await;
    let r = t.client.http.get(format!("{}/v1/customers", t.sim.base_url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = t
        .client
        .http
        .get(format!("{}/v1/customers", t.sim.base_url))
        .bearer_auth("sk_live_fake_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        !body["error"]["message"].as_str().unwrap().contains("sk_live_fake_nope"),
        "the key is never echoed"
    );
    let (status, e) = t.client.error(reqwest::Method::GET, "/v1/customers/cus_missing", &[]).await;
    assert_eq!(
        (status, e["type"].as_str(), e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("invalid_request_error"), Some("resource_missing"))
    );
    let (status, e) = t.client.error(reqwest::Method::POST, "/v1/prices", &[("currency", "usd")]).await;
    assert_eq!(
        (status, e["code"].as_str(), e["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("parameter_missing"), Some("product"))
    );
    let (status, e) = t
        .client
        .error(
            reqwest::Method::POST,
            "/v1/subscriptions",
            &[("customer", "cus_nope"), ("items[0][price]", "p")],
        )
        .await;
    assert_eq!((status, e["param"].as_str()), (StatusCode::BAD_REQUEST, Some("customer")));
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_and_refuses_other_parameters() {
    let t = setup().await;
    let (s1, first, _) =
        t.client.call(reqwest::Method::POST, "/v1/customers", &[("email", "a@b.test")], Some("k-1")).await;
    let (s2, again, headers) =
        t.client.call(reqwest::Method::POST, "/v1/customers", &[("email", "a@b.test")], Some("k-1")).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(
        t.client.get("/v1/customers", &[("email", "a@b.test")]).await["data"].as_array().unwrap().len(),
        1
    );
    let (status, body, _) = t
        .client
        .call(reqwest::Method::POST, "/v1/customers", &[("email", "other@b.test")], Some("k-1"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "idempotency_error");
}

#[tokio::test]
async fn prices_are_found_by_lookup_key() {
    let t = setup().await;
    let found = t
        .client
        .get("/v1/prices", &[("lookup_keys[]", "team_monthly"), ("lookup_keys[]", "business_monthly")])
        .await;
    let mut ids: Vec<String> = found["data"].as_array().unwrap().iter().map(|p| s(&p["id"])).collect();
    ids.sort();
    let mut want = vec![t.team_monthly.clone(), t.business_monthly.clone()];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn checkout_with_a_good_card_creates_an_active_subscription_and_signed_events() {
    let t = setup().await;
    let customer = t.client.post("/v1/customers", &[("email", "ap@acme.test")]).await;
    let session = t
        .client
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", customer["id"].as_str().unwrap()),
                ("client_reference_id", "t1"),
                ("line_items[0][price]", &t.team_monthly),
                ("line_items[0][quantity]", "3"),
                ("line_items[0][adjustable_quantity][enabled]", "true"),
                ("line_items[0][adjustable_quantity][minimum]", "1"),
                ("line_items[0][adjustable_quantity][maximum]", "500"),
                ("success_url", "http://app.test/billing/success?session_id={CHECKOUT_SESSION_ID}"),
                ("cancel_url", "http://app.test/billing/upgrade"),
                ("subscription_data[metadata][hydra_tenant_id]", "t1"),
                ("subscription_data[billing_mode][type]", "classic"),
            ],
        )
        .await;
    assert_eq!(
        (session["status"].as_str(), session["payment_status"].as_str()),
        (Some("open"), Some("unpaid"))
    );
    assert!(session["url"].as_str().unwrap().starts_with(&t.sim.base_url));
    let id = s(&session["id"]);
    let done = t
        .client
        .post(
            &format!("/v1/test_helpers/checkout/sessions/{id}/complete"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!((done["status"].as_str(), done["payment_status"].as_str()), (Some("complete"), Some("paid")));
    assert!(done["url"].is_null());
    let sub = t.client.get(&format!("/v1/subscriptions/{}", s(&done["subscription"])), &[]).await;
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["items"]["data"][0]["quantity"], 3);
    assert_eq!(sub["metadata"]["hydra_tenant_id"], "t1");
    assert_eq!(sub["billing_mode"]["type"], "classic");
    let invoice = t.client.get(&format!("/v1/invoices/{}", s(&done["invoice"])), &[]).await;
    assert_eq!((invoice["status"].as_str(), invoice["amount_paid"].as_i64()), (Some("paid"), Some(6000)));
    assert_eq!(invoice["billing_reason"], "subscription_create");
    // Every event arrives signed; the receiver verified each signature itself.
    let completed = t.event("checkout.session.completed", |e| e["data"]["object"]["id"] == id.as_str()).await;
    assert_eq!(completed["data"]["object"]["client_reference_id"], "t1");
    t.event("invoice.paid", |e| e["data"]["object"]["id"] == done["invoice"]).await;
    t.event("customer.subscription.created", |e| e["data"]["object"]["id"] == done["subscription"]).await;
    assert_eq!(t.receiver.lock().await.rejected, 0);
}

#[tokio::test]
async fn a_declined_card_at_checkout_leaves_the_session_open_and_creates_nothing() {
    let t = setup().await;
    let session = t.session(&[("success_url", "http://app.test/ok")]).await;
    let id = s(&session["id"]);
    let (status, e) = t
        .client
        .error(
            reqwest::Method::POST,
            &format!("/v1/test_helpers/checkout/sessions/{id}/complete"),
            &[("payment_method", "pm_card_chargeDeclined")],
        )
        .await;
    assert_eq!(
        (status, e["type"].as_str(), e["decline_code"].as_str()),
        (StatusCode::PAYMENT_REQUIRED, Some("card_error"), Some("generic_decline"))
    );
    assert_eq!(t.client.get(&format!("/v1/checkout/sessions/{id}"), &[]).await["status"], "open");
    assert!(
        t.client.get("/v1/subscriptions", &[("status", "all")]).await["data"].as_array().unwrap().is_empty()
    );
    // Expiring it: expired, no URL, and an event.
    let expired = t.client.post(&format!("/v1/checkout/sessions/{id}/expire"), &[]).await;
    assert_eq!(expired["status"], "expired");
    t.event("checkout.session.expired", |e| e["data"]["object"]["id"] == id.as_str()).await;
}

#[tokio::test]
async fn a_proration_preview_equals_the_invoice_of_the_update_with_the_same_date() {
    let t = setup().await;
    let (customer, clock) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "3").await;
    assert_eq!(sub["status"], "active");
    let item = s(&sub["items"]["data"][0]["id"]);
    // Eleven days and a bit into a 31-day January.
    t.advance(&clock, T0 + 11 * DAY + 3_777).await;
    let at = (T0 + 11 * DAY + 3_777).to_string();
    let sub_id = s(&sub["id"]);
    let preview = t
        .client
        .post(
            "/v1/invoices/create_preview",
            &[
                ("subscription", &sub_id),
                ("subscription_details[items][0][id]", &item),
                ("subscription_details[items][0][quantity]", "5"),
                ("subscription_details[proration_date]", &at),
                ("subscription_details[proration_behavior]", "always_invoice"),
            ],
        )
        .await;
    let lines = preview["lines"]["data"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        preview["parent"]["subscription_details"]["subscription_proration_date"].as_i64(),
        Some(T0 + 11 * DAY + 3_777)
    );
    let (left, len) = (31 * DAY - 11 * DAY - 3_777, 31 * DAY);
    let expected =
        -stripe_sim::billing::prorate(6000, left, len) + stripe_sim::billing::prorate(10000, left, len);
    assert_eq!(preview["amount_due"].as_i64(), Some(expected));
    // Later, the update with the preview's date charges exactly the preview.
    t.advance(&clock, T0 + 11 * DAY + 4_000).await;
    let updated = t
        .client
        .post(
            &format!("/v1/subscriptions/{sub_id}"),
            &[
                ("items[0][id]", &item),
                ("items[0][quantity]", "5"),
                ("proration_behavior", "always_invoice"),
                ("proration_date", &at),
                ("payment_behavior", "pending_if_incomplete"),
            ],
        )
        .await;
    assert_eq!(updated["items"]["data"][0]["quantity"], 5);
    let invoice = t.client.get(&format!("/v1/invoices/{}", s(&updated["latest_invoice"])), &[]).await;
    assert_eq!(invoice["billing_reason"], "subscription_update");
    assert_eq!(invoice["amount_paid"], preview["amount_due"]);
    assert_eq!(invoice["status"], "paid");
}

#[tokio::test]
async fn changing_the_price_without_a_quantity_resets_it_to_one() {
    let t = setup().await;
    let (customer, _) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "4").await;
    let item = s(&sub["items"]["data"][0]["id"]);
    let updated = t
        .client
        .post(
            &format!("/v1/subscriptions/{}", s(&sub["id"])),
            &[
                ("items[0][id]", &item),
                ("items[0][price]", &t.business_monthly),
                ("proration_behavior", "none"),
            ],
        )
        .await;
    assert_eq!(updated["items"]["data"][0]["quantity"], 1);
    // The legacy plan follows the new price: the plan view of it, not the price object.
    let price = t.client.get(&format!("/v1/prices/{}", t.business_monthly), &[]).await;
    for plan in [&updated["items"]["data"][0]["plan"], &updated["plan"]] {
        assert_eq!(plan["object"], "plan", "{plan}");
        assert_eq!(plan["id"], price["id"]);
        assert_eq!(plan["amount"], price["unit_amount"], "the plan's amount is the price's");
        assert_eq!(plan["interval"], price["recurring"]["interval"]);
    }

    assert_eq!(updated["items"]["data"][0]["price"]["id"], t.business_monthly.as_str());
    let event = t.event("customer.subscription.updated", |e| e["data"]["object"]["id"] == sub["id"]).await;
    assert_eq!(event["data"]["previous_attributes"]["items"]["data"][0]["quantity"], 4);
}

#[tokio::test]
async fn a_test_clock_renews_a_subscription_with_a_good_card() {
    let t = setup().await;
    let (customer, clock) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_annual, "2").await;
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    assert_eq!(end, T0 + 365 * DAY, "an annual period ends a year on");
    t.advance(&clock, end + 2 * 3600).await;
    let renewed = t.client.get(&format!("/v1/subscriptions/{}", s(&sub["id"])), &[]).await;
    assert_eq!(renewed["status"], "active");
    assert_eq!(renewed["items"]["data"][0]["current_period_start"].as_i64(), Some(end));
    let invoice = t.client.get(&format!("/v1/invoices/{}", s(&renewed["latest_invoice"])), &[]).await;
    assert_eq!(
        (invoice["billing_reason"].as_str(), invoice["status"].as_str(), invoice["amount_paid"].as_i64()),
        (Some("subscription_cycle"), Some("paid"), Some(38400))
    );
    let paid = t.event("invoice.paid", |e| e["data"]["object"]["id"] == invoice["id"]).await;
    assert_eq!(paid["created"].as_i64(), Some(end + 3600), "events carry the clock's time");
}

#[tokio::test]
async fn a_failing_card_goes_past_due_retries_on_schedule_then_cancels() {
    let t = setup().await;
    let (clock, sub) = t.subscribed_then_failing_over_to("pm_card_chargeCustomerFail").await;
    let sub_id = s(&sub["id"]);
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    t.advance(&clock, end + 3600).await;
    let past_due = t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(past_due["status"], "past_due");
    let invoice_id = s(&past_due["latest_invoice"]);
    let invoice = t.client.get(&format!("/v1/invoices/{invoice_id}"), &[]).await;
    assert_eq!((invoice["status"].as_str(), invoice["attempt_count"].as_i64()), (Some("open"), Some(1)));
    assert_eq!(invoice["next_payment_attempt"].as_i64(), Some(end + 3600 + DAY));
    // Every retry fails and says so; after the last one the subscription is canceled.
    t.advance(&clock, end + 3600 + 7 * DAY + 60).await;
    let canceled = t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["cancellation_details"]["reason"], "payment_failed");
    t.event("customer.subscription.deleted", |e| e["data"]["object"]["id"] == sub_id.as_str()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.count("invoice.payment_failed", &invoice_id).await < 5 {
        assert!(Instant::now() < deadline, "expected one invoice.payment_failed per attempt (5)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let updated =
        t.event("customer.subscription.updated", |e| e["data"]["object"]["status"] == "past_due").await;
    assert_eq!(updated["data"]["previous_attributes"]["status"], "active");
}

#[tokio::test]
async fn a_renewal_on_an_always_authenticate_card_asks_for_action_until_authenticated() {
    let t = setup().await;
    let (clock, sub) = t.subscribed_then_failing_over_to("pm_card_authenticationRequired").await;
    let sub_id = s(&sub["id"]);
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    t.advance(&clock, end + 3600).await;
    let sub_now = t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(sub_now["status"], "past_due");
    let invoice = t
        .client
        .get(&format!("/v1/invoices/{}", s(&sub_now["latest_invoice"])), &[("expand[]", "payments")])
        .await;
    assert!(invoice["next_payment_attempt"].is_null(), "authentication failures are not retried");
    t.event("invoice.payment_action_required", |e| e["data"]["object"]["id"] == invoice["id"]).await;
    let pi = s(&invoice["payments"]["data"][0]["payment"]["payment_intent"]);
    assert_eq!(t.client.get(&format!("/v1/payment_intents/{pi}"), &[]).await["status"], "requires_action");
    let done = t
        .client
        .post(&format!("/v1/test_helpers/payment_intents/{pi}/authenticate"), &[("outcome", "succeed")])
        .await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["status"], "active");
    t.event("invoice.paid", |e| e["data"]["object"]["id"] == invoice["id"]).await;
}

#[tokio::test]
async fn cancel_at_period_end_ends_the_subscription_at_the_period_end() {
    let t = setup().await;
    let (customer, clock) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "1").await;
    let sub_id = s(&sub["id"]);
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    let scheduled =
        t.client.post(&format!("/v1/subscriptions/{sub_id}"), &[("cancel_at_period_end", "true")]).await;
    assert_eq!((scheduled["status"].as_str(), scheduled["cancel_at"].as_i64()), (Some("active"), Some(end)));
    t.advance(&clock, end - 1).await;
    assert_eq!(t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["status"], "active");
    t.advance(&clock, end + 1).await;
    let ended = t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!((ended["status"].as_str(), ended["ended_at"].as_i64()), (Some("canceled"), Some(end)));
    assert_eq!(ended["cancellation_details"]["reason"], "cancellation_requested");
    t.event("customer.subscription.deleted", |e| e["data"]["object"]["id"] == sub_id.as_str()).await;
    let invoices = t.client.get("/v1/invoices", &[("subscription", &sub_id)]).await;
    assert_eq!(invoices["data"].as_array().unwrap().len(), 1, "no renewal invoice");
}

#[tokio::test]
async fn a_first_payment_that_fails_leaves_an_incomplete_subscription_that_expires_after_23_hours() {
    let t = setup().await;
    let (customer, clock) = t.customer_on_clock("pm_card_chargeCustomerFail").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "1").await;
    assert_eq!(sub["status"], "incomplete");
    t.advance(&clock, T0 + 23 * 3600 + 1).await;
    let expired = t.client.get(&format!("/v1/subscriptions/{}", s(&sub["id"])), &[]).await;
    assert_eq!(expired["status"], "incomplete_expired");
    let invoice = t.client.get(&format!("/v1/invoices/{}", s(&expired["latest_invoice"])), &[]).await;
    assert_eq!(invoice["status"], "void");
    // A card that declines cannot even be attached.
    let (status, e) = t
        .client
        .error(
            reqwest::Method::POST,
            "/v1/payment_methods/pm_card_chargeDeclined/attach",
            &[("customer", &customer)],
        )
        .await;
    assert_eq!((status, e["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("card_declined")));
}

#[tokio::test]
async fn both_api_shapes_are_served_by_stripe_version() {
    let t = setup().await;
    let (customer, _) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "1").await;
    let invoice_id = s(&sub["latest_invoice"]);
    assert!(sub.get("current_period_end").is_none_or(Value::is_null), "current shape: periods live on items");
    let legacy =
        Client { http: reqwest::Client::new(), base: t.sim.base_url.clone(), version: Some("2024-06-20") };
    let old_sub = legacy.get(&format!("/v1/subscriptions/{}", s(&sub["id"])), &[]).await;
    assert_eq!(old_sub["current_period_end"], sub["items"]["data"][0]["current_period_end"]);
    let old_invoice = legacy.get(&format!("/v1/invoices/{invoice_id}"), &[]).await;
    assert_eq!(old_invoice["subscription"], sub["id"]);
    let current_invoice = t.client.get(&format!("/v1/invoices/{invoice_id}"), &[]).await;
    assert_eq!(current_invoice["parent"]["subscription_details"]["subscription"], sub["id"]);
}

#[tokio::test]
async fn a_delivery_answered_with_an_error_is_retried_until_accepted() {
    let t = setup_with(SimSettings::default(), true).await;
    let customer = t.client.post("/v1/customers", &[("email", "r@acme.test")]).await;
    t.event("customer.created", |e| e["data"]["object"]["id"] == customer["id"]).await;
    // The receiver holds the event before the deliverer has recorded the 200 it got back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempts = t.sim.attempts().await;
        let for_it: Vec<_> = attempts.iter().filter(|a| a.event_type == "customer.created").collect();
        if for_it.iter().any(|a| a.status == Some(500)) && for_it.iter().any(|a| a.status == Some(200)) {
            break;
        }
        assert!(Instant::now() < deadline, "a failed then an accepted delivery: {for_it:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn chaos_duplicates_delays_and_drops_first_attempts_but_delivers_everything() {
    for seed in [1_u64, 2, 3] {
        let t =
            setup_with(SimSettings { chaos: Some(Chaos::with_seed(seed)), ..SimSettings::default() }, false)
                .await;
        let mut customers = Vec::new();
        for i in 0..12 {
            customers
                .push(s(
                    &t.client.post("/v1/customers", &[("email", &format!("c{i}@acme.test"))]).await["id"],
                ));
        }
        for c in &customers {
            t.event("customer.created", |e| e["data"]["object"]["id"] == c.as_str()).await;
        }
        // What chaos did is counted as it is decided (a seed gives the same decisions); the
        // attempts themselves may still be in flight.
        let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert!(count(&t.sim.shared.chaos_dropped) > 0, "seed {seed}: some first attempts dropped");
        assert!(count(&t.sim.shared.chaos_duplicates) > 0, "seed {seed}: some deliveries duplicated");
        // Every dropped first attempt was retried: each event arrived although its first try failed.
        let attempts = t.sim.attempts().await;
        let dropped: Vec<&str> =
            attempts.iter().filter(|a| a.status.is_none()).map(|a| a.event.as_str()).collect();
        for event in dropped {
            let delivered = |a: &stripe_sim::Attempt| a.event == event && a.status == Some(200);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !t.sim.attempts().await.iter().any(delivered) {
                assert!(Instant::now() < deadline, "seed {seed}: {event} was dropped and never redelivered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn the_hosted_checkout_page_pays_and_redirects_to_the_success_url() {
    let t = setup().await;
    let session = t.session(&[("success_url", "http://app.test/ok?session_id={CHECKOUT_SESSION_ID}")]).await;
    let url = s(&session["url"]);
    let page = t.client.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Subscribe") && page.contains("4242"), "{page}");
    // What is bought and what it costs, before paying.
    let price = t.client.get(&format!("/v1/prices/{}", t.team_monthly), &[]).await;
    let product = t.client.get(&format!("/v1/products/{}", s(&price["product"])), &[]).await;
    assert!(page.contains(&format!("<h2>{}</h2>", s(&product["name"]))), "the product is named: {page}");
    let unit = price["unit_amount"].as_i64().unwrap();
    let total = format!("Total due today: ${}.{:02} for 1 seat", unit / 100, unit % 100);
    assert!(page.contains(&total), "{total} in {page}");
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // A 3-D Secure card first shows the challenge.
    let challenge = no_redirect
        .post(&url)
        .form(&[("card", "pm_card_authenticationRequiredOnSetup")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(challenge.contains("Complete authentication"));
    let r = no_redirect
        .post(&url)
        .form(&[("card", "pm_card_authenticationRequiredOnSetup"), ("auth", "succeed")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        format!("http://app.test/ok?session_id={}", s(&session["id"])).as_str()
    );
    let done = t.client.get(&format!("/v1/checkout/sessions/{}", s(&session["id"])), &[]).await;
    assert_eq!(done["status"], "complete");
    let sub = t.client.get(&format!("/v1/subscriptions/{}", s(&done["subscription"])), &[]).await;
    assert_eq!(sub["status"], "active", "3-D Secure passed on the page: the first payment went through");
}

#[tokio::test]
async fn the_hosted_portal_changes_seats_and_schedules_cancellation() {
    let t = setup().await;
    let (customer, _) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "2").await;
    let sub_id = s(&sub["id"]);
    let product = s(&t.client.get(&format!("/v1/prices/{}", t.team_monthly), &[]).await["product"]);
    t.client
        .post(
            "/v1/billing_portal/configurations",
            &[
                ("features[subscription_update][enabled]", "true"),
                ("features[subscription_update][products][0][product]", &product),
                ("features[subscription_update][products][0][prices][0]", &t.team_monthly),
                ("features[subscription_cancel][enabled]", "true"),
                ("features[subscription_cancel][mode]", "at_period_end"),
            ],
        )
        .await;
    let session = t
        .client
        .post(
            "/v1/billing_portal/sessions",
            &[("customer", &customer), ("return_url", "http://app.test/billing")],
        )
        .await;
    let url = s(&session["url"]);
    let page = t.client.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Update seats") && page.contains("Invoice history"));
    // Dates as people read them, never Unix seconds.
    assert!(page.contains("Renews on ") && page.contains(" 2026"), "{page}");
    let unix_time = page.split("<li>").skip(1).any(|li| li.bytes().take(10).all(|b| b.is_ascii_digit()));
    assert!(!unix_time, "no Unix time in the invoice history: {page}");
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect
        .post(&url)
        .form(&[("subscription", sub_id.as_str()), ("action", "seats"), ("quantity", "4")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let after = t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(after["items"]["data"][0]["quantity"], 4);
    let invoice = t.client.get(&format!("/v1/invoices/{}", s(&after["latest_invoice"])), &[]).await;
    assert_eq!(
        (invoice["billing_reason"].as_str(), invoice["status"].as_str()),
        (Some("subscription_update"), Some("paid"))
    );
    no_redirect
        .post(&url)
        .form(&[("subscription", sub_id.as_str()), ("action", "cancel")])
        .send()
        .await
        .unwrap();
    assert_eq!(t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["cancel_at_period_end"], true);
    // The payment method form replaces the customer's default card.
    let r = no_redirect
        .post(&url)
        .form(&[("action", "payment_method"), ("card", "pm_card_chargeCustomerFail")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let after = t.client.get(&format!("/v1/customers/{customer}"), &[]).await;
    let pm = s(&after["invoice_settings"]["default_payment_method"]);
    assert_eq!(t.client.get(&format!("/v1/payment_methods/{pm}"), &[]).await["card"]["last4"], "0341");
    let page = t.client.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Card ending in 0341"), "{page}");
}

#[tokio::test]
async fn entitlements_follow_the_live_subscription() {
    let t = setup().await;
    let product = s(&t.client.get(&format!("/v1/prices/{}", t.business_monthly), &[]).await["product"]);
    let feature =
        t.client.post("/v1/entitlements/features", &[("name", "Jira"), ("lookup_key", "jira")]).await;
    t.client
        .post(
            &format!("/v1/products/{product}/features"),
            &[("entitlement_feature", feature["id"].as_str().unwrap())],
        )
        .await;
    let (customer, _) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.business_monthly, "1").await;
    let active = t.client.get("/v1/entitlements/active_entitlements", &[("customer", &customer)]).await;
    assert_eq!(active["data"][0]["lookup_key"], "jira");
    t.event("entitlements.active_entitlement_summary.updated", |e| {
        e["data"]["object"]["customer"] == customer.as_str()
    })
    .await;
    let (status, _, _) = t
        .client
        .call(reqwest::Method::DELETE, &format!("/v1/subscriptions/{}", s(&sub["id"])), &[], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let active = t.client.get("/v1/entitlements/active_entitlements", &[("customer", &customer)]).await;
    assert!(active["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_independent_verifier_accepts_the_simulators_signature_and_refuses_a_tampered_body() {
    let t = setup().await;
    let customer = t.client.post("/v1/customers", &[("email", "v@acme.test")]).await;
    t.event("customer.created", |e| e["data"]["object"]["id"] == customer["id"]).await;
    let (header, body) = t.receiver.lock().await.raw.clone().unwrap();
    assert!(header.starts_with("t=") && header.contains(",v1="), "{header}");
    assert!(verify(&t.secret, &header, &body));
    let mut tampered = body.clone();
    // One flipped bit anywhere in the body breaks the signature.
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    assert!(!verify(&t.secret, &header, &tampered));
    assert!(!verify("whsec_fake_other", &header, &body));
}

#[tokio::test]
async fn when_retries_run_out_the_setting_can_mark_the_subscription_unpaid() {
    let settings = SimSettings {
        billing: stripe_sim::BillingSettings {
            after_retries: stripe_sim::AfterRetries::MarkUnpaid,
            ..Default::default()
        },
        ..SimSettings::default()
    };
    let t = setup_with(settings, false).await;
    let (clock, sub) = t.subscribed_then_failing_over_to("pm_card_chargeCustomerFail").await;
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    t.advance(&clock, end + 3600 + 8 * DAY).await;
    let unpaid = t.client.get(&format!("/v1/subscriptions/{}", s(&sub["id"])), &[]).await;
    assert_eq!(unpaid["status"], "unpaid");
    // Paying the open invoice with a working card makes it active again.
    let invoice = s(&unpaid["latest_invoice"]);
    let paid =
        t.client.post(&format!("/v1/invoices/{invoice}/pay"), &[("payment_method", "pm_card_visa")]).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(t.client.get(&format!("/v1/subscriptions/{}", s(&sub["id"])), &[]).await["status"], "active");
}

#[tokio::test]
async fn events_can_be_listed_and_retrieved_and_ids_expanded() {
    let t = setup().await;
    let customer = t.client.post("/v1/customers", &[("email", "e@acme.test")]).await;
    let listed = t.client.get("/v1/events", &[("type", "customer.created"), ("limit", "1")]).await;
    let event = &listed["data"][0];
    assert_eq!(event["data"]["object"]["id"], customer["id"]);
    assert_eq!(t.client.get(&format!("/v1/events/{}", s(&event["id"])), &[]).await["id"], event["id"]);
    let session = t
        .session(&[("customer", customer["id"].as_str().unwrap()), ("success_url", "http://app.test/ok")])
        .await;
    let id = s(&session["id"]);
    t.client.post(&format!("/v1/test_helpers/checkout/sessions/{id}/complete"), &[]).await;
    let expanded = t
        .client
        .get(
            &format!("/v1/checkout/sessions/{id}"),
            &[("expand[]", "subscription"), ("expand[]", "customer")],
        )
        .await;
    assert_eq!(expanded["subscription"]["object"], "subscription");
    assert_eq!(expanded["customer"]["email"], "e@acme.test");
}

/// Money as Stripe keeps it: a seat decrease billed at once makes a negative invoice whose
/// credit goes to the customer's balance (nothing is paid, no PaymentIntent), and the next
/// invoice uses that credit first.
#[tokio::test]
async fn a_negative_proration_credits_the_balance_and_the_renewal_spends_it() {
    let t = setup().await;
    let (customer, clock) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "4").await;
    let sub_id = s(&sub["id"]);
    let item = s(&sub["items"]["data"][0]["id"]);
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    t.advance(&clock, T0 + 10 * DAY).await;
    let preview = t
        .client
        .post(
            "/v1/invoices/create_preview",
            &[
                ("subscription", &sub_id),
                ("subscription_details[items][0][id]", &item),
                ("subscription_details[items][0][quantity]", "1"),
                ("subscription_details[proration_behavior]", "always_invoice"),
            ],
        )
        .await;
    let decreased = t
        .client
        .post(
            &format!("/v1/subscriptions/{sub_id}"),
            &[("items[0][id]", &item), ("items[0][quantity]", "1"), ("proration_behavior", "always_invoice")],
        )
        .await;
    let invoice = t
        .client
        .get(&format!("/v1/invoices/{}", s(&decreased["latest_invoice"])), &[("expand[]", "payments")])
        .await;
    let total = invoice["total"].as_i64().unwrap();
    assert!(total < 0, "three seats for two thirds of a month come back: {total}");
    assert_eq!((invoice["amount_due"].as_i64(), invoice["status"].as_str()), (Some(0), Some("paid")));
    assert_eq!(invoice["ending_balance"].as_i64(), Some(total), "the credit is kept");
    assert_eq!(preview["amount_due"].as_i64(), Some(0), "the preview said nothing is charged");
    let payments = invoice["payments"]["data"].as_array().map_or(0, Vec::len);
    assert_eq!(payments, 0, "no PaymentIntent for nothing due: {}", invoice["payments"]);
    let balance = t.client.get(&format!("/v1/customers/{customer}"), &[]).await["balance"].as_i64();
    assert_eq!(balance, Some(total), "the customer's balance holds the credit");
    // The renewal: one seat at the full price, less the credit.
    t.advance(&clock, end + 2 * 3600).await;
    let renewed = t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    let renewal = t.client.get(&format!("/v1/invoices/{}", s(&renewed["latest_invoice"])), &[]).await;
    let price =
        t.client.get(&format!("/v1/prices/{}", t.team_monthly), &[]).await["unit_amount"].as_i64().unwrap();
    assert_eq!(renewal["starting_balance"].as_i64(), Some(total));
    assert_eq!(renewal["amount_due"].as_i64(), Some((price + total).max(0)), "{renewal}");
    assert_eq!(renewal["amount_paid"].as_i64(), Some((price + total).max(0)));
    let after = t.client.get(&format!("/v1/customers/{customer}"), &[]).await["balance"].as_i64();
    assert_eq!(after, Some((price + total).min(0)), "the credit is spent");
}

/// The calls and events integrations commonly rely on: a customer's payment methods (list,
/// detach), an invoice's lines, voiding, the portal's deep links, `payment_intent.created`,
/// `invoice.updated` on a failed attempt, `invoice_payment.paid` with a whole object,
/// `billing_portal.configuration.created`, and `pending_webhooks` counting down on delivery.
#[tokio::test]
async fn the_calls_and_events_integrations_rely_on_exist() {
    let t = setup().await;
    let (customer, clock) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "1").await;
    let sub_id = s(&sub["id"]);
    let first_invoice = s(&sub["latest_invoice"]);
    // The first invoice was paid through a PaymentIntent; each step had its event.
    let paid =
        t.event("invoice_payment.paid", |e| e["data"]["object"]["invoice"] == first_invoice.as_str()).await;
    let payment = &paid["data"]["object"];
    for field in
        ["id", "amount_paid", "amount_requested", "created", "currency", "is_default", "status_transitions"]
    {
        assert!(!payment[field].is_null(), "invoice_payment.{field}: {payment}");
    }
    assert_eq!(payment["status"], "paid");
    t.event("payment_intent.created", |e| e["data"]["object"]["customer"] == customer.as_str()).await;
    // Webhooks count down as they are delivered: one endpoint was waiting for it when it was
    // sent, none once the receiver accepted it (recorded just after the receiver took it).
    assert_eq!(paid["pending_webhooks"], 1, "as delivered: one endpoint still to accept it");
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.client.get(&format!("/v1/events/{}", s(&paid["id"])), &[]).await["pending_webhooks"] != 0 {
        assert!(Instant::now() < deadline, "pending_webhooks never reached 0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Payment methods: listed both ways, detached once.
    let methods = t.client.get("/v1/payment_methods", &[("customer", &customer), ("type", "card")]).await;
    let method = s(&methods["data"][0]["id"]);
    let by_customer = t.client.get(&format!("/v1/customers/{customer}/payment_methods"), &[]).await;
    assert_eq!(by_customer["data"][0]["id"], methods["data"][0]["id"]);
    // Lines of an invoice, as a list.
    let lines = t.client.get(&format!("/v1/invoices/{first_invoice}/lines"), &[]).await;
    assert_eq!((lines["object"].as_str(), lines["data"].as_array().map(Vec::len)), (Some("list"), Some(1)));
    // A renewal that fails: the invoice is updated (attempt counted) and stays open; void it.
    t.client
        .post(
            &format!("/v1/customers/{customer}"),
            &[("invoice_settings[default_payment_method]", "pm_card_chargeCustomerFail")],
        )
        .await;
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    t.advance(&clock, end + 2 * 3600).await;
    let open = s(&t.client.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["latest_invoice"]);
    let updated = t.event("invoice.updated", |e| e["data"]["object"]["id"] == open.as_str()).await;
    assert_eq!(updated["data"]["previous_attributes"]["attempt_count"], 0);
    let voided = t.client.post(&format!("/v1/invoices/{open}/void"), &[]).await;
    assert_eq!(voided["status"], "void");
    t.event("invoice.voided", |e| e["data"]["object"]["id"] == open.as_str()).await;
    let (status, again, _) =
        t.client.call(reqwest::Method::POST, &format!("/v1/invoices/{open}/void"), &[], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only open invoices are voided: {again}");
    let detached = t.client.post(&format!("/v1/payment_methods/{method}/detach"), &[]).await;
    assert!(detached["customer"].is_null());
    t.event("payment_method.detached", |e| e["data"]["object"]["id"] == method.as_str()).await;
    // Resume is for paused subscriptions only (the simulator never pauses one: no trials).
    let (status, _, _) =
        t.client.call(reqwest::Method::POST, &format!("/v1/subscriptions/{sub_id}/resume"), &[], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The portal: a configuration announces itself, and sessions take deep links.
    let config = t.portal_configuration(&t.team_monthly).await;
    t.event("billing_portal.configuration.created", |e| e["data"]["object"]["id"] == config["id"]).await;
    let update_card = t
        .client
        .post(
            "/v1/billing_portal/sessions",
            &[("customer", &customer), ("flow_data[type]", "payment_method_update")],
        )
        .await;
    assert_eq!(update_card["flow"]["type"], "payment_method_update");
    let cancel = t
        .client
        .post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", &customer),
                ("flow_data[type]", "subscription_cancel"),
                ("flow_data[subscription_cancel][subscription]", &sub_id),
            ],
        )
        .await;
    assert_eq!(cancel["flow"]["subscription_cancel"]["subscription"], sub_id.as_str());
    let plain = t.client.post("/v1/billing_portal/sessions", &[("customer", &customer)]).await;
    assert!(plain["flow"].is_null());
}

/// Shapes that went wrong before: Checkout's line items when expanded, and a portal
/// configuration's `business_profile` and per-product `adjustable_quantity`.
#[tokio::test]
async fn updated_plans_expanded_line_items_and_portal_configurations_have_stripes_shape() {
    let t = setup().await;
    let session = t.session(&[("line_items[0][quantity]", "2"), ("success_url", "http://app.test/ok")]).await;
    let expanded = t
        .client
        .get(&format!("/v1/checkout/sessions/{}", s(&session["id"])), &[("expand[]", "line_items")])
        .await;
    let line = &expanded["line_items"]["data"][0];
    assert_eq!(
        (expanded["line_items"]["object"].as_str(), line["object"].as_str()),
        (Some("list"), Some("item"))
    );
    assert_eq!(line["quantity"], 2);
    assert_eq!(line["price"]["id"], t.team_monthly.as_str());
    let plain = t.client.get(&format!("/v1/checkout/sessions/{}", s(&session["id"])), &[]).await;
    assert!(plain.get("line_items").is_none_or(Value::is_null), "only when expanded");
    let config = t.portal_configuration(&t.business_monthly).await;
    assert!(config["business_profile"].is_object(), "{}", config["business_profile"]);
    // A cancellation can prorate or not, never invoice at once (Stripe refuses it).
    let (status, body, _) = t
        .client
        .call(
            reqwest::Method::POST,
            "/v1/billing_portal/configurations",
            &[
                ("features[subscription_cancel][enabled]", "true"),
                ("features[subscription_cancel][proration_behavior]", "always_invoice"),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let adjustable = &config["features"]["subscription_update"]["products"][0]["adjustable_quantity"];
    assert_eq!((adjustable["enabled"].as_bool(), adjustable["minimum"].as_i64()), (Some(false), Some(1)));
}

/// Strict like Stripe: a misspelt parameter, an expansion the object does not offer and an API
/// version Stripe does not know are refused with Stripe's errors; known versions are served.
#[tokio::test]
async fn unknown_parameters_expansions_and_versions_are_refused_as_stripe_does() {
    let t = setup().await;
    let (status, body, _) =
        t.client.call(reqwest::Method::POST, "/v1/customers", &[("emial", "typo@acme.test")], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["param"].as_str()),
        (Some("parameter_unknown"), Some("emial"))
    );
    let (customer, _) = t.customer_on_clock("pm_card_visa").await;
    let sub = t.subscribe(&customer, &t.team_monthly, "1").await;
    let path = format!("/v1/subscriptions/{}", s(&sub["id"]));
    let (status, body, _) = t
        .client
        .call(reqwest::Method::GET, &path, &[("expand[]", "latest_invoice.payment_intent")], None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "removed in basil: {body}");
    let (status, _, _) =
        t.client.call(reqwest::Method::GET, &path, &[("expand[]", "latest_invoice")], None).await;
    assert_eq!(status, StatusCode::OK);
    for (version, known) in [
        ("2026-07-29.dahlia", true),
        ("2026-10-28.endive", true),
        ("2024-06-20", true),
        ("2026-07-29.endive", false),
        ("2027-01-01.fig", false),
        ("latest", false),
    ] {
        let client =
            Client { http: reqwest::Client::new(), base: t.sim.base_url.clone(), version: Some(version) };
        let (status, body, _) = client.call(reqwest::Method::GET, &path, &[], None).await;
        assert_eq!(status == StatusCode::OK, known, "{version}: {body}");
    }
}
