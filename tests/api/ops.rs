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
    hydra_billing::with_db!(&app.db, |pool| pool.close().await);
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
