//! Stripe's rules the simulator keeps, through its HTTP API: only released API versions, each
//! webhook endpoint's events in its own version's shape, list expansions under `data.`, card
//! numbers refused as payment method ids, 3155 set up per card, includable fields only where
//! expanded (also inside expansions), and the hosted invoice page behind `hosted_invoice_url`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use serde_json::Value;
use stripe_sim::{SimSettings, Simulator};
use tokio::sync::Mutex;

const KEY: &str = "sk_test_fake_rules";
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, &str)],
        version: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(KEY);
        req = if method == reqwest::Method::GET { req.query(params) } else { req.form(params) };
        if let Some(v) = version {
            req = req.header("stripe-version", v);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn post(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.call(reqwest::Method::POST, path, params, None).await;
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, params, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The error of a call expected to fail, with its status.
    async fn refused(&self, method: reqwest::Method, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let (status, body) = self.call(method, path, params, None).await;
        assert_ne!(status, 200, "{path} {params:?} was accepted: {body}");
        (status, body["error"].clone())
    }

    /// Moves `clock` to `to` and waits until it is ready again, as a Stripe client must.
    async fn advance(&self, clock: &str, to: i64) {
        let path = format!("/v1/test_helpers/test_clocks/{clock}");
        self.post(&format!("{path}/advance"), &[("frozen_time", &to.to_string())]).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get(&path, &[]).await["status"] != "ready" {
            assert!(Instant::now() < deadline, "clock never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The events of `kind` about object `id`, newest first.
    async fn events(&self, kind: &str, id: &str) -> Vec<Value> {
        let events = self.get("/v1/events", &[("type", kind), ("limit", "100")]).await;
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"]["object"]["id"] == id)
            .cloned()
            .collect()
    }

    /// An event of `kind` about object `id`, if one was emitted.
    async fn event(&self, kind: &str, id: &str) -> Option<Value> {
        self.events(kind, id).await.into_iter().next()
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_owned()
}

struct World {
    _sim: Simulator,
    api: Api,
    price: String,
}

async fn start_with_product(name: &str) -> World {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), SimSettings::default()).await.unwrap();
    let api = Api { http: reqwest::Client::new(), base: sim.base_url.clone() };
    let product = api.post("/v1/products", &[("name", name)]).await;
    let price = api
        .post(
            "/v1/prices",
            &[
                ("product", &s(&product["id"])),
                ("unit_amount", "2000"),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    World { _sim: sim, api, price: s(&price["id"]) }
}

async fn start() -> World {
    start_with_product("Hydra Team").await
}

impl World {
    /// A customer on a fresh test clock at T0, with `card` as its default when given.
    async fn customer(&self, extra: &[(&str, &str)]) -> (String, String) {
        let clock = self.api.post("/v1/test_helpers/test_clocks", &[("frozen_time", &T0.to_string())]).await;
        let clock = s(&clock["id"]);
        let mut params = vec![("email", "ap@acme.test"), ("test_clock", clock.as_str())];
        params.extend_from_slice(extra);
        let customer = self.api.post("/v1/customers", &params).await;
        (s(&customer["id"]), clock)
    }

    async fn subscribe(&self, customer: &str) -> Value {
        self.api
            .post(
                "/v1/subscriptions",
                &[
                    ("customer", customer),
                    ("items[0][price]", &self.price),
                    ("billing_mode[type]", "classic"),
                ],
            )
            .await
    }

    /// A subscription bought through Checkout (the test helper playing the hosted page) with `card`.
    async fn checkout(&self, customer: &str, card: &str) -> Value {
        let session = self
            .api
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("customer", customer),
                    ("line_items[0][price]", &self.price),
                    ("success_url", "http://app.test/ok"),
                ],
            )
            .await;
        let id = s(&session["id"]);
        self.api
            .post(&format!("/v1/test_helpers/checkout/sessions/{id}/complete"), &[("payment_method", card)])
            .await
    }
}

#[tokio::test]
async fn only_api_versions_stripe_released_are_served() {
    let w = start().await;
    for (version, known) in [
        ("2025-03-31.basil", true),
        ("2026-07-29.dahlia", true),
        ("2026-10-28.endive", true),
        ("2024-06-20", true),
        // Well-formed, and the right major's name for the date, but never released.
        ("2026-08-01.dahlia", false),
        ("2019-01-01", false),
        ("2026-11-25.endive", false),
    ] {
        let (status, body) = w.api.call(reqwest::Method::GET, "/v1/customers", &[], Some(version)).await;
        if known {
            assert_eq!(status, 200, "{version}: {body}");
        } else {
            assert_eq!(status, 400, "{version}: {body}");
            assert_eq!(body["error"]["code"], "api_version_invalid", "{version}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{version}");
        }
    }
}

/// A receiver of webhook deliveries at `/{name}`, recording each body by name.
async fn hooks() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/{name}",
            axum::routing::post(move |Path(name): Path<String>, body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    got.lock().await.push((name, serde_json::from_slice(&body).unwrap()));
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, got)
}

#[tokio::test]
async fn each_webhook_endpoint_gets_events_in_its_own_api_versions_shape() {
    let w = start().await;
    let (base, got) = hooks().await;
    let endpoint = |name: &'static str, version: Option<&'static str>| {
        let url = format!("{base}/{name}");
        let api = &w.api;
        async move {
            let mut params = vec![
                ("url", url.as_str()),
                ("enabled_events[]", "invoice.paid"),
                ("enabled_events[]", "customer.subscription.created"),
            ];
            params.extend(version.map(|v| ("api_version", v)));
            api.post("/v1/webhook_endpoints", &params).await
        }
    };
    // Periods moved to the items and `invoice.subscription` into `parent` in 2025-03-31.basil:
    // acacia is the legacy shape, basil already the current one.
    let legacy = endpoint("legacy", Some("2025-02-24.acacia")).await;
    assert_eq!(legacy["api_version"], "2025-02-24.acacia");
    endpoint("basil", Some("2025-03-31.basil")).await;
    endpoint("current", Some("2026-07-29.dahlia")).await;
    for unknown in ["2026-08-01.dahlia", "2019-01-01", "latest"] {
        let (status, e) = w
            .api
            .refused(
                reqwest::Method::POST,
                "/v1/webhook_endpoints",
                &[("url", &format!("{base}/x")), ("enabled_events[]", "*"), ("api_version", unknown)],
            )
            .await;
        assert_eq!((status, e["param"].as_str()), (400, Some("api_version")), "{unknown}: {e}");
    }
    assert_eq!(w.api.get("/v1/webhook_endpoints", &[]).await["data"].as_array().unwrap().len(), 3);

    let (customer, _) = w.customer(&[("payment_method", "pm_card_visa")]).await;
    let sub = w.subscribe(&customer).await;
    let (sub_id, invoice_id) = (s(&sub["id"]), s(&sub["latest_invoice"]));
    let period_end = sub["items"]["data"][0]["current_period_end"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        let all = got.lock().await.clone();
        let of = |name: &str, kind: &str, id: &str| {
            all.iter()
                .find(|(n, e)| n == name && e["type"] == kind && e["data"]["object"]["id"] == id)
                .map(|(_, e)| e.clone())
        };
        let found: Vec<Option<Value>> = ["legacy", "basil", "current"]
            .iter()
            .flat_map(|name| {
                [of(name, "invoice.paid", &invoice_id), of(name, "customer.subscription.created", &sub_id)]
            })
            .collect();
        if found.iter().all(Option::is_some) {
            break found.into_iter().map(Option::unwrap).collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "not every endpoint got both events: {found:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let [legacy_paid, legacy_created, basil_paid, basil_created, current_paid, current_created] =
        <[Value; 6]>::try_from(delivered).unwrap();
    assert_eq!(legacy_paid["id"], current_paid["id"], "one event, rendered per endpoint");
    assert_eq!(legacy_paid["api_version"], "2025-02-24.acacia");
    assert_eq!(basil_paid["api_version"], "2025-03-31.basil");
    assert_eq!(current_paid["api_version"], "2026-07-29.dahlia");
    // The legacy shape: the subscription on the invoice, periods on the subscription.
    assert_eq!(legacy_paid["data"]["object"]["subscription"], sub_id.as_str());
    assert_eq!(legacy_created["data"]["object"]["current_period_end"], period_end);
    // Basil and after: neither, the subscription under `parent`, periods on the items.
    for (paid, created) in [(&basil_paid, &basil_created), (&current_paid, &current_created)] {
        let invoice = &paid["data"]["object"];
        assert!(invoice.get("subscription").is_none_or(Value::is_null), "{}: {invoice}", paid["api_version"]);
        assert_eq!(invoice["parent"]["subscription_details"]["subscription"], sub_id.as_str());
        let subscription = &created["data"]["object"];
        assert!(subscription.get("current_period_end").is_none_or(Value::is_null), "{subscription}");
        assert_eq!(subscription["items"]["data"][0]["current_period_end"], period_end);
    }
}

#[tokio::test]
async fn lists_expand_their_objects_paths_under_data_and_refuse_the_bare_path() {
    let w = start().await;
    let (customer, clock) = w.customer(&[("payment_method", "pm_card_visa")]).await;
    w.subscribe(&customer).await;
    let session = w
        .api
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", &customer),
                ("line_items[0][price]", &w.price),
                ("success_url", "http://app.test/ok"),
            ],
        )
        .await;
    // (list, filter, path under `data.`, what the expanded field then is)
    let cases: [(&str, (&str, &str), &str, &str); 7] = [
        ("/v1/customers", ("email", "ap@acme.test"), "test_clock", "test_helpers.test_clock"),
        ("/v1/subscriptions", ("customer", &customer), "latest_invoice", "invoice"),
        ("/v1/subscriptions", ("customer", &customer), "customer", "customer"),
        ("/v1/invoices", ("customer", &customer), "customer", "customer"),
        ("/v1/checkout/sessions", ("customer", &customer), "line_items", "list"),
        ("/v1/prices", ("active", "true"), "product", "product"),
        ("/v1/payment_methods", ("customer", &customer), "customer", "customer"),
    ];
    for (list, filter, path, kind) in cases {
        let expanded = format!("data.{path}");
        let found = w.api.get(list, &[filter, ("expand[]", &expanded)]).await;
        let first = &found["data"][0];
        let field = path.split('.').fold(first, |v, k| &v[k]);
        assert_eq!(field["object"], kind, "{list} expand[]={expanded}: {first}");
        let (status, e) = w.api.refused(reqwest::Method::GET, list, &[filter, ("expand[]", path)]).await;
        assert_eq!((status, e["param"].as_str()), (400, Some("expand")), "{list} expand[]={path}: {e}");
    }
    assert_eq!(
        w.api.get("/v1/checkout/sessions", &[("expand[]", "data.line_items")]).await["data"][0]["id"],
        session["id"]
    );
    // The same path into the list's items a single object takes, one level further too.
    let found =
        w.api.get("/v1/customers", &[("email", "ap@acme.test"), ("expand[]", "data.test_clock")]).await;
    assert_eq!(found["data"][0]["test_clock"]["id"], clock.as_str());
    let found = w.api.get("/v1/subscriptions", &[("expand[]", "data.latest_invoice.customer")]).await;
    assert_eq!(found["data"][0]["latest_invoice"]["customer"]["id"], customer.as_str());
}

#[tokio::test]
async fn card_numbers_and_tokens_are_not_payment_methods_but_the_hosted_form_takes_numbers() {
    let w = start().await;
    let (customer, _) = w.customer(&[]).await;
    for id in ["4242424242424242", "4000002500003155", "tok_visa"] {
        let (status, e) = w
            .api
            .refused(
                reqwest::Method::POST,
                &format!("/v1/payment_methods/{id}/attach"),
                &[("customer", &customer)],
            )
            .await;
        assert_eq!((status, e["code"].as_str()), (404, Some("resource_missing")), "{id}: {e}");
        assert_eq!(e["message"], format!("No such PaymentMethod: '{id}'"));
    }
    // In a body parameter, an unknown payment method is a 400 that names the parameter.
    let number = "4242424242424242";
    let sub_params =
        [("customer", customer.as_str()), ("items[0][price]", &w.price), ("default_payment_method", number)];
    for (path, params, param) in [
        ("/v1/customers".to_owned(), vec![("payment_method", number)], "payment_method"),
        (
            format!("/v1/customers/{customer}"),
            vec![("invoice_settings[default_payment_method]", number)],
            "invoice_settings[default_payment_method]",
        ),
        ("/v1/subscriptions".to_owned(), sub_params.to_vec(), "default_payment_method"),
        (
            format!("/v1/customers/{customer}"),
            vec![("invoice_settings[default_payment_method]", customer.as_str())],
            "invoice_settings[default_payment_method]",
        ),
    ] {
        let (status, e) = w.api.refused(reqwest::Method::POST, &path, &params).await;
        assert_eq!(
            (status, e["code"].as_str(), e["param"].as_str()),
            (400, Some("resource_missing"), Some(param)),
            "{path}: {e}"
        );
    }
    assert!(
        w.api.get("/v1/payment_methods", &[("customer", &customer)]).await["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Stripe's test PaymentMethods and real ids work.
    let pm = w.api.post("/v1/payment_methods/pm_card_visa/attach", &[("customer", &customer)]).await;
    assert_eq!(pm["card"]["last4"], "4242");
    let updated = w
        .api
        .post(
            &format!("/v1/customers/{customer}"),
            &[("invoice_settings[default_payment_method]", &s(&pm["id"]))],
        )
        .await;
    assert_eq!(updated["invoice_settings"]["default_payment_method"], pm["id"]);

    // The hosted Checkout form is where a number is typed: 3155 asks for 3-D Secure there.
    let session = w
        .api
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price]", &w.price),
                ("success_url", "http://app.test/ok"),
            ],
        )
        .await;
    let url = s(&session["url"]);
    let page = w.api.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("name=\"number\""), "{page}");
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let typed = [("number", "4000 0025 0000 3155")];
    let challenge = browser.post(&url).form(&typed).send().await.unwrap().text().await.unwrap();
    assert!(challenge.contains("Complete authentication"), "{challenge}");
    let unknown =
        browser.post(&url).form(&[("number", "1234 5678")]).send().await.unwrap().text().await.unwrap();
    assert!(unknown.contains("not one of Stripe&#39;s test cards"), "{unknown}");
    let r = browser
        .post(&url)
        .form(&[("card", "pm_card_authenticationRequiredOnSetup"), ("auth", "succeed")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let done = w
        .api
        .get(&format!("/v1/checkout/sessions/{}", s(&session["id"])), &[("expand[]", "subscription")])
        .await;
    assert_eq!(done["subscription"]["status"], "active");
    let card = s(&done["subscription"]["default_payment_method"]);
    assert_eq!(w.api.get(&format!("/v1/payment_methods/{card}"), &[]).await["card"]["last4"], "3155");
}

/// 3155 ("authenticate unless set up") is set up card by card: the one Checkout authenticated
/// renews off-session, another 3155 card attached later has not been set up and asks again.
#[tokio::test]
async fn a_3155_card_is_set_up_by_its_own_authentication_not_by_the_customers() {
    let w = start().await;
    let (customer, clock) = w.customer(&[]).await;
    let done = w.checkout(&customer, "pm_card_authenticationRequiredOnSetup").await;
    let sub_id = s(&done["subscription"]);
    let sub = w.api.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(sub["status"], "active");
    let first_card = s(&sub["default_payment_method"]);
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    w.api.advance(&clock, end + 2 * 3600).await;
    let renewed = w.api.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    let invoice = w.api.get(&format!("/v1/invoices/{}", s(&renewed["latest_invoice"])), &[]).await;
    assert_eq!(
        (invoice["billing_reason"].as_str(), invoice["status"].as_str()),
        (Some("subscription_cycle"), Some("paid")),
        "the card set up at Checkout renews off-session"
    );

    // Another 3155 card, attached through the API and never authenticated.
    let second = w
        .api
        .post("/v1/payment_methods/pm_card_authenticationRequiredOnSetup/attach", &[("customer", &customer)])
        .await;
    let second_card = s(&second["id"]);
    assert_ne!(second_card, first_card);
    w.api.post(&format!("/v1/subscriptions/{sub_id}"), &[("default_payment_method", &second_card)]).await;
    let end = renewed["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    w.api.advance(&clock, end + 2 * 3600).await;
    let behind = w.api.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(behind["status"], "past_due", "the new card was not set up");
    let invoice_id = s(&behind["latest_invoice"]);
    assert!(w.api.event("invoice.payment_action_required", &invoice_id).await.is_some());
    let invoice = w.api.get(&format!("/v1/invoices/{invoice_id}"), &[("expand[]", "payments")]).await;
    let pi = s(&invoice["payments"]["data"][0]["payment"]["payment_intent"]);
    assert_eq!(
        w.api.get(&format!("/v1/payment_intents/{pi}"), &[]).await["payment_method"],
        second_card.as_str()
    );

    // Authenticating that payment sets the second card up: the next renewal passes.
    w.api
        .post(&format!("/v1/test_helpers/payment_intents/{pi}/authenticate"), &[("outcome", "succeed")])
        .await;
    assert_eq!(w.api.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["status"], "active");
    let end = behind["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    w.api.advance(&clock, end + 2 * 3600).await;
    let third = w.api.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    assert_eq!(third["status"], "active");
    assert_eq!(
        w.api.get(&format!("/v1/invoices/{}", s(&third["latest_invoice"])), &[]).await["status"],
        "paid"
    );
}

#[tokio::test]
async fn an_invoices_payments_come_only_where_they_are_expanded_even_inside_an_expansion() {
    let w = start().await;
    let (customer, _) = w.customer(&[("payment_method", "pm_card_visa")]).await;
    let sub = w.subscribe(&customer).await;
    let path = format!("/v1/subscriptions/{}", s(&sub["id"]));
    let has_payments = |invoice: &Value| {
        assert_eq!(invoice["object"], "invoice", "expanded: {invoice}");
        invoice.get("payments").is_some()
    };

    let plain = w.api.get(&path, &[("expand[]", "latest_invoice")]).await;
    assert!(!has_payments(&plain["latest_invoice"]), "{}", plain["latest_invoice"]);
    let asked = w.api.get(&path, &[("expand[]", "latest_invoice.payments")]).await;
    assert!(has_payments(&asked["latest_invoice"]));
    assert_eq!(asked["latest_invoice"]["payments"]["data"][0]["object"], "invoice_payment");
    let updated = w.api.post(&path, &[("metadata[k]", "v"), ("expand[]", "latest_invoice")]).await;
    assert!(!has_payments(&updated["latest_invoice"]), "in a write's answer too");

    let listed =
        w.api.get("/v1/subscriptions", &[("customer", &customer), ("expand[]", "data.latest_invoice")]).await;
    assert!(!has_payments(&listed["data"][0]["latest_invoice"]));
    let listed = w
        .api
        .get("/v1/subscriptions", &[("customer", &customer), ("expand[]", "data.latest_invoice.payments")])
        .await;
    assert!(has_payments(&listed["data"][0]["latest_invoice"]));

    let (other, _) = w.customer(&[]).await;
    let session = w.checkout(&other, "pm_card_visa").await;
    let session_path = format!("/v1/checkout/sessions/{}", s(&session["id"]));
    let plain = w.api.get(&session_path, &[("expand[]", "invoice")]).await;
    assert!(!has_payments(&plain["invoice"]), "{}", plain["invoice"]);
    let asked = w.api.get(&session_path, &[("expand[]", "invoice.payments")]).await;
    assert!(has_payments(&asked["invoice"]));
}

#[tokio::test]
async fn the_hosted_invoice_page_shows_the_invoice_and_completes_3d_secure() {
    let w = start_with_product("Hydra <Team> & Co").await;
    let (customer, clock) = w.customer(&[("payment_method", "pm_card_visa"), ("name", "<b>Ann</b>")]).await;
    let sub = w.subscribe(&customer).await;
    let sub_id = s(&sub["id"]);
    let first = w.api.get(&format!("/v1/invoices/{}", s(&sub["latest_invoice"])), &[]).await;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let fetch = |url: String| {
        let browser = browser.clone();
        async move {
            let r = browser.get(&url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, page) = fetch(s(&first["hosted_invoice_url"])).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&s(&first["id"])), "the invoice is named: {page}");
    assert!(page.contains("<strong>Paid</strong>") && page.contains("$20.00"), "{page}");
    assert!(page.contains("1 January 2026"), "dates as people read them: {page}");
    assert!(page.contains("Hydra &lt;Team&gt; &amp; Co") && !page.contains("<Team>"), "escaped: {page}");
    assert!(page.contains("&lt;b&gt;Ann&lt;/b&gt;") && !page.contains("<b>Ann"), "escaped: {page}");
    assert!(!page.contains("Complete authentication"));

    // A renewal on a card that always asks for 3-D Secure waits for the customer.
    let (end, invoice_id, invoice) =
        renew_on_a_card_that_always_authenticates(&w, &customer, &clock, &sub).await;
    assert_eq!(invoice["status"], "open");
    let pi = s(&invoice["payments"]["data"][0]["payment"]["payment_intent"]);
    let url = s(&invoice["hosted_invoice_url"]);
    assert_eq!(url, format!("{}/invoice/{invoice_id}", w.api.base));
    let (status, page) = fetch(url.clone()).await;
    assert_eq!(status, 200);
    assert!(page.contains("Amount due: $20.00") && page.contains("Complete authentication"), "{page}");
    assert!(page.contains("card ending in 3184"), "{page}");
    assert!(page.contains("1 February 2026") && page.contains("1 March 2026"), "the period: {page}");
    for t in [invoice["created"].as_i64().unwrap(), end, invoice["period_end"].as_i64().unwrap()] {
        assert!(!page.contains(&t.to_string()), "no Unix time ({t}): {page}");
    }

    let r = browser.post(&url).form(&[("auth", "succeed")]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], format!("/invoice/{invoice_id}").as_str());
    let paid = w.api.get(&format!("/v1/invoices/{invoice_id}"), &[]).await;
    assert_eq!((paid["status"].as_str(), paid["amount_paid"].as_i64()), (Some("paid"), Some(2000)));
    assert_eq!(w.api.get(&format!("/v1/payment_intents/{pi}"), &[]).await["status"], "succeeded");
    assert_eq!(w.api.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["status"], "active");
    for kind in ["invoice.paid", "invoice.payment_succeeded"] {
        assert!(w.api.event(kind, &invoice_id).await.is_some(), "{kind}");
    }
    assert!(w.api.event("payment_intent.succeeded", &pi).await.is_some());
    let updates = w.api.events("customer.subscription.updated", &sub_id).await;
    let back = updates.iter().any(|e| {
        e["data"]["object"]["status"] == "active" && e["data"]["previous_attributes"]["status"] == "past_due"
    });
    assert!(back, "the subscription is active again: {updates:?}");
    let (_, page) = fetch(url.clone()).await;
    assert!(page.contains("<strong>Paid</strong>") && !page.contains("Complete authentication"), "{page}");
    // Nothing waits any more; an unknown invoice has no page.
    assert_eq!(browser.post(&url).form(&[("auth", "succeed")]).send().await.unwrap().status(), 400);
    assert_eq!(fetch(format!("{}/invoice/in_missing", w.api.base)).await.0, 404);
}

/// Makes Stripe's authenticate-every-payment card the customer's default and moves its clock past
/// the period end: (the period end, the renewal invoice's id, that invoice with its payments).
async fn renew_on_a_card_that_always_authenticates(
    w: &World,
    customer: &str,
    clock: &str,
    sub: &Value,
) -> (i64, String, Value) {
    w.api
        .post(
            &format!("/v1/customers/{customer}"),
            &[("invoice_settings[default_payment_method]", "pm_card_authenticationRequired")],
        )
        .await;
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    w.api.advance(clock, end + 2 * 3600).await;
    let invoice_id =
        s(&w.api.get(&format!("/v1/subscriptions/{}", s(&sub["id"])), &[]).await["latest_invoice"]);
    let invoice = w.api.get(&format!("/v1/invoices/{invoice_id}"), &[("expand[]", "payments")]).await;
    (end, invoice_id, invoice)
}

#[tokio::test]
async fn failing_3d_secure_on_the_hosted_invoice_page_leaves_it_unpaid() {
    let w = start().await;
    let (customer, clock) = w.customer(&[("payment_method", "pm_card_visa")]).await;
    let sub = w.subscribe(&customer).await;
    let (_, invoice_id, invoice) =
        renew_on_a_card_that_always_authenticates(&w, &customer, &clock, &sub).await;
    let pi = s(&invoice["payments"]["data"][0]["payment"]["payment_intent"]);
    let page = reqwest::Client::new()
        .post(s(&invoice["hosted_invoice_url"]))
        .form(&[("auth", "fail")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("unable to authenticate"), "{page}");
    assert_eq!(w.api.get(&format!("/v1/invoices/{invoice_id}"), &[]).await["status"], "open");
    assert_eq!(
        w.api.get(&format!("/v1/payment_intents/{pi}"), &[]).await["status"],
        "requires_payment_method"
    );
    assert!(w.api.event("payment_intent.payment_failed", &pi).await.is_some());
    assert!(w.api.event("invoice.paid", &invoice_id).await.is_none());
}
