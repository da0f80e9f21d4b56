//! Health, readiness and metrics.

use reqwest::StatusCode;

use crate::helpers::{error_of, json, spawn_app};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"), "every answer carries a request id");
    assert_eq!(json(app.client.get(app.url("/readyz")).send().await.unwrap()).await["status"], "ready");
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.db.close().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_need_the_service_token_and_count_requests_and_reservations() {
    let app = spawn_app().await;
    error_of(app.client.get(app.url("/metrics")).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    app.run("t1", "doc_run").await;
    app.reserve("t1", "doc_run").await;
    let text = app.metrics_text().await;
    assert!(text.contains("hydra_http_requests_total"), "{text}");
    assert!(text.contains("hydra_http_request_duration_seconds_bucket"), "{text}");
    assert!(
        text.contains(r#"hydra_usage_reservations_total{metric="doc_run",outcome="admitted"}"#),
        "{text}"
    );
    assert!(text.contains(r#"hydra_usage_reservations_total{metric="doc_run",outcome="refused"}"#), "{text}");
    assert!(
        text.contains(r#"route="/api/tenants/{id}/usage/{metric}/reserve""#),
        "routes are labelled by template: {text}"
    );
    assert!(!text.contains("\"t1\""), "no tenant ids in labels");
}

/// Readiness means a write could commit now: while another writer holds SQLite's write lock
/// past the probe's 2 s, `/readyz` says 503 (answering within about 2 s), and ready again once
/// the lock is gone; the probe never leaves a connection holding the lock. (PostgreSQL's probe
/// assigns a transaction id, which a row lock elsewhere does not block: this drill is SQLite's.)
#[tokio::test]
async fn readiness_fails_while_no_write_can_commit_and_recovers() {
    let app = spawn_app().await;
    let hydra_billing::store::Db::Sqlite(pool) = app.db.db() else { return };
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *holder).await.unwrap();
    let started = std::time::Instant::now();
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "answered in {:?}", started.elapsed());
    sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
    drop(holder);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "ready again, and the probe left no lock behind");
    // Writes go through as before.
    app.run("t1", "fix").await;
}

/// On SQLite too, a request waits about 2 s for a connection and then says the database is
/// unavailable (503, its own code, Retry-After) rather than hang; once the connection is free
/// again the same request succeeds. The one writer connection is held here as a stuck writer
/// would hold it. (PostgreSQL's bound is tested with an outage in `faults`.)
#[tokio::test]
async fn a_request_that_cannot_get_a_connection_answers_503_within_about_2_s() {
    let app = spawn_app().await;
    let hydra_billing::store::Db::Sqlite(writer) = app.db.writer() else {
        return; // PostgreSQL: see faults::a_postgres_outage_is_answered_fast_and_clearly_and_recovers_by_itself
    };
    let assert_refused_quickly = async |held: &str| {
        let started = std::time::Instant::now();
        let r = app.reserve("waits", "fix").await;
        let took = started.elapsed();
        assert!(r.headers().contains_key("retry-after"), "{held}");
        assert_eq!(
            error_of(r, StatusCode::SERVICE_UNAVAILABLE).await["code"],
            "database_unavailable",
            "{held}"
        );
        assert!(took < std::time::Duration::from_secs(4), "{held}: answered after {took:?}");
    };
    let stuck = writer.acquire().await.unwrap();
    assert_refused_quickly("the writer connection is held").await;
    drop(stuck);
    assert_eq!(app.reserve("waits", "fix").await.status(), StatusCode::OK, "free again: served");
}
