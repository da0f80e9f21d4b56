//! Owns the proofs of the architecture: no Stripe call holds a database transaction (a checkout
//! held open at "Stripe" blocks no other writer), and the layers import only downward.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{SERVICE_TOKEN, eventually, spawn_with_stripe_proxy};

/// More checkouts than either pool has connections (SQLite 8, PostgreSQL 16): code that kept a
/// transaction open across the Stripe call would hold every connection, or SQLite's write lock.
const HELD_CHECKOUTS: usize = 20;
const WITHIN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn checkouts_held_open_at_stripe_block_no_other_request() {
    let (s, proxy) = spawn_with_stripe_proxy().await;
    let (app, prices) = (&s.app, &s.prices);
    for i in 0..HELD_CHECKOUTS {
        app.put_tenant(&format!("buyer{i}"), &json!({"name": "Buyer"})).await;
    }
    app.put_tenant("runner", &json!({"name": "Runner"})).await;

    proxy.hold(Method::POST, "/v1/checkout/sessions");
    let mut checkouts = Vec::new();
    for i in 0..HELD_CHECKOUTS {
        let (client, url, token, price) = (
            app.client.clone(),
            app.url("/api/billing/checkout"),
            app.tenant_token(&format!("buyer{i}")),
            prices.team_monthly.clone(),
        );
        checkouts.push(tokio::spawn(async move {
            client.post(url).bearer_auth(token).json(&json!({"price_id": price, "quantity": 1})).send().await
        }));
    }
    // Code that held a transaction across the calls would get stuck before this (SQLite's write
    // lock, or PostgreSQL's pool), so the checks below run either way and fail on such code.
    let all_held = eventually(Duration::from_secs(10), async || proxy.held() == HELD_CHECKOUTS).await;
    assert!(proxy.held() > 0, "no checkout reached Stripe's session call");

    // While they are held: metering, webhook intake and access checks all answer promptly.
    let reserve =
        tokio::time::timeout(WITHIN, app.reserve("runner", "fix")).await.expect("reserve within 2 s");
    assert_eq!(reserve.status(), 200);
    let id =
        reserve.json::<serde_json::Value>().await.unwrap()["reservation_id"].as_str().unwrap().to_owned();
    let commit = tokio::time::timeout(WITHIN, app.settle(&id, "commit")).await.expect("commit within 2 s");
    assert_eq!(commit.status(), 200);
    let event = json!({
        "id": "evt_held_checkout", "object": "event", "type": "customer.subscription.updated",
        "created": 1_767_225_600, "livemode": false,
        "data": {"object": {"object": "subscription", "id": "sub_x", "customer": "cus_nobody"}},
    });
    let stored = tokio::time::timeout(WITHIN, app.deliver(&event)).await.expect("webhook within 2 s");
    assert_eq!(stored, 200);
    let access = tokio::time::timeout(WITHIN, app.access("runner", "feature=workflows"))
        .await
        .expect("access within 2 s");
    assert_eq!(access.status(), 200);
    let put = tokio::time::timeout(
        WITHIN,
        app.client
            .put(app.url("/api/tenants/newcomer"))
            .bearer_auth(SERVICE_TOKEN)
            .json(&json!({"name": "New"}))
            .send(),
    )
    .await
    .expect("a tenant write within 2 s")
    .unwrap();
    assert_eq!(put.status(), 201);
    assert!(all_held, "every checkout reached Stripe's session call at once ({} held)", proxy.held());
    assert_eq!(proxy.held(), HELD_CHECKOUTS, "the checkouts were still held throughout");

    proxy.release();
    for c in checkouts {
        assert_eq!(c.await.unwrap().unwrap().status(), 200, "each held checkout completes once released");
    }
}

/// Stripe as slow as it really is: concurrent checkouts of one tenant still make one Customer
/// and queue on the lease (each sees the session the one before made), while metering another
/// tenant stays prompt.
#[tokio::test]
async fn with_stripe_slowed_checkouts_queue_per_tenant_and_metering_stays_prompt() {
    let (s, proxy) = spawn_with_stripe_proxy().await;
    proxy.set_latency(Duration::from_millis(300));
    let (app, prices) = (&s.app, &s.prices);
    let sim = s.simulator.as_ref().expect("the simulator");
    app.put_tenant("slow", &json!({"name": "Slow", "billing_email": "slow@acme.test"})).await;
    let mut checkouts = Vec::new();
    for _ in 0..3 {
        let (client, url, token, price) = (
            app.client.clone(),
            app.url("/api/billing/checkout"),
            app.tenant_token("slow"),
            prices.team_annual.clone(),
        );
        checkouts.push(tokio::spawn(async move {
            client.post(url).bearer_auth(token).json(&json!({"price_id": price, "quantity": 2})).send().await
        }));
    }
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let id = app.run("runner", "fix").await;
        assert!(started.elapsed() < WITHIN, "reserve+commit {id} took {:?}", started.elapsed());
    }
    let mut sessions = Vec::new();
    for c in checkouts {
        let response = c.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        sessions.push(response.json::<serde_json::Value>().await.unwrap()["session_id"].clone());
    }
    sessions.sort_by_key(|s| s.as_str().unwrap_or_default().to_owned());
    sessions.dedup();
    assert_eq!(sessions.len(), 3, "each checkout opened its own session");
    let customers =
        crate::helpers::sim_call(sim, Method::GET, "/v1/customers", &[("email", "slow@acme.test")]).await;
    assert_eq!(customers["data"].as_array().unwrap().len(), 1, "exactly one Customer");
    let expired =
        crate::helpers::sim_call(sim, Method::GET, "/v1/events", &[("type", "checkout.session.expired")])
            .await;
    assert_eq!(expired["data"].as_array().unwrap().len(), 2, "each new session expired the one before");
}

/// What each layer may not name (design: domain ← store, stripe ← billing ← http ← cli).
const RULES: &[(&str, &[&str])] = &[
    (
        "src/domain",
        &[
            "crate::store",
            "crate::stripe",
            "crate::billing",
            "crate::http",
            "crate::cli",
            "crate::config",
            "crate::telemetry",
            "crate::ratelimit",
            "sqlx",
            "axum",
            "reqwest",
            "tokio",
            "with_db!",
            "stripe_sim",
        ],
    ),
    (
        "src/store",
        &["crate::http", "crate::billing", "crate::cli", "crate::stripe", "ApiError", "stripe_sim"],
    ),
    (
        "src/stripe",
        &["crate::http", "crate::billing", "crate::cli", "crate::store", "with_db!", "stripe_sim"],
    ),
    ("src/billing", &["crate::http", "crate::cli", "ApiError", "with_db!", "sqlx", "axum", "stripe_sim"]),
    ("src/http", &["crate::cli", "with_db!", "sqlx::", "stripe_sim"]),
    ("src/config.rs", &["crate::http", "crate::billing", "crate::store", "crate::cli", "stripe_sim"]),
    ("src/ratelimit.rs", &["crate::http", "crate::billing", "crate::store", "crate::cli", "ApiError"]),
];

fn rust_files(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_file() {
        out.push(path.to_owned());
    } else if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            rust_files(&entry.path(), out);
        }
    }
}

/// The source lines that name `needle`, ignoring comments (a comment may speak of any layer).
fn code_mentions(source: &str, needle: &str) -> Vec<usize> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or_default();
            code.contains(needle)
        })
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn layers_only_import_downward() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for (layer, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&root.join(layer), &mut files);
        assert!(!files.is_empty(), "{layer} has sources");
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            for needle in *forbidden {
                for line in code_mentions(&source, needle) {
                    broken.push(format!("{}:{line} names {needle}", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering rules broken:\n{}", broken.join("\n"));
}

#[test]
fn only_the_store_writes_sql_and_only_cli_reaches_the_simulator() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut broken = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&file).unwrap();
        if !relative.starts_with("src/store") {
            for needle in ["with_db!", "sqlx::query", "sqlx::"] {
                broken.extend(
                    code_mentions(&source, needle).into_iter().map(|l| format!("{relative}:{l} {needle}")),
                );
            }
        }
        if !relative.starts_with("src/cli") {
            broken.extend(
                code_mentions(&source, "stripe_sim")
                    .into_iter()
                    .map(|l| format!("{relative}:{l} stripe_sim")),
            );
        }
    }
    assert!(broken.is_empty(), "outside their layer:\n{}", broken.join("\n"));
}

/// The columns the access answer reads (`TenantRow::access_facts`).
const ACCESS_COLUMNS: [&str; 11] = [
    "plan_tier",
    "stripe_subscription_status",
    "stripe_current_period_end",
    "cancel_at_period_end",
    "cancel_at",
    "cancellation_reason",
    "grace_started_at",
    "manual_plan_tier",
    "manual_contract_ends_at",
    "stripe_seat_count",
    "entitlements",
];

/// The store functions whose `UPDATE tenants SET …` sets a column of [`ACCESS_COLUMNS`].
fn access_writers(source: &str) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    let starts: Vec<usize> = source.match_indices("    pub async fn ").map(|(i, _)| i).collect();
    for (n, start) in starts.iter().enumerate() {
        let body = &source[*start..starts.get(n + 1).copied().unwrap_or(source.len())];
        let name = body["    pub async fn ".len()..].split(['(', '<']).next().unwrap_or_default().to_owned();
        let sets_access = body.match_indices("UPDATE tenants SET").any(|(i, _)| {
            let rest = &body[i + "UPDATE tenants SET".len()..];
            let set_list = &rest[..rest.find("WHERE").unwrap_or(rest.len())];
            ACCESS_COLUMNS.iter().any(|c| set_list.contains(&format!("{c} =")))
        });
        if sets_access {
            found.push((name, body.contains("self.tenant_changed(")));
        }
    }
    found
}

/// The access cache is never stale after a write on this process: every store function that
/// writes a column the access answer reads tells the store so (`tenant_changed`).
#[test]
fn every_write_of_an_access_column_forgets_the_cached_answer() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/store"), &mut files);
    let mut writers = Vec::new();
    for file in files {
        writers.extend(access_writers(&std::fs::read_to_string(&file).unwrap()));
    }
    let silent: Vec<_> = writers.iter().filter(|(_, tells)| !tells).map(|(n, _)| n.clone()).collect();
    assert!(silent.is_empty(), "write access columns without tenant_changed: {silent:?}");
    let names: Vec<_> = writers.iter().map(|(n, _)| n.as_str()).collect();
    for known in ["set_manual_plan", "apply_sync", "expire_paid_access", "set_entitlements"] {
        assert!(names.contains(&known), "the scan sees {known}: {names:?}");
    }
    // The scan itself: a writer that does not tell is caught.
    let sample = "    pub async fn sneaky(&self) {\n        \"UPDATE tenants SET plan_tier = 'team' WHERE id = $1\"\n    }\n";
    assert_eq!(access_writers(sample), vec![("sneaky".to_owned(), false)]);
}

/// The rule checker itself: a forbidden name in code is found, the same name in a comment is not.
#[test]
fn the_layering_check_sees_code_and_ignores_comments() {
    let source =
        "use crate::http::AppState;\n// crate::http is only mentioned here\nlet x = 1; // crate::cli\n";
    assert_eq!(code_mentions(source, "crate::http"), vec![1]);
    assert!(code_mentions(source, "crate::cli").is_empty());
}

/// A server running its background tasks (as `serve` does) on a fresh database and a manual
/// clock; stopped by sending on the returned channel.
struct WithJobs {
    store: hydra_billing::store::Store,
    clock: hydra_billing::domain::clock::Clock,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: crate::helpers::TestDb,
}

async fn spawn_with_jobs() -> WithJobs {
    use hydra_billing::billing::Billing;
    use hydra_billing::http::{AppState, Application};

    let test_db = crate::helpers::fresh_db().await;
    let config = hydra_billing::config::Config::from_vars(&crate::helpers::test_env()).unwrap();
    test_db.db.migrate_up().await.unwrap();
    let clock = hydra_billing::domain::clock::Clock::manual(crate::helpers::START);
    let billing = Billing::open(config, test_db.db.clone(), clock.clone()).await.unwrap();
    let store = billing.store.clone();
    let app = Application::build(AppState::new(billing)).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(true, async move {
        let _ = stopped.await;
    }));
    WithJobs { store, clock, stop, server, _db: test_db }
}

/// The background tasks `serve` runs (the event worker and the jobs) belong to the server: they
/// work while it runs and are stopped, not left behind, when it shuts down.
#[tokio::test]
async fn background_tasks_run_with_the_server_and_stop_with_it() {
    let WithJobs { store, stop, server, _db, .. } = spawn_with_jobs().await;
    // An event for no customer: a running worker parks it.
    let store_event = |id: &'static str| {
        let store = store.clone();
        async move {
            let event = hydra_billing::store::NewEvent {
                id,
                kind: "invoice.paid",
                livemode: false,
                created: crate::helpers::START,
                customer_id: None,
                payload: "{}",
                status: "received",
                error: None,
                received_at: crate::helpers::START,
            };
            assert!(store.store_event(event).await.unwrap());
        }
    };
    let status_of = |id: &'static str| {
        let store = store.clone();
        async move {
            let all = store.list_events(None, 10).await.unwrap();
            all.into_iter().find(|e| e.id == id).map(|e| e.status).unwrap_or_default()
        }
    };
    store_event("evt_while_running").await;
    assert!(
        eventually(Duration::from_secs(5), async || status_of("evt_while_running").await == "parked").await,
        "the worker processes events while the server runs"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("shutdown waits for the background tasks and returns")
        .unwrap()
        .unwrap();
    store_event("evt_after_shutdown").await;
    // The worker polls every second even unwoken: three seconds would have seen it work.
    assert!(
        !eventually(Duration::from_secs(3), async || status_of("evt_after_shutdown").await != "received")
            .await,
        "no worker is left running after shutdown"
    );
}

/// Each job runs on its own cadence as the service's clock moves (a test clock here), and only
/// once per period: the run is claimed in the database, as replicas would have to.
#[tokio::test]
async fn each_job_runs_on_its_cadence_of_the_service_clock() {
    use hydra_billing::billing::jobs::Job;
    let w = spawn_with_jobs().await;
    let starts = || async {
        w.store.job_starts().await.unwrap().into_iter().collect::<std::collections::HashMap<_, _>>()
    };
    let all_at = |at: i64| async move {
        let s = starts().await;
        Job::ALL.iter().all(|j| s.get(j.name()).is_some_and(|t| *t >= at))
    };
    let start = crate::helpers::START;
    assert!(
        eventually(Duration::from_secs(10), async || all_at(start).await).await,
        "every job runs at start: {:?}",
        starts().await
    );
    // A minute on: the per-minute and per-10-second jobs are due, the others are not.
    w.clock.advance(60);
    let minute = |name: &'static str| async move { starts().await.get(name).copied() == Some(start + 60) };
    for name in ["reservation-expiry", "outbox"] {
        assert!(
            eventually(Duration::from_secs(10), async || minute(name).await).await,
            "{name} runs a minute on: {:?}",
            starts().await
        );
    }
    let s = starts().await;
    for job in [Job::PeriodEnd, Job::GraceExpiry, Job::FreeTierReset, Job::Reconcile] {
        assert_eq!(s.get(job.name()), Some(&start), "{} is not due after a minute", job.name());
    }
    // An hour on: every job has run again, once.
    w.clock.advance(3600 - 60);
    assert!(
        eventually(Duration::from_secs(10), async || all_at(start + 3600).await).await,
        "every job runs an hour on: {:?}",
        starts().await
    );
    let s = starts().await;
    assert!(Job::ALL.iter().all(|j| s.get(j.name()) == Some(&(start + 3600))), "{s:?}");
    w.stop.send(()).unwrap();
    let _ = w.server.await;
}

/// A run that outlasted its period (slow SMTP, a long reconcile) records its outcome without
/// moving the start back behind the claim made since, so the job is not run a second time.
#[tokio::test]
async fn a_late_record_never_moves_a_jobs_start_back() {
    let test_db = crate::helpers::fresh_db().await;
    test_db.db.migrate_up().await.unwrap();
    let store = &test_db.db;
    let t = crate::helpers::START;
    assert!(store.claim_job_run("outbox", t, 10).await.unwrap());
    assert!(store.claim_job_run("outbox", t + 10, 10).await.unwrap(), "the next period is claimed");
    store.record_job_run("outbox", t, "ok", 1).await.unwrap();
    let starts: std::collections::HashMap<_, _> = store.job_starts().await.unwrap().into_iter().collect();
    assert_eq!(starts.get("outbox"), Some(&(t + 10)));
    assert!(!store.claim_job_run("outbox", t + 10, 10).await.unwrap(), "that period stays claimed once");
}
