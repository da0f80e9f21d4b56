//! Generated inputs sent to every route, on whichever database the suite runs on: whatever a
//! caller sends (ids with NUL or any Unicode, odd query strings, JSON of any shape, tokens naming
//! any tenant, webhooks correctly signed but of any shape), the answer is never a 500, and every
//! API error has the error shape.

use hydra_billing::config::Secret;
use hydra_billing::domain::clock::Clock;
use hydra_billing::http::auth::{self, MintRequest, Role};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, AUTH_SECRET, DAY, SERVICE_TOKEN, START, WEBHOOK_SECRET, count, spawn_with_stripe,
};

/// Text as callers might send it: plain ids, any Unicode (NUL and controls included), long runs,
/// and the characters that break naive handling.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{1,12}",
        any::<String>(),
        "[\\x00-\\x1f%/\\\\.\"'<>]{1,8}",
        "x{200,400}",
        Just(String::new()),
        Just("t1".to_owned()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e20f64..1e20).prop_map(Value::from),
        (0i64..1000).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field and query names the routes read, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "billing_email",
            "tier",
            "interval",
            "seats",
            "reason",
            "quote_id",
            "return_path",
            "flow",
            "contract_ends_at",
            "feature",
            "session_id",
            "limit",
            "status",
            "plan",
            "repos",
            "count",
            "customer",
            "preview",
            "sub",
            "to",
        ])
        .prop_map(str::to_owned),
        text(),
    ]
}

/// Percent-encodes every byte but the unreserved ones, so any text fits a path or a query.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Stands for the Stripe customer of tenant `t1` in generated events; replaced before signing.
const KNOWN_CUSTOMER: &str = "cus_GENERATED_KNOWN";

/// The event types the service handles, and some it does not.
fn event_types() -> Vec<&'static str> {
    let others = ["customer.created", "invoice.created", "charge.refunded"];
    hydra_billing::stripe::objects::HANDLED_EVENTS.into_iter().chain(others).collect()
}

/// Fields the event handlers read from an event's object, and others.
fn event_field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "id",
            "object",
            "amount_due",
            "attempt_count",
            "hosted_invoice_url",
            "subscription",
            "status",
            "billing_reason",
            "metadata",
            "client_reference_id",
            "mode",
            "lines",
            "parent",
            "items",
            "cancel_at_period_end",
            "current_period_end",
            "entitlements",
            "customer_email",
            "payment_status",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

/// A Stripe event as the intake and the worker see it: mostly the usual envelope (generated ids,
/// types, times and object fields, often about tenant `t1`'s customer), sometimes any JSON at all.
fn event() -> impl Strategy<Value = Value> {
    let id = prop_oneof![4 => "evt_[A-Za-z0-9]{1,24}", 1 => text()];
    let kind = prop_oneof![4 => prop::sample::select(event_types()).prop_map(str::to_owned), 1 => text()];
    let created = prop_oneof![
        3 => (START - 400 * DAY..START + 400 * DAY).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => json_value(),
    ];
    let livemode = prop_oneof![6 => Just(json!(false)), 1 => Just(json!(true)), 1 => json_value()];
    let object = prop_oneof![
        4 => prop::sample::select(vec!["invoice", "subscription", "checkout.session", "customer",
                                       "entitlements.active_entitlement_summary"])
            .prop_map(str::to_owned),
        1 => text(),
    ];
    let customer = prop_oneof![
        3 => Just(Some(json!(KNOWN_CUSTOMER))),
        1 => Just(Some(json!({"id": KNOWN_CUSTOMER, "object": "customer"}))),
        1 => Just(Some(json!("cus_nobody_knows"))),
        1 => Just(None),
        1 => text().prop_map(|t| Some(Value::String(t))),
        // A customer id the store must hold beside the event, or refuse (a NUL, say).
        1 => "cus_[A-Za-z0-9]{0,6}\\x00[A-Za-z0-9]{0,6}".prop_map(|t| Some(Value::String(t))),
        1 => json_value().prop_map(Some),
    ];
    let fields = prop::collection::btree_map(event_field(), json_value(), 0..6);
    let enveloped = (id, kind, created, livemode, object, customer, fields).prop_map(
        |(id, kind, created, livemode, object, customer, fields)| {
            let mut data = serde_json::Map::new();
            data.insert("object".into(), Value::String(object));
            data.extend(fields);
            if let Some(customer) = customer {
                data.insert("customer".into(), customer);
            }
            json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": livemode,
                   "data": {"object": data}})
        },
    );
    prop_oneof![5 => enveloped, 1 => json_value()]
}

/// One generated request: which route, its path parameter, query and body, the claims of its
/// tenant token, and (on the webhook route) a correctly signed event instead of the body.
#[derive(Debug, Clone)]
struct Case {
    route: usize,
    param: String,
    query: Vec<(String, String)>,
    body: Value,
    raw_body: bool,
    token_tenant: String,
    token_email: Option<String>,
    signed_event: Option<Value>,
}

fn case() -> impl Strategy<Value = Case> {
    let webhook = ROUTES.iter().position(|r| r.1 == "/api/webhooks/stripe").unwrap();
    (
        // The webhook route gets a larger share: its signed bodies reach the intake and the worker.
        prop_oneof![5 => 0..ROUTES.len(), 1 => Just(webhook)],
        text(),
        prop::collection::vec((key(), text()), 0..4),
        json_value(),
        any::<bool>(),
        prop_oneof![3 => Just("t1".to_owned()), 2 => "[a-z0-9_]{1,10}", 2 => text()],
        prop_oneof![2 => Just(None), 1 => Just(Some("billing@t1.test".to_owned())), 1 => text().prop_map(Some)],
        prop_oneof![1 => Just(None), 2 => event().prop_map(Some)],
    )
        .prop_map(|(route, param, query, body, raw_body, token_tenant, token_email, signed_event)| Case {
            route,
            param,
            query,
            body,
            raw_body,
            token_tenant,
            token_email,
            signed_event,
        })
}

#[derive(Clone, Copy)]
enum Auth {
    None,
    Service,
    Tenant,
    Admin,
    Session,
}

/// Every route of the service, `{}` standing for its path parameter (a route with two is listed
/// once per parameter, the other fixed).
const ROUTES: &[(&str, &str, Auth)] = &[
    ("GET", "/healthz", Auth::None),
    ("GET", "/readyz", Auth::None),
    ("GET", "/metrics", Auth::Service),
    ("GET", "/api/openapi.json", Auth::None),
    ("PUT", "/api/tenants/{}", Auth::Service),
    ("POST", "/api/tenants/{}/usage/fix/reserve", Auth::Service),
    ("POST", "/api/tenants/t1/usage/{}/reserve", Auth::Service),
    ("POST", "/api/usage/reservations/{}/commit", Auth::Service),
    ("POST", "/api/usage/reservations/{}/release", Auth::Service),
    ("GET", "/api/tenants/{}/access", Auth::Service),
    ("GET", "/api/billing/status", Auth::Tenant),
    ("GET", "/api/billing/usage/reservations/{}", Auth::Tenant),
    ("POST", "/api/billing/checkout", Auth::Tenant),
    ("GET", "/api/billing/checkout/session", Auth::Tenant),
    ("POST", "/api/billing/seats", Auth::Tenant),
    ("POST", "/api/billing/upgrade", Auth::Tenant),
    ("POST", "/api/billing/portal", Auth::Tenant),
    ("POST", "/api/billing/resume", Auth::Tenant),
    ("POST", "/api/admin/tenants/{}/plan", Auth::Admin),
    ("GET", "/api/admin/events", Auth::Admin),
    ("POST", "/api/admin/events/{}/replay", Auth::Admin),
    ("POST", "/api/webhooks/stripe", Auth::None),
    ("GET", "/billing", Auth::Session),
    ("GET", "/billing/upgrade", Auth::Session),
    ("GET", "/billing/success", Auth::Session),
    ("GET", "/billing/assets/{}", Auth::None),
    ("GET", "/billing/upgrade-prompt.js", Auth::None),
    ("GET", "/billing/upgrade-prompt", Auth::None),
    ("POST", "/billing/session", Auth::None),
];

/// Whether the router's `path` (with `{name}` parameters) and `method` are tried by `ROUTES`.
fn tried(path: &str, method: &str) -> bool {
    let want: Vec<&str> = path.split('/').collect();
    ROUTES.iter().any(|(m, template, _)| {
        let have: Vec<&str> = template.split('/').collect();
        m.eq_ignore_ascii_case(method)
            && have.len() == want.len()
            && want.iter().zip(&have).all(|(w, h)| w == h || (w.starts_with('{') && w.ends_with('}')))
    })
}

/// No generated request gets a 500 (nor `database_unavailable`: the database is up), every `/api`
/// error carries `{"error": {code, message}}`, and a correctly signed event is answered 200 (then
/// stored) or 400, never a 5xx that would make Stripe retry it for days. The worker then
/// processes every stored event without an error of its own.
#[tokio::test]
async fn no_generated_input_on_any_route_gets_a_500() {
    let s = spawn_with_stripe().await;
    let app = &s.app;
    // `t1` has a Stripe customer: tenant routes reach the simulator, and generated events about
    // that customer reach the event handlers.
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    // As `stripe setup` leaves an account: the portal configured.
    s.post("/v1/billing_portal/configurations", &[("features[invoice_history][enabled]", "true")]).await;
    // ROUTES is the router's whole table: a route added to `src/http/routes.rs` and not to
    // ROUTES fails here, not silently.
    let table = crate::helpers::route_table();
    assert!(table.len() > 20, "the route table was not read: {table:?}");
    let untried: Vec<_> = table.iter().filter(|(path, method)| !tried(path, method)).collect();
    assert!(untried.is_empty(), "routes no generated request tries: {untried:?}");
    let mut runner = TestRunner::new(Config { cases: 1, ..Config::default() });
    let strategy = case();
    let mut failures = Vec::new();
    let mut seen = vec![0usize; ROUTES.len()];
    let mut stored = Vec::new();
    let mut about_t1 = 0;
    for _ in 0..1500 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let (method, template, auth) = ROUTES[case.route];
        seen[case.route] += 1;
        let path = template.replace("{}", &encode(&case.param));
        let query: String = case
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = if query.is_empty() { app.url(&path) } else { app.url(&format!("{path}?{query}")) };
        let mut request = app.client.request(Method::from_bytes(method.as_bytes()).unwrap(), url);
        let token = auth::mint(
            &Secret::new(AUTH_SECRET),
            MintRequest {
                tenant: &case.token_tenant,
                uid: "user-1",
                role: Role::BillingAdmin,
                email: case.token_email.as_deref(),
                ttl_secs: 3600,
                now: app.clock.now(),
            },
        )
        .unwrap();
        request = match auth {
            Auth::None => request,
            Auth::Service => request.bearer_auth(SERVICE_TOKEN),
            Auth::Tenant => request.bearer_auth(&token),
            Auth::Admin => request.bearer_auth(ADMIN_TOKEN).header("x-hydra-actor", "ops@hydra.test"),
            Auth::Session => request.header("cookie", format!("hydra_session={token}")),
        };
        let signed = case.signed_event.as_ref().filter(|_| template == "/api/webhooks/stripe");
        if let Some(event) = signed {
            // Signed with the app's secret now, as Stripe signs: past the check, into the intake.
            let body = serde_json::to_string(event).unwrap().replace(KNOWN_CUSTOMER, &customer);
            let header = stripe_sim::signature_header(WEBHOOK_SECRET, Clock::System.now(), body.as_bytes());
            request = request
                .header("stripe-signature", header)
                .header("content-type", "application/json")
                .body(body);
        } else if method != "GET" {
            request = if case.raw_body {
                request.header("content-type", "application/x-www-form-urlencoded").body(query.clone())
            } else {
                request.json(&case.body)
            };
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer = serde_json::from_str::<Value>(&text).unwrap_or_default();
        let shaped = answer["error"]["code"].is_string() && answer["error"]["message"].is_string();
        let wrong = status == StatusCode::INTERNAL_SERVER_ERROR
            || answer["error"]["code"] == "database_unavailable"
            || (path.starts_with("/api") && status.is_client_error() && !shaped)
            || (signed.is_some() && status != StatusCode::OK && status != StatusCode::BAD_REQUEST);
        if wrong {
            failures.push(format!("{method} {path} {case:?} → {status} {text}"));
        }
        if let Some(event) = signed.filter(|_| status == StatusCode::OK) {
            stored.push(event["id"].as_str().unwrap_or_default().to_owned());
            let customer_field = &event["data"]["object"]["customer"];
            let handled =
                hydra_billing::stripe::HANDLED_EVENTS.contains(&event["type"].as_str().unwrap_or_default());
            if handled && (customer_field == KNOWN_CUSTOMER || customer_field["id"] == KNOWN_CUSTOMER) {
                about_t1 += 1;
            }
        }
    }
    assert!(seen.iter().all(|n| *n > 0), "every route was tried: {seen:?}");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Every signed event answered 200 is stored, and the worker takes each one up.
    assert!(stored.len() > 50 && about_t1 > 20, "{} signed events stored, {about_t1} about t1", stored.len());
    for id in &stored {
        assert_eq!(
            count(&app.db, "SELECT COUNT(*) FROM stripe_events WHERE id = $1", Some(id)).await,
            1,
            "{id:?}"
        );
    }
    let processed = app.state.drain_events().await;
    assert!(processed.is_ok(), "the worker failed on generated events: {processed:?}");
    eprintln!(
        "{} signed events stored ({about_t1} about t1's customer), {processed:?} processed; cases per route {seen:?}",
        stored.len()
    );
    let untouched = count(
        &app.db,
        "SELECT COUNT(*) FROM stripe_events WHERE status = 'processing' OR (status = 'received' AND attempts = 0)",
        None,
    )
    .await;
    assert_eq!(untouched, 0, "every due event was processed (or is waiting for its retry)");
}
