//! Generated inputs sent to every route, on whichever database the suite runs on: whatever a
//! caller sends (ids with NUL or any Unicode, odd query strings, JSON of any shape), the answer
//! is never a 500, and every API error has the error shape.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{ADMIN_TOKEN, SERVICE_TOKEN, spawn_with_stripe};

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

/// One generated request: which route, its path parameter, query and body.
#[derive(Debug, Clone)]
struct Case {
    route: usize,
    param: String,
    query: Vec<(String, String)>,
    body: Value,
    raw_body: bool,
    token_tenant: String,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..ROUTES.len(),
        text(),
        prop::collection::vec((key(), text()), 0..4),
        json_value(),
        any::<bool>(),
        prop_oneof![Just("t1".to_owned()), "[a-z0-9_]{1,10}"],
    )
        .prop_map(|(route, param, query, body, raw_body, token_tenant)| Case {
            route,
            param,
            query,
            body,
            raw_body,
            token_tenant,
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

/// Every route of the service, `{}` standing for its path parameter.
const ROUTES: &[(&str, &str, Auth)] = &[
    ("GET", "/healthz", Auth::None),
    ("GET", "/readyz", Auth::None),
    ("GET", "/metrics", Auth::Service),
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

/// No generated request gets a 500, and every `/api` error carries `{"error": {code, message}}`.
#[tokio::test]
async fn no_generated_input_on_any_route_gets_a_500() {
    let s = spawn_with_stripe().await;
    let app = &s.app;
    let mut runner = TestRunner::new(Config { cases: 1, ..Config::default() });
    let strategy = case();
    let mut failures = Vec::new();
    let mut seen = vec![0usize; ROUTES.len()];
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
        let token = app.tenant_token(&case.token_tenant);
        request = match auth {
            Auth::None => request,
            Auth::Service => request.bearer_auth(SERVICE_TOKEN),
            Auth::Tenant => request.bearer_auth(&token),
            Auth::Admin => request.bearer_auth(ADMIN_TOKEN).header("x-hydra-actor", "ops@hydra.test"),
            Auth::Session => request.header("cookie", format!("hydra_session={token}")),
        };
        if method != "GET" {
            request = if case.raw_body {
                request.header("content-type", "application/x-www-form-urlencoded").body(query.clone())
            } else {
                request.json(&case.body)
            };
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let shaped = || {
            serde_json::from_str::<Value>(&text)
                .is_ok_and(|v| v["error"]["code"].is_string() && v["error"]["message"].is_string())
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR
            || (path.starts_with("/api") && status.is_client_error() && !shaped())
        {
            failures.push(format!("{method} {path} {case:?} → {status} {text}"));
        }
    }
    assert!(seen.iter().all(|n| *n > 0), "every route was tried: {seen:?}");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
