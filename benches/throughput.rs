//! Throughput benchmarks (not tests), printed as one table: each hot path beside a floor
//! measured in the same run, with its ratio and p99 — the access check (bare axum GET), the
//! webhook intake (an endpoint that only verifies and parses; and, as the intake's ceiling, the
//! same endpoint with an `fdatasync`'d append before its 200), reserve + commit over 1,000 paid
//! tenants at 32 and 8 clients and reserve + release over 1,000 free ones (one-row UPDATE
//! commits); then webhooks end to end, the reset job for 100,000 due tenants, a renewal storm
//! against a slow, rate-limited simulator, and the `serve` binary's peak RSS with 100,000
//! tenants. SQLite always; PostgreSQL too when HYDRA_BENCH_POSTGRES_URL is set.
//! Run: `cargo bench --bench throughput` (`BENCH_SECONDS`, `BENCH_ROUNDS` lengthen it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hydra_billing::billing::Billing;
use hydra_billing::config::Config;
use hydra_billing::domain::clock::Clock;
use hydra_billing::http::{AppState, Application};
use hydra_billing::store::Store;
use hydra_billing::with_db;

#[path = "support/floors.rs"]
mod floors;
mod support;
use support::{SERVICE_TOKEN, sim_post};

const CONCURRENCY: usize = 32;

/// Alternating rounds of a measurement and its floor (`BENCH_ROUNDS`, 3 unless set).
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

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
    timed_by(CONCURRENCY, op).await
}

/// [`timed`] from `clients` tasks.
async fn timed_by<F, Fut>(clients: usize, op: F) -> (f64, Duration)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let deadline = started + seconds();
    let tasks: Vec<_> = (0..clients)
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

/// Signed, distinct events posted to `url` from the bench's clients: (rate, p99).
async fn post_events(url: String) -> (f64, Duration) {
    let client = reqwest::Client::new();
    let counter = Arc::new(AtomicU64::new(0));
    // Distinct across rounds too: a repeated id would be a cheaper duplicate.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    timed(move || {
        let (client, url, counter, tag) = (client.clone(), url.clone(), counter.clone(), tag.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let (header, body) = floors::signed_event(&tag, n, 2_000, Clock::System.now());
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

struct Row {
    db: &'static str,
    webhooks: f64,
    intake: Intake,
    access: f64,
    access_p99: Duration,
    bare_http: f64,
    bare_p99: Duration,
    reserve_commit: (f64, Duration),
    reserve_commit_8: (f64, Duration),
    free_reserve: (f64, Duration),
    bare_update: f64,
    reset_100k: Duration,
    storm: Storm,
}

/// Webhook events per second end to end: signed POSTs (verified and stored) from 32 clients while
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

/// The intake's figures: each the median of its rounds.
struct Intake {
    intake: (f64, Duration),
    /// Verify + parse.
    floor: (f64, Duration),
    /// Verify + parse + an `fdatasync`'d append: the most any durable intake reaches here.
    durable: (f64, Duration),
}

/// The intake alone (verify, store, answer; no worker running) beside its floors, alternating
/// rounds; the stored events are deleted after.
async fn intake(db: &Store, base: &str) -> Intake {
    let floor_base = floors::serve(floors::verify_and_parse()).await;
    let appended = tempfile::tempdir().unwrap();
    let durable_base = floors::serve(floors::verify_parse_and_sync(appended.path())).await;
    let mut intake_rounds = Vec::new();
    let mut floor_rounds = Vec::new();
    let mut durable_rounds = Vec::new();
    for _ in 0..rounds() {
        floor_rounds.push(post_events(format!("{floor_base}/")).await);
        durable_rounds.push(post_events(format!("{durable_base}/")).await);
        intake_rounds.push(post_events(format!("{base}/api/webhooks/stripe")).await);
    }
    with_db!(db, |pool| sqlx::query("DELETE FROM stripe_events").execute(pool).await.map(|_| ())).unwrap();
    // On PostgreSQL the deleted rows stay behind as dead tuples until autovacuum comes, and the
    // planner's statistics still count them: the storm that follows in the same database then
    // claimed its events through ~200,000 dead index entries (44 s instead of 27 s alone). A
    // bench artefact (production never deletes a burst of events at once), so cleaned here.
    if let hydra_billing::store::Db::Postgres(pool) = db.writer() {
        sqlx::query("VACUUM ANALYZE stripe_events").execute(pool).await.unwrap();
    }
    Intake { intake: median(intake_rounds), floor: median(floor_rounds), durable: median(durable_rounds) }
}

/// A SQLite store in a directory of its own (removed when the directory is dropped).
async fn sqlite_store(name: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::connect(&format!("sqlite://{}", dir.path().join(format!("{name}.db")).display()))
        .await
        .unwrap();
    (dir, db)
}

/// The service on `db` against a simulator of its own, served on loopback as `serve` runs it.
async fn service(db: &Store) -> (stripe_sim::Simulator, Vec<String>, AppState, String) {
    let sim =
        stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), stripe_sim::SimSettings::default())
            .await
            .unwrap();
    let prices = support::team_prices("sk_test_fake_bench", &sim.base_url, &["month", "year"]).await;
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
    (sim, prices, state, base)
}

/// Every figure of one database; with `paths_only`, the hot paths alone (access, intake,
/// metering: `BENCH_ONLY=paths`), the slower end-to-end figures left at zero.
async fn bench_db(name: &'static str, db: Store, bare_base: &str, paths_only: bool) -> Row {
    let (sim, prices, state, base) = service(&db).await;
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
    for _ in 0..rounds() {
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
    // Metered runs spread over 1,000 paid tenants (Hydra's customers; one insert each since the
    // access facts say paid) at 32 and at 8 clients, and over 1,000 free tenants, which take
    // the locked path that enforces the quota (released, so no tenant reaches its limit).
    with_db!(&db, |pool| {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
             INSERT INTO tenants (id, name, created_at, updated_at, manual_plan_tier) \
             SELECT 'paid-' || i, '', 0, 0, 'business' FROM n \
             UNION ALL SELECT 'free-' || i, '', 0, 0, NULL FROM n",
        )
        .execute(pool)
        .await
        .map(|_| ())
    })
    .unwrap();
    let runs = |tenants: &'static str, settle: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        let counter = Arc::new(AtomicU64::new(0));
        move || {
            let (client, base, counter) = (client.clone(), base.clone(), counter.clone());
            async move {
                let tenant = format!("{tenants}-{}", counter.fetch_add(1, Ordering::Relaxed) % 1000 + 1);
                support::reserve_settle(&client, &base, &tenant, settle).await
            }
        }
    };
    let reserve_commit = timed(runs("paid", "commit")).await;
    let reserve_commit_8 = timed_by(8, runs("paid", "commit")).await;
    let free_reserve = timed(runs("free", "release")).await;
    // The floor: a one-row UPDATE commit on the hot writers' connection, as fast as this machine
    // commits (SQLite waits for the disk on each).
    let bare_update = {
        let db = db.clone();
        per_second(move || {
            let db = db.clone();
            async move {
                hydra_billing::with_writer!(&db, |pool| {
                    // A changed value: SQLite commits an unchanged row without writing its log.
                    sqlx::query("UPDATE tenants SET updated_at = updated_at + $1 WHERE id = 'bench'")
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

    let intake = intake(&db, &base).await;

    let (webhooks, storm, reset_100k) = if paths_only {
        (0.0, Storm::default(), Duration::ZERO)
    } else {
        let webhooks = bench_webhooks(&state, &base, &sim.base_url, &prices).await;
        let storm = storm(&db).await;

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
        (webhooks, storm, reset_100k)
    };

    Row {
        db: name,
        webhooks,
        intake,
        access,
        access_p99,
        bare_http,
        bare_p99,
        reserve_commit,
        reserve_commit_8,
        free_reserve,
        bare_update,
        reset_100k,
        storm,
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and must not run it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    hydra_billing::stripe::install_crypto_provider();
    // BENCH_ONLY=webhooks: webhooks end to end alone (intake and fetch-and-sync), both databases.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("webhooks") {
        let (_dir, db) = sqlite_store("hooks").await;
        let end_to_end = async |db: Store| {
            let (sim, prices, state, base) = service(&db).await;
            bench_webhooks(&state, &base, &sim.base_url, &prices).await
        };
        println!("webhooks end to end (32 clients), sqlite: {:.0}/s", end_to_end(db).await);
        if let Some(rate) = support::on_postgres(end_to_end).await {
            println!("webhooks end to end (32 clients), postgres: {rate:.0}/s");
        }
        return;
    }
    // BENCH_ONLY=intake: the webhook intake beside its floor alone, both databases.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("intake") {
        let (_dir, db) = sqlite_store("intake").await;
        let alone = async |db: Store| {
            let (_sim, _prices, _state, base) = service(&db).await;
            intake(&db, &base).await
        };
        let mut runs = vec![("sqlite", alone(db).await)];
        runs.extend(support::on_postgres(alone).await.map(|r| ("postgres", r)));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        for (
            name,
            Intake { intake: (rate, p99), floor: (floor, floor_p99), durable: (durable, durable_p99) },
        ) in runs
        {
            println!(
                "webhook intake, {name}: {rate:.0}/s p99 {:.2}ms; verify+parse {floor:.0}/s p99 {:.2}ms; ratio {:.2}; \
                 verify+parse+fdatasync'd append {durable:.0}/s p99 {:.2}ms, ratio {:.2}",
                ms(p99),
                ms(floor_p99),
                rate / floor,
                ms(durable_p99),
                durable / floor,
            );
        }
        return;
    }
    // BENCH_ONLY=storm: the renewal storm alone, on SQLite and (with HYDRA_BENCH_POSTGRES_URL)
    // PostgreSQL: a quick figure while working on it.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("storm") {
        let (_dir, db) = sqlite_store("storm").await;
        db.migrate_up().await.unwrap();
        let mut storms = vec![("sqlite", storm(&db).await)];
        let on_pg = support::on_postgres(|db| async move {
            db.migrate_up().await.unwrap();
            storm(&db).await
        })
        .await;
        storms.extend(on_pg.map(|st| ("postgres", st)));
        for (name, st) in storms {
            println!(
                "renewal storm (300 ms, 100/s), {name}: drained in {:.1}s; {} events, {} customers; {:.2} Stripe reads per customer; {} answered 429",
                st.drained.as_secs_f64(),
                st.events,
                st.customers,
                st.reads_per_customer,
                st.rate_limited
            );
        }
        return;
    }
    // BENCH_ONLY=memory: the memory figure alone.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("memory") {
        let (peak_mib, asked) = memory().await;
        println!(
            "memory, sqlite: {peak_mib:.1} MiB peak RSS of `serve`, 100,000 tenants, {asked} access checks"
        );
        return;
    }
    let bare = floors::serve(floors::bare_get()).await;
    let (_dir, sqlite) = sqlite_store("bench").await;
    // BENCH_ONLY=paths: access, intake and metering alone, no memory figure (while working on them).
    let paths_only = std::env::var("BENCH_ONLY").as_deref() == Ok("paths");
    let mut rows = vec![bench_db("sqlite", sqlite, &bare, paths_only).await];
    rows.extend(support::on_postgres(|store| bench_db("postgres", store, &bare, paths_only)).await);
    let (peak_mib, asked) = if paths_only { (0.0, 0) } else { memory().await };
    println!(
        "\n{CONCURRENCY} concurrent clients unless said, {}s per measurement (access, intake and their floors: median of 3 alternating rounds), {} cores",
        seconds().as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:<9} {:>10} {:>9} {:>24} {:>9} {:>6}",
        "path", "db", "rate/s", "p99", "floor", "p99", "ratio"
    );
    let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1000.0);
    let line =
        |path: &str, db: &str, (rate, p99): (f64, Duration), floor: Option<(&str, f64, Option<Duration>)>| {
            let (name, floor_rate, floor_p99) = floor.unwrap_or(("", f64::NAN, None));
            println!(
                "{:<34} {:<9} {:>10.0} {:>9} {:>24} {:>9} {:>6}",
                path,
                db,
                rate,
                ms(p99),
                if name.is_empty() { String::new() } else { format!("{name} {floor_rate:.0}/s") },
                floor_p99.map(ms).unwrap_or_default(),
                if name.is_empty() { String::new() } else { format!("{:.2}", rate / floor_rate) },
            );
        };
    for r in &rows {
        let db = r.db;
        line("access check", db, (r.access, r.access_p99), Some(("bare GET", r.bare_http, Some(r.bare_p99))));
        let verify_parse = Some(("verify+parse", r.intake.floor.0, Some(r.intake.floor.1)));
        line("webhook intake", db, r.intake.intake, verify_parse);
        // Not a service figure: the ceiling the disk puts on any intake durable before its 2xx.
        line("  floor + fdatasync'd append", db, r.intake.durable, verify_parse);
        let update = Some(("bare UPDATE", r.bare_update, None));
        line("reserve+commit, paid", db, r.reserve_commit, update);
        line("reserve+commit, paid, 8 clients", db, r.reserve_commit_8, update);
        line("reserve+release, free (locked)", db, r.free_reserve, update);
        line("webhooks end to end (32 clients)", db, (r.webhooks, Duration::ZERO), None);
        println!("{:<34} {:<9} {:>9.2}s", "reset job, 100,000 due tenants", db, r.reset_100k.as_secs_f64());
        let st = &r.storm;
        println!(
            "{:<34} {:<9} {:>9.1}s  {} events, {} customers; {:.2} Stripe reads per customer; {} answered 429",
            "renewal storm (300 ms, 100/s)",
            db,
            st.drained.as_secs_f64(),
            st.events,
            st.customers,
            st.reads_per_customer,
            st.rate_limited,
        );
    }
    println!(
        "{:<34} {:<9} {:>8.1} MiB peak RSS of `serve`, 100,000 tenants, {asked} access checks",
        "memory", "sqlite", peak_mib
    );
}

/// The `serve` binary's peak resident memory (VmHWM) on a SQLite file of 100,000 tenants after
/// 32 clients asked for the access of every one of them, twice over (the cache holds its
/// capacity, 50,000, and evicts the rest): (peak RSS in MiB, access checks answered).
async fn memory() -> (f64, u64) {
    const TENANTS: u32 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("memory.db").display());
    let db = Store::connect(&url).await.unwrap();
    db.migrate_up().await.unwrap();
    with_db!(&db, |pool| {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
             INSERT INTO tenants (id, name, created_at, updated_at, manual_plan_tier) \
             SELECT 'm-' || i, 'Tenant ' || i, 0, 0, CASE WHEN i % 2 = 0 THEN 'team' END FROM n",
        )
        .execute(pool)
        .await
        .map(|_| ())
    })
    .unwrap();
    db.close().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hydra-billing"))
        .envs(support::env())
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, base, next) = (client.clone(), base.clone(), next.clone());
        clients.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= 2 * u64::from(TENANTS) {
                    return;
                }
                let url = format!("{base}/api/tenants/m-{}/access?feature=jira", n % u64::from(TENANTS) + 1);
                let r = client.get(url).bearer_auth(SERVICE_TOKEN).send().await.unwrap();
                assert!(r.status().is_success());
            }
        });
    }
    clients.join_all().await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let peak_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(f64::NAN);
    let _ = child.kill();
    let _ = child.wait();
    (peak_kib / 1024.0, 2 * u64::from(TENANTS))
}

/// A renewal storm: what it took and what it cost in Stripe reads.
#[derive(Default)]
struct Storm {
    customers: usize,
    events: usize,
    drained: Duration,
    reads_per_customer: f64,
    rate_limited: u64,
}

/// The count of Stripe calls answered 2xx, from the service's own metrics.
fn stripe_reads(state: &AppState) -> f64 {
    state
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with("hydra_stripe_calls_total{outcome=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// 10,000 events for 2,000 customers (five each, interleaved as renewals arrive) posted as fast
/// as 32 clients can, against a simulator that answers in 300 ms and allows 100 calls a second,
/// with the service's Stripe budget at 90 a second: how long until every event is processed,
/// how many reads each customer cost, and how many calls Stripe refused with 429.
async fn storm(db: &Store) -> Storm {
    const CUSTOMERS: usize = 2_000;
    const PER_CUSTOMER: usize = 5;
    // The setup plays the Dashboard with its own key, which the slow conditions leave alone.
    let setup = "sk_test_fake_storm_setup";
    let settings = stripe_sim::SimSettings {
        conditions: stripe_sim::Conditions {
            latency: Duration::from_millis(300),
            rate_limit: Some(100),
            exempt_keys: vec![setup.to_owned()],
            ..Default::default()
        },
        ..Default::default()
    };
    let sim = stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), settings).await.unwrap();
    let base = sim.base_url.clone();
    let price = support::team_prices(setup, &base, &["month"]).await.remove(0);
    let mut customers = Vec::with_capacity(CUSTOMERS);
    for chunk in (0..CUSTOMERS).collect::<Vec<_>>().chunks(50) {
        let mut made = tokio::task::JoinSet::new();
        for i in chunk {
            let (base, price, i) = (base.clone(), price.clone(), *i);
            made.spawn(async move {
                let email = format!("storm{i}@bench.test");
                let c = support::sim_post_as(
                    setup,
                    &base,
                    "/v1/customers",
                    &[("email", &email), ("payment_method", "pm_card_visa")],
                )
                .await;
                let id = c["id"].as_str().unwrap().to_owned();
                let sub = [("customer", id.as_str()), ("items[0][price]", price.as_str())];
                support::sim_post_as(setup, &base, "/v1/subscriptions", &sub).await;
                (i, id)
            });
        }
        customers.extend(made.join_all().await);
    }
    customers.sort();
    for (i, customer) in &customers {
        with_db!(db, |pool| {
            sqlx::query("INSERT INTO tenants (id, name, created_at, updated_at, stripe_customer_id) VALUES ($1, '', 0, 0, $2)")
                .bind(format!("storm-{i}"))
                .bind(customer)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .unwrap();
    }

    let mut vars = support::env();
    vars.insert("STRIPE_API_BASE".into(), base.clone());
    vars.insert("STRIPE_TEAM_MONTHLY_PRICE_ID".into(), price.clone());
    vars.insert("STRIPE_CALLS_PER_SECOND".into(), "90".into());
    let billing = Billing::open(Config::from_vars(&vars).unwrap(), db.clone(), Clock::System).await.unwrap();
    let state = AppState::new(billing.clone());
    let app = Application::build(state.clone()).await.unwrap();
    let url = format!("http://127.0.0.1:{}/api/webhooks/stripe", app.port());
    tokio::spawn(app.run_until(false, std::future::pending()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..billing.event_workers() {
        workers.spawn(billing.clone().event_worker());
    }
    let reads_before = stripe_reads(&state);
    let limited_before = sim.shared.rate_limited.load(Ordering::Relaxed);

    let started = Instant::now();
    let customers = Arc::new(customers.into_iter().map(|(_, c)| c).collect::<Vec<_>>());
    let next = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, url, customers, next) = (client.clone(), url.clone(), customers.clone(), next.clone());
        posters.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= CUSTOMERS * PER_CUSTOMER {
                    return;
                }
                let kind = if n.is_multiple_of(2) { "invoice.paid" } else { "customer.subscription.updated" };
                let customer = &customers[n % CUSTOMERS];
                let body = serde_json::to_vec(&serde_json::json!({
                    "id": format!("evt_storm_{n}"), "type": kind, "livemode": false, "created": 1_000 + n,
                    "data": {"object": {"object": "invoice", "id": format!("in_storm_{n}"), "customer": customer}},
                }))
                .unwrap();
                let header = stripe_sim::signature_header("whsec_fake_bench", Clock::System.now(), &body);
                let r = client.post(&url).header("stripe-signature", header).body(body).send().await.unwrap();
                assert!(r.status().is_success());
            }
        });
    }
    posters.join_all().await;
    // Drained when no event waits or is in hand; bounded, like every load here.
    let deadline = started + Duration::from_secs(300);
    loop {
        let stats = db.event_stats(Clock::System.now()).await.unwrap();
        let waiting: i64 = stats
            .by_status
            .iter()
            .filter(|(s, _)| s == "received" || s == "processing")
            .map(|(_, n)| n)
            .sum();
        if waiting == 0 || Instant::now() > deadline {
            assert_eq!(waiting, 0, "the storm did not drain within 300 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed();
    workers.abort_all();
    let processed: (i64,) = with_db!(db, |pool| {
        sqlx::query_as(
            "SELECT COUNT(*) FROM stripe_events WHERE id LIKE 'evt_storm_%' AND status = 'processed'",
        )
        .fetch_one(pool)
        .await
    })
    .unwrap();
    assert_eq!(processed.0 as usize, CUSTOMERS * PER_CUSTOMER, "every storm event is processed");
    Storm {
        customers: CUSTOMERS,
        events: CUSTOMERS * PER_CUSTOMER,
        drained,
        reads_per_customer: (stripe_reads(&state) - reads_before) / CUSTOMERS as f64,
        rate_limited: sim.shared.rate_limited.load(Ordering::Relaxed) - limited_before,
    }
}
