//! Benchmark (not a test): metering while Stripe is slow. Reserve+commit pairs per second and
//! their p99 from 16 clients, first alone, then while 8 tenants loop on opening Checkout Sessions
//! through a proxy that adds Stripe's real round trip (300 ms) to every call. Before the
//! checkout lease, a checkout held the tenant's row lock (SQLite's write lock) across its Stripe
//! calls and metering collapsed. SQLite always; PostgreSQL when HYDRA_BENCH_POSTGRES_URL is set.
//! Run: `cargo bench --bench checkout_latency` (BENCH_SECONDS, default 10; STRIPE_LATENCY_MS,
//! default 300).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The same proxy the tests use; the bench only slows calls, it never holds them.
#[path = "../tests/api/stripe_proxy.rs"]
#[allow(dead_code)]
mod stripe_proxy;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hydra_billing::billing::Billing;
use hydra_billing::config::Config;
use hydra_billing::domain::clock::Clock;
use hydra_billing::http::{AppState, Application};
use hydra_billing::store::Store;
use hydra_billing::with_db;
use stripe_proxy::StripeProxy;
use support::{AUTH_SECRET, SERVICE_TOKEN, reserve_commit};

const METERING_CLIENTS: usize = 16;
const CHECKOUT_TENANTS: usize = 8;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Pairs per second and the p99 of one pair, from METERING_CLIENTS clients for `seconds`.
async fn metering(base: &str, seconds: Duration) -> (f64, Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + seconds;
    let started = Instant::now();
    let tasks: Vec<_> = (0..METERING_CLIENTS)
        .map(|_| {
            let (client, base) = (client.clone(), base.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    reserve_commit(&client, &base).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    (all.len() as f64 / elapsed, p99)
}

struct Row {
    db: &'static str,
    alone: (f64, Duration),
    beside: (f64, Duration),
    checkouts: usize,
    checkout_median: Duration,
}

async fn bench_db(name: &'static str, store: Store, seconds: Duration, latency: Duration) -> Row {
    let sim = stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), Default::default()).await.unwrap();
    let price = support::team_prices("sk_test_fake_bench", &sim.base_url, &["month"]).await.remove(0);
    let proxy = StripeProxy::start(&sim.base_url).await;
    proxy.set_latency(latency);
    let mut vars = support::env();
    vars.insert("STRIPE_TEAM_MONTHLY_PRICE_ID".into(), price.clone());
    vars.insert("STRIPE_API_BASE".into(), proxy.base.clone());
    store.migrate_up().await.unwrap();
    let billing =
        Billing::open(Config::from_vars(&vars).unwrap(), store.clone(), Clock::System).await.unwrap();
    let app = Application::build(AppState::new(billing)).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(false, std::future::pending()));
    let client = reqwest::Client::new();
    for id in std::iter::once("bench".to_owned()).chain((0..CHECKOUT_TENANTS).map(|i| format!("buyer{i}"))) {
        client
            .put(format!("{base}/api/tenants/{id}"))
            .bearer_auth(SERVICE_TOKEN)
            .json(&serde_json::json!({"name": id}))
            .send()
            .await
            .unwrap();
    }
    // Paid, so a reserve is never refused and measures the full write path.
    with_db!(&store, |pool| {
        sqlx::query("UPDATE tenants SET manual_plan_tier = 'business' WHERE id = 'bench'")
            .execute(pool)
            .await
            .map(|_| ())
    })
    .unwrap();

    let alone = metering(&base, seconds).await;

    let stop = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = (0..CHECKOUT_TENANTS)
        .map(|i| {
            let token = hydra_billing::http::auth::mint(
                &hydra_billing::config::Secret::new(AUTH_SECRET),
                hydra_billing::http::auth::MintRequest {
                    tenant: &format!("buyer{i}"),
                    uid: "bench",
                    role: hydra_billing::http::auth::Role::BillingAdmin,
                    email: None,
                    ttl_secs: 3600,
                    now: Clock::System.now(),
                },
            )
            .unwrap();
            let (client, base, price, stop) = (client.clone(), base.clone(), price.clone(), stop.clone());
            tokio::spawn(async move {
                let mut took = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    let r = client
                        .post(format!("{base}/api/billing/checkout"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"price_id": price, "quantity": 1}))
                        .send()
                        .await
                        .unwrap();
                    // 429 once a tenant's 60 calls a minute are spent: wait as a client would.
                    if r.status() == 429 {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    assert!(r.status().is_success(), "{}", r.status());
                    took.push(t.elapsed());
                }
                took
            })
        })
        .collect();
    // Let the checkouts get going before measuring beside them.
    tokio::time::sleep(latency * 2).await;
    let beside = metering(&base, seconds).await;
    stop.store(true, Ordering::SeqCst);
    let mut checkout_times = Vec::new();
    for b in buyers {
        checkout_times.extend(b.await.unwrap());
    }
    checkout_times.sort();
    let checkout_median = checkout_times.get(checkout_times.len() / 2).copied().unwrap_or_default();
    Row { db: name, alone, beside, checkouts: checkout_times.len(), checkout_median }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and must not run it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    hydra_billing::stripe::install_crypto_provider();
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 10));
    let latency = Duration::from_millis(env_number("STRIPE_LATENCY_MS", 300));
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        Store::connect(&format!("sqlite://{}", dir.path().join("bench.db").display())).await.unwrap();
    let mut rows = vec![bench_db("sqlite", sqlite, seconds, latency).await];
    rows.extend(support::on_postgres(|store| bench_db("postgres", store, seconds, latency)).await);
    println!(
        "\nreserve+commit from {METERING_CLIENTS} clients, {}s each; beside {CHECKOUT_TENANTS} tenants looping on \
         checkout with Stripe slowed by {} ms per call",
        seconds.as_secs(),
        latency.as_millis()
    );
    println!(
        "{:<9} {:>12} {:>10} {:>12} {:>10} {:>8} {:>9} {:>10} {:>14}",
        "db", "alone/s", "p99", "beside/s", "p99", "ratio", "p99 x", "checkouts", "checkout p50"
    );
    for r in rows {
        println!(
            "{:<9} {:>12.0} {:>8.1}ms {:>12.0} {:>8.1}ms {:>8.2} {:>9.2} {:>10} {:>12.0}ms",
            r.db,
            r.alone.0,
            r.alone.1.as_secs_f64() * 1000.0,
            r.beside.0,
            r.beside.1.as_secs_f64() * 1000.0,
            r.beside.0 / r.alone.0,
            r.beside.1.as_secs_f64() / r.alone.1.as_secs_f64().max(1e-9),
            r.checkouts,
            r.checkout_median.as_secs_f64() * 1000.0
        );
    }
}
