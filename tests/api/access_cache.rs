//! The access answer from memory: never stale after a write on the same process, and on
//! PostgreSQL another replica's write is heard long before an entry's time to live runs out.

use std::time::{Duration, Instant};

use hydra_billing::billing::Billing;
use hydra_billing::domain::clock::Clock;
use hydra_billing::http::{AppState, Application};
use hydra_billing::store::Store;
use serde_json::json;

use crate::helpers::{START, TestApp, eventually, fresh_db, json, spawn_app_on};

/// A replica as `serve` runs it (background tasks, the change listener on PostgreSQL) on `db`.
async fn replica(db: Store) -> (String, Store) {
    let config = hydra_billing::config::Config::from_vars(&crate::helpers::test_env()).unwrap();
    db.migrate_up().await.unwrap();
    let billing = Billing::open(config, db.clone(), Clock::manual(START)).await.unwrap();
    let app = Application::build(AppState::new(billing)).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(true, std::future::pending()));
    (base, db)
}

async fn jira_allowed(client: &reqwest::Client, base: &str, tenant: &str) -> bool {
    let r = client
        .get(format!("{base}/api/tenants/{tenant}/access?feature=jira"))
        .bearer_auth(crate::helpers::SERVICE_TOKEN)
        .send()
        .await
        .unwrap();
    json(r).await["allowed"] == true
}

async fn set_business(app: &TestApp, tenant: &str, on: bool) {
    let tier = if on { json!("business") } else { json!(null) };
    let r = app.set_plan(tenant, &json!({"plan_tier": tier, "reason": "cache test"})).await;
    assert!(r.status().is_success());
}

/// On the replica that wrote, the next answer is the new one, every time: the write forgets the
/// cached answer before it is acknowledged.
#[tokio::test]
async fn a_write_is_never_followed_by_a_stale_answer_on_the_same_replica() {
    let test_db = fresh_db().await;
    let (base, db) = replica(test_db.db.clone()).await;
    // The same process's store, for the admin writes (its clone shares the cache).
    let app = spawn_app_on(test_db.clone(), Clock::manual(START), |_| {}).await;
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(10), async || db.access_cache_on()).await,
        "the cache is on (on PostgreSQL once the listener is up)"
    );
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    for round in 0..20 {
        let on = round % 2 == 0;
        // Read twice first: the second answer comes from memory.
        assert_eq!(jira_allowed(&client, &base, "t1").await, !on);
        assert_eq!(jira_allowed(&client, &base, "t1").await, !on);
        set_business(&app, "t1", on).await;
        assert_eq!(jira_allowed(&client, &base, "t1").await, on, "round {round}: stale after the write");
    }
}

/// PostgreSQL: another replica's write reaches this replica's cache by notification, well inside
/// the entry's time to live, and after this replica's listener is cut, what was written while it
/// was away is not answered from memory either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_write_is_heard_before_the_cached_answer_expires() {
    if std::env::var("HYDRA_TEST_POSTGRES_URL").is_err() {
        return; // One SQLite file has one writing process.
    }
    let test_db = fresh_db().await;
    let writer = spawn_app_on(test_db.clone(), Clock::manual(START), |_| {}).await;
    // The reader has its own pool and cache, as another process would.
    let (base, reader) = replica(Store::connect(&test_db.url).await.unwrap()).await;
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(10), async || reader.access_cache_on()).await,
        "the listener is up"
    );
    writer.put_tenant("t1", &json!({"name": "Acme"})).await;
    let ttl = Duration::from_secs(2);
    let mut slowest = Duration::ZERO;
    for round in 0..6 {
        let on = round % 2 == 0;
        assert_eq!(jira_allowed(&client, &base, "t1").await, !on);
        assert_eq!(jira_allowed(&client, &base, "t1").await, !on, "cached");
        if round == 4 {
            // Cut the reader's listener: a write made while it reconnects must not be missed.
            hydra_billing::with_db!(&writer.db, |pool| sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %hydra_tenant_changed%'"
            )
            .execute(pool)
            .await
            .map(|_| ()))
            .unwrap();
        }
        let written = Instant::now();
        set_business(&writer, "t1", on).await;
        let heard = eventually(ttl, async || jira_allowed(&client, &base, "t1").await == on).await;
        let took = written.elapsed();
        assert!(heard && took < ttl, "round {round}: the other replica answered stale for {took:?}");
        slowest = slowest.max(took);
    }
    eprintln!("another replica's write was answered after {slowest:?} at most");
}
