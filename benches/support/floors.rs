//! Owns the floors every service figure is compared with: an axum GET with nothing behind it,
//! an axum POST that checks a webhook's signature and parses its JSON (what any intake must
//! do before it stores anything), and the same POST made durable by the least any store can do
//! (an append to a file and an `fdatasync` before the 2xx). Shared by `throughput` (in
//! process) and the `bench_floors` example that `scripts/bench-wrk` runs as a process of its own.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

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
    checked_post(|_| async {})
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
    // Lives as long as the process, like the floor's server.
    std::thread::spawn({
        let shared = shared.clone();
        move || append_and_sync(file, &shared)
    });
    checked_post(move |body| {
        let shared = shared.clone();
        async move {
            let (synced, answer) = tokio::sync::oneshot::channel();
            {
                let mut appends = shared.0.lock().unwrap();
                appends.bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
                appends.bytes.extend_from_slice(&body);
                appends.waiting.push(synced);
            }
            shared.1.notify_one();
            answer.await.unwrap();
        }
    })
}

/// `POST /`: 400 unless the `Stripe-Signature` matches and the body is JSON (both checked, as
/// an intake must), else `then` with the body and 200 once it is done.
fn checked_post<F, Fut>(then: F) -> Router
where
    F: Fn(axum::body::Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let secrets = Arc::new(vec![Secret::new(WEBHOOK_SECRET)]);
    Router::new().route(
        "/",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (secrets, then) = (secrets.clone(), then.clone());
            async move {
                let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
                let verified = hydra_billing::http::webhooks::verify_signature(
                    header,
                    &body,
                    &secrets,
                    Clock::System.now(),
                );
                let parsed = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
                if !(verified.is_ok() && parsed) {
                    return axum::http::StatusCode::BAD_REQUEST;
                }
                then(body).await;
                axum::http::StatusCode::OK
            }
        }),
    )
}

/// What the appending thread has to write: the bodies, and who waits for them to be synced.
#[derive(Default)]
struct Appends {
    bytes: Vec<u8>,
    waiting: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// The appending thread: writes and syncs whatever gathered, then answers its waiters.
fn append_and_sync(mut file: std::fs::File, shared: &(Mutex<Appends>, Condvar)) {
    let (appends, wake) = shared;
    loop {
        let group = {
            let mut gathered = wake.wait_while(appends.lock().unwrap(), |a| a.waiting.is_empty()).unwrap();
            std::mem::take(&mut *gathered)
        };
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
