//! Owns the operations endpoints: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use super::auth::ServiceAuth;

pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready when the database would take a write now; a load balancer stops sending traffic
/// otherwise (a 2xx must mean durable, so a database that only answers reads is not ready).
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.store.can_write().await {
        (StatusCode::OK, axum::Json(json!({ "status": "ready" })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "the database takes no write" })))
    }
}

pub async fn metrics(_: ServiceAuth, State(state): State<AppState>) -> impl IntoResponse {
    // Gauges read from the database at scrape time, so every replica reports the shared truth.
    if let Ok(stats) = state.store.event_stats(state.clock.now()).await {
        for (status, count) in stats.by_status {
            metrics::gauge!("hydra_stripe_events", "status" => status).set(count as f64);
        }
        metrics::gauge!("hydra_stripe_event_oldest_unprocessed_age_seconds")
            .set(stats.oldest_unprocessed_age as f64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
