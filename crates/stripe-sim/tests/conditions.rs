//! The simulator's real-world conditions through its HTTP API: latency on every call, Stripe's
//! 429 past the rate limit, seeded 500s before and after a write (the Idempotency-Key makes a
//! retry safe either way), and keys the conditions leave alone; `Simulator::stats` counts what
//! the conditions did.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use stripe_sim::{Conditions, SimSettings, SimStats, Simulator};

const KEY: &str = "sk_test_fake_conditions";
const EXEMPT: &str = "sk_test_fake_exempt";

async fn start(conditions: Conditions) -> Simulator {
    let settings = SimSettings { conditions, ..SimSettings::default() };
    Simulator::start("127.0.0.1:0".parse().unwrap(), settings).await.unwrap()
}

async fn post(
    sim: &Simulator,
    key: &str,
    path: &str,
    params: &[(&str, &str)],
    idem: Option<&str>,
) -> reqwest::Response {
    let mut req =
        reqwest::Client::new().post(format!("{}{path}", sim.base_url)).bearer_auth(key).form(params);
    if let Some(k) = idem {
        req = req.header("idempotency-key", k);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn every_call_waits_the_latency_and_exempt_keys_do_not() {
    let sim = start(Conditions {
        latency: Duration::from_millis(200),
        exempt_keys: vec![EXEMPT.into()],
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    assert!(post(&sim, KEY, "/v1/customers", &[], None).await.status().is_success());
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    let started = Instant::now();
    assert!(post(&sim, EXEMPT, "/v1/customers", &[], None).await.status().is_success());
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
    assert_eq!(sim.stats(), SimStats::default(), "slow is not failing");
}

#[tokio::test]
async fn past_the_rate_limit_calls_get_stripes_429() {
    let sim = start(Conditions { rate_limit: Some(5), ..Default::default() }).await;
    let mut limited = Vec::new();
    for _ in 0..20 {
        let r = post(&sim, KEY, "/v1/customers", &[], None).await;
        if r.status() == 429 {
            limited.push(r);
        }
    }
    assert!(limited.len() >= 10, "a burst of 20 against 5 a second is mostly refused: {}", limited.len());
    assert_eq!(
        sim.stats(),
        SimStats { rate_limited: limited.len() as u64, ..SimStats::default() },
        "every 429 counted, and nothing else"
    );
    let r = limited.pop().unwrap();
    assert_eq!(r.headers()["stripe-rate-limited-reason"], "global-rate");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // Another key has its own bucket.
    assert!(post(&sim, "sk_test_fake_other", "/v1/customers", &[], None).await.status().is_success());
    // The bucket refills: a second later the key is served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(post(&sim, KEY, "/v1/customers", &[], None).await.status().is_success());
}

#[tokio::test]
async fn failures_come_before_and_after_writes_and_the_key_makes_retries_safe() {
    let sim = start(Conditions {
        fail_rate: 0.5,
        seed: 3,
        hang: Some(Duration::from_millis(300)),
        exempt_keys: vec![EXEMPT.into()],
        ..Default::default()
    })
    .await;
    let mut failures = 0;
    let mut timeouts = 0;
    for i in 0..20 {
        let email = format!("c{i}@fail.test");
        let key = format!("create-{i}");
        // Retried under one key until it succeeds, as a careful client does.
        let mut tries = 0;
        loop {
            tries += 1;
            let r = post(&sim, KEY, "/v1/customers", &[("email", email.as_str())], Some(&key)).await;
            if r.status().is_success() {
                break;
            }
            // 500 before or after the write, or 504 once a held ("timed out") call gives up.
            assert!(matches!(r.status().as_u16(), 500 | 504), "{}", r.status());
            timeouts += usize::from(r.status() == 504);
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "api_error");
            failures += 1;
            assert!(tries < 40, "a 50% failure rate lets a retry through");
        }
    }
    assert!(failures >= 5, "half the calls fail: {failures}");
    // Whether a 500 came before or after the write, each customer exists exactly once.
    let list: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/customers", sim.base_url))
        .bearer_auth(EXEMPT)
        .query(&[("limit", "100")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let emails: Vec<&str> =
        list["data"].as_array().unwrap().iter().filter_map(|c| c["email"].as_str()).collect();
    for i in 0..20 {
        let email = format!("c{i}@fail.test");
        assert_eq!(emails.iter().filter(|e| **e == email).count(), 1, "{email} once: {emails:?}");
    }
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert_eq!(count(&sim.shared.failed), failures, "every failure was counted");
    let after = count(&sim.shared.failed_after_write);
    assert!(
        after > 0 && after < failures,
        "some 500s came after the write, some before: {after} of {failures}"
    );
    let stats = sim.stats();
    assert_eq!((stats.failed, stats.failed_after_write), (failures as u64, after as u64));
    assert_eq!(stats.timed_out, timeouts as u64, "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
}
