//! A worker killed while it holds a customer's lease: the customer's events wait only for the
//! short lease to lapse, then another process takes them over, with no claim-and-hand-back spin.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::cli::Serve;
use crate::helpers::{eventually, signed_webhook, spawn_with_stripe};
use crate::stripe_proxy::StripeProxy;

/// kill -9 of `serve` while its worker reads Stripe for a customer (so it holds that customer's
/// lease and has claimed the event): a new process processes the event once the 15 s lease
/// lapses, without reading Stripe for that customer in the meantime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_customer_is_taken_over_once_its_short_lease_lapses() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("lease1", "pm_card_visa").await;
    let proxy = StripeProxy::start(&s.sim().base_url).await;
    let mut env: Vec<(String, String)> = crate::helpers::stripe_env(s.sim(), &s.prices).into_iter().collect();
    env.retain(|(k, _)| k != "STRIPE_API_BASE");
    env.push(("STRIPE_API_BASE".into(), proxy.base.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = s.app.shared_db().url;

    proxy.hold(Method::GET, "/v1/subscriptions");
    let mut first = Serve::start_on(&url, &env);
    let event = json!({"id": "evt_dead_worker", "object": "event", "type": "customer.subscription.updated",
                       "created": 1_767_225_600, "livemode": false,
                       "data": {"object": {"object": "subscription", "id": "sub_x", "customer": customer}}});
    let client = reqwest::Client::new();
    let delivered = signed_webhook(&client, &format!("http://127.0.0.1:{}", first.port), &event).send().await;
    assert_eq!(delivered.unwrap().status(), 200);
    assert!(
        eventually(Duration::from_secs(20), async || proxy.held() == 1).await,
        "the worker claimed the event, leased the customer and is reading Stripe"
    );
    first.kill_9();
    let killed = Instant::now();
    proxy.release();

    let _second = Serve::start_on(&url, &env);
    let processed = eventually(Duration::from_secs(40), async || {
        s.app.db.list_events(Some("processed"), 10).await.unwrap().iter().any(|e| e.id == "evt_dead_worker")
    })
    .await;
    let waited = killed.elapsed();
    assert!(processed, "the dead worker's event was taken over");
    eprintln!("killed worker: its customer's event was processed {waited:?} after the kill");
    assert!(waited <= Duration::from_secs(25), "taken over about when the 15 s lease lapsed: {waited:?}");
    // The dead worker's read and the takeover's: nothing claimed the customer in between.
    let reads = proxy.spans(Method::GET, "/v1/subscriptions");
    let early: Vec<_> = reads
        .iter()
        .filter(|(_, start, _)| *start > killed && start.duration_since(killed) < Duration::from_secs(10))
        .collect();
    assert!(early.is_empty(), "no read of the leased customer while its lease held: {early:?}");
}
