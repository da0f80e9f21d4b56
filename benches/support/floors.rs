//! Owns the floors every service figure is compared with: an axum GET with nothing behind it,
//! an axum POST that checks a webhook's signature and parses its JSON (what any intake must
//! do before it stores anything), and the same POST made durable by the least any store can do
//! (an append to a file and an `fdatasync` before the 2xx). Shared by `throughput` (in
//! process) and the `bench_floors` example that `scripts/bench-wrk` runs as a process of its own.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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
                if verified_and_parsed(&headers, &body, &secrets) {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::BAD_REQUEST
                }
            }
        }),
    )
}

/// What [`verify_and_parse`] checks: the signature, then the JSON.
fn verified_and_parsed(headers: &axum::http::HeaderMap, body: &[u8], secrets: &[Secret]) -> bool {
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let verified =
        hydra_billing::http::webhooks::verify_signature(header, body, secrets, Clock::System.now());
    let parsed = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    verified.is_ok() && parsed
}

/// What the appending thread has to write: the bodies, and who waits for them to be synced.
#[derive(Default)]
struct Appends {
    bytes: Vec<u8>,
    waiting: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// `POST /`: [`verify_and_parse`], then the body appended to a file in `dir`, answered only
/// once an `fdatasync` covers it. Bodies that arrive during one sync share the next (group
/// commit on a thread of its own, so one group is written while the next gathers).
///
/// Why: the intake's ratio to verify + parse is bounded by the disk as much as by the service.
/// This is the cheapest intake that is durable before its 2xx (no database, no index, no
/// duplicate check, no event left to process): whatever it reaches on a machine, no design
/// that keeps that promise reaches more there.
pub fn verify_parse_and_sync(dir: &Path) -> Router {
    let file = std::fs::File::create(dir.join("appended-events")).unwrap();
    let shared = Arc::new((Mutex::new(Appends::default()), Condvar::new()));
    let appender = Arc::downgrade(&shared);
    std::thread::spawn(move || append_and_sync(file, appender));
    let secrets = Arc::new(vec![Secret::new(WEBHOOK_SECRET)]);
    Router::new().route(
        "/",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (secrets, shared) = (secrets.clone(), shared.clone());
            async move {
                if !verified_and_parsed(&headers, &body, &secrets) {
                    return axum::http::StatusCode::BAD_REQUEST;
                }
                let (synced, answer) = tokio::sync::oneshot::channel();
                {
                    let mut appends = shared.0.lock().unwrap();
                    appends.bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
                    appends.bytes.extend_from_slice(&body);
                    appends.waiting.push(synced);
                }
                shared.1.notify_one();
                answer.await.unwrap();
                axum::http::StatusCode::OK
            }
        }),
    )
}

/// The appending thread: writes and syncs whatever gathered, answers its waiters, until the
/// router that feeds it is gone.
fn append_and_sync(mut file: std::fs::File, shared: std::sync::Weak<(Mutex<Appends>, Condvar)>) {
    while let Some(shared) = shared.upgrade() {
        let group = {
            let (appends, wake) = &*shared;
            let appends = appends.lock().unwrap();
            let (mut appends, _) = wake
                .wait_timeout_while(appends, Duration::from_millis(100), |a| a.waiting.is_empty())
                .unwrap();
            std::mem::take(&mut *appends)
        };
        if group.waiting.is_empty() {
            continue;
        }
        file.write_all(&group.bytes).unwrap();
        file.sync_data().unwrap();
        for waiter in group.waiting {
            let _ = waiter.send(());
        }
    }
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
