//! Owns the floors every service figure is compared with: an axum GET with nothing behind it,
//! and an axum POST that checks a webhook's signature and parses its JSON (what any intake must
//! do before it stores anything). Shared by `throughput` (in process) and the `bench_floors`
//! example that `scripts/bench-wrk` runs as a process of its own.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use hydra_billing::config::Secret;
use hydra_billing::domain::clock::Clock;

/// The secret the floors and the service share in the benchmarks.
pub const WEBHOOK_SECRET: &str = "whsec_fake_bench";

/// `GET /` answering 200 with nothing behind it.
pub fn bare_get() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// `POST /`: 200 when the `Stripe-Signature` matches and the body is JSON, else 400.
pub fn verify_and_parse() -> Router {
    let secrets = Arc::new(vec![Secret::new(WEBHOOK_SECRET)]);
    Router::new().route(
        "/",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let secrets = secrets.clone();
            async move {
                let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
                let verified = hydra_billing::http::webhooks::verify_signature(
                    header,
                    &body,
                    &secrets,
                    Clock::System.now(),
                );
                let parsed = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
                if verified.is_ok() && parsed {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::BAD_REQUEST
                }
            }
        }),
    )
}

/// Serves `router` on a free loopback port in this runtime; its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// A signed, distinct renewal-like event for customer `n % customers`: (header, body).
pub fn signed_event(tag: &str, n: u64, customers: u64, now: i64) -> (String, String) {
    let body = serde_json::json!({
        "id": format!("evt_{tag}_{n}"), "object": "event", "type": "invoice.paid", "created": now,
        "livemode": false, "api_version": "2026-07-29.dahlia", "pending_webhooks": 1,
        "data": {"object": {"object": "invoice", "id": format!("in_{tag}_{n}"),
                            "customer": format!("cus_bench_{}", n % customers),
                            "status": "paid", "amount_paid": 2000, "currency": "usd"}},
    })
    .to_string();
    let header = stripe_sim::signature_header(WEBHOOK_SECRET, now, body.as_bytes());
    (header, body)
}
