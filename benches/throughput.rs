//! Throughput benchmarks (not tests): access checks (with their p99) and reserve+commit per second
//! over HTTP from 32 clients, each beside a baseline measured in the same run (a bare axum
//! endpoint; a bare single-row UPDATE), the webhook intake beside an endpoint that only verifies
//! and parses, and the reset job's time for 100,000 due tenants. SQLite always; PostgreSQL when
//! HYDRA_BENCH_POSTGRES_URL is set. Run: `cargo bench --bench throughput`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use hydra_billing::billing::Billing;
use hydra_billing::config::Config;
use hydra_billing::domain::clock::Clock;
use hydra_billing::http::{AppState, Application};
use hydra_billing::store::Store;
use hydra_billing::with_db;

mod support;
use support::{SERVICE_TOKEN, sim_post};

const CONCURRENCY: usize = 32;

fn seconds() -> Duration {
    Duration::from_secs(std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5))
}

/// Runs `op` from CONCURRENCY tasks for the bench duration; returns operations per second.
async fn per_second<F, Fut>(op: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    timed(op).await.0
}

/// The same, with the 99th percentile of one operation's time.
async fn timed<F, Fut>(op: F) -> (f64, Duration)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let deadline = started + seconds();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut took = Vec::new();
                while Instant::now() < deadline {
                    let one = Instant::now();
                    op().await;
                    took.push(one.elapsed());
                }
                took
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    let p99 = all.get(all.len().saturating_sub(1) * 99 / 100).copied().unwrap_or_default();
    (rate, p99)
}

/// The webhook intake's floor: an axum POST that checks the signature and parses the event,
/// as the intake must before it stores anything, and answers 200.
async fn verify_and_parse() -> String {
    use axum::routing::post;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let secrets = Arc::new(vec![hydra_billing::config::Secret::new("whsec_fake_bench")]);
    let app = Router::new().route(
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
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Signed, distinct events posted to `url` from the bench's clients: (rate, p99).
async fn post_events(url: String) -> (f64, Duration) {
    let client = reqwest::Client::new();
    let counter = Arc::new(AtomicU64::new(0));
    timed(move || {
        let (client, url, counter) = (client.clone(), url.clone(), counter.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::to_vec(&serde_json::json!({
                "id": format!("evt_intake_{n}_{}", uuid::Uuid::new_v4().simple()), "type": "invoice.paid",
                "livemode": false, "created": 1,
                "data": {"object": {"object": "invoice", "id": "in_i", "customer": "cus_intake"}},
            }))
            .unwrap();
            let header = stripe_sim::signature_header("whsec_fake_bench", Clock::System.now(), &body);
            let r = client.post(&url).header("stripe-signature", header).body(body).send().await.unwrap();
            assert!(r.status().is_success());
        }
    })
    .await
}

/// The round with the median rate (its p99 with it).
fn median(mut rounds: Vec<(f64, Duration)>) -> (f64, Duration) {
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    rounds[rounds.len() / 2]
}

async fn bare_axum() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/", get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

struct Row {
    db: &'static str,
    webhooks: f64,
    intake: (f64, Duration),
    intake_floor: (f64, Duration),
    access: f64,
    access_p99: Duration,
    bare_http: f64,
    bare_p99: Duration,
    reserve_commit: f64,
    bare_update: f64,
    reset_100k: Duration,
}

/// Webhook events per second end to end: signed POSTs (verified and stored) from 16 clients while
/// a worker processes them (each a fetch-and-sync against the simulator).
async fn bench_webhooks(state: &AppState, base: &str, sim: &str, prices: &[String]) -> f64 {
    let customer =
        sim_post(sim, "/v1/customers", &[("email", "b@bench.test"), ("payment_method", "pm_card_visa")])
            .await;
    let customer = customer["id"].as_str().unwrap().to_owned();
    sim_post(sim, "/v1/subscriptions", &[("customer", &customer), ("items[0][price]", &prices[0])]).await;
    with_db!(&state.store, |pool| {
        sqlx::query("INSERT INTO tenants (id, name, created_at, updated_at, stripe_customer_id) VALUES ('hooked', '', 0, 0, $1)")
            .bind(&customer)
            .execute(pool)
            .await
            .map(|_| ())
    })
    .unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            let mut processed = 0;
            loop {
                let n = state.drain_events().await.unwrap();
                processed += n;
                if n == 0 {
                    if stop.load(Ordering::SeqCst) {
                        return processed;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let client = reqwest::Client::new();
    let url = format!("{base}/api/webhooks/stripe");
    per_second(move || {
        let (client, url, counter, customer) =
            (client.clone(), url.clone(), counter.clone(), customer.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::to_vec(&serde_json::json!({
                "id": format!("evt_bench_{n}"), "type": "invoice.paid", "livemode": false, "created": 1,
                "data": {"object": {"object": "invoice", "id": "in_b", "customer": customer}},
            }))
            .unwrap();
            let header = stripe_sim::signature_header("whsec_fake_bench", Clock::System.now(), &body);
            let r = client.post(&url).header("stripe-signature", header).body(body).send().await.unwrap();
            assert!(r.status().is_success());
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let processed = worker.await.unwrap();
    processed as f64 / started.elapsed().as_secs_f64()
}

async fn bench_db(name: &'static str, db: Store, bare_base: &str) -> Row {
    let sim =
        stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), stripe_sim::SimSettings::default())
            .await
            .unwrap();
    let product = sim_post(&sim.base_url, "/v1/products", &[("name", "Hydra Team")]).await;
    let mut prices = Vec::new();
    for interval in ["month", "year"] {
        let p = sim_post(
            &sim.base_url,
            "/v1/prices",
            &[
                ("product", product["id"].as_str().unwrap()),
                ("unit_amount", "2000"),
                ("currency", "usd"),
                ("recurring[interval]", interval),
            ],
        )
        .await;
        prices.push(p["id"].as_str().unwrap().to_owned());
    }
    let mut vars = support::env();
    vars.insert("STRIPE_API_BASE".into(), sim.base_url.clone());
    vars.insert("STRIPE_TEAM_MONTHLY_PRICE_ID".into(), prices[0].clone());
    vars.insert("STRIPE_TEAM_ANNUAL_PRICE_ID".into(), prices[1].clone());
    db.migrate_up().await.unwrap();
    let billing = Billing::open(Config::from_vars(&vars).unwrap(), db.clone(), Clock::System).await.unwrap();
    let state = AppState::new(billing);
    let app = Application::build(state.clone()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(false, std::future::pending()));
    // As `serve` does: on PostgreSQL the access cache is on while this listener runs.
    tokio::spawn(db.clone().listen_for_changes());
    let client = reqwest::Client::new();
    client
        .put(format!("{base}/api/tenants/bench"))
        .bearer_auth(SERVICE_TOKEN)
        .json(&serde_json::json!({"name": "Bench"}))
        .send()
        .await
        .unwrap();
    // Paid, so reserve+commit is never refused and measures the full write path.
    with_db!(&db, |pool| {
        sqlx::query("UPDATE tenants SET manual_plan_tier = 'business' WHERE id = 'bench'")
            .execute(pool)
            .await
            .map(|_| ())
    })
    .unwrap();
    db.tenant_changed("bench").await;

    // The floor and the access check alternate for three rounds and each reports its median:
    // one core's speed drifts over a run, and a single pair would compare different moments.
    let mut bare_rounds = Vec::new();
    let mut access_rounds = Vec::new();
    for _ in 0..3 {
        bare_rounds.push({
            let (client, url) = (client.clone(), format!("{bare_base}/"));
            timed(move || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    assert!(client.get(url).send().await.unwrap().status().is_success());
                }
            })
            .await
        });
        access_rounds.push({
            let (client, url) = (client.clone(), format!("{base}/api/tenants/bench/access?feature=jira"));
            timed(move || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let r = client.get(url).bearer_auth(SERVICE_TOKEN).send().await.unwrap();
                    assert!(r.status().is_success());
                }
            })
            .await
        });
    }
    let (bare_http, bare_p99) = median(bare_rounds);
    let (access, access_p99) = median(access_rounds);
    let reserve_commit = {
        let (client, base) = (client.clone(), base.clone());
        per_second(move || {
            let (client, base) = (client.clone(), base.clone());
            async move { support::reserve_commit(&client, &base).await }
        })
        .await
    };
    let bare_update = {
        let db = db.clone();
        per_second(move || {
            let db = db.clone();
            async move {
                with_db!(&db, |pool| {
                    sqlx::query("UPDATE tenants SET updated_at = $1 WHERE id = 'bench'")
                        .bind(1_i64)
                        .execute(pool)
                        .await
                        .map(|_| ())
                })
                .unwrap();
            }
        })
        .await
    };

    // Intake alone (verify, store, answer; no worker running), beside its floor, alternating.
    let floor_base = verify_and_parse().await;
    let mut intake_rounds = Vec::new();
    let mut floor_rounds = Vec::new();
    for _ in 0..3 {
        floor_rounds.push(post_events(format!("{floor_base}/")).await);
        intake_rounds.push(post_events(format!("{base}/api/webhooks/stripe")).await);
    }
    let (intake, intake_floor) = (median(intake_rounds), median(floor_rounds));
    with_db!(&db, |pool| sqlx::query("DELETE FROM stripe_events").execute(pool).await.map(|_| ())).unwrap();

    let webhooks = bench_webhooks(&state, &base, &sim.base_url, &prices).await;

    // 100,000 tenants whose window has ended, made set-based, then one reset job run.
    with_db!(&db, |pool| {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
             INSERT INTO tenants (id, name, created_at, updated_at, free_tier_fixes_used, free_tier_reset_at) \
             SELECT 'due-' || i, '', 0, 0, 3, 1000 + i FROM n",
        )
        .execute(pool)
        .await
        .map(|_| ())
    })
    .unwrap();
    let started = Instant::now();
    let reset = db.reset_free_tier_windows(Clock::System.now()).await.unwrap();
    let reset_100k = started.elapsed();
    assert_eq!(reset, 100_000);

    Row {
        db: name,
        webhooks,
        intake,
        intake_floor,
        access,
        access_p99,
        bare_http,
        bare_p99,
        reserve_commit,
        bare_update,
        reset_100k,
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and must not run it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bare = bare_axum().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        Store::connect(&format!("sqlite://{}", dir.path().join("bench.db").display())).await.unwrap();
    let mut rows = vec![bench_db("sqlite", sqlite, &bare).await];
    rows.extend(support::on_postgres(|store| bench_db("postgres", store, &bare)).await);
    println!(
        "\n{CONCURRENCY} concurrent clients, {}s per measurement (access and its floor: median of 3 alternating rounds), {} cores",
        seconds().as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<9} {:>10} {:>9} {:>11} {:>9} {:>6} {:>14} {:>11} {:>6} {:>11} {:>10}",
        "db",
        "access/s",
        "p99",
        "bare http/s",
        "p99",
        "ratio",
        "reserve+com/s",
        "bare upd/s",
        "ratio",
        "reset 100k",
        "webhooks/s"
    );
    let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1000.0);
    for r in &rows {
        println!(
            "{:<9} {:>10.0} {:>9} {:>11.0} {:>9} {:>6.2} {:>14.0} {:>11.0} {:>6.2} {:>10.2}s {:>10.0}",
            r.db,
            r.access,
            ms(r.access_p99),
            r.bare_http,
            ms(r.bare_p99),
            r.access / r.bare_http,
            r.reserve_commit,
            r.bare_update,
            r.reserve_commit / r.bare_update,
            r.reset_100k.as_secs_f64(),
            r.webhooks,
        );
    }
    println!(
        "\n{:<9} {:>10} {:>9} {:>16} {:>9} {:>6}",
        "db", "intake/s", "p99", "verify+parse/s", "p99", "ratio"
    );
    for r in &rows {
        println!(
            "{:<9} {:>10.0} {:>9} {:>16.0} {:>9} {:>6.2}",
            r.db,
            r.intake.0,
            ms(r.intake.1),
            r.intake_floor.0,
            ms(r.intake_floor.1),
            r.intake.0 / r.intake_floor.0
        );
    }
}
