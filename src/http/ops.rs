//! Owns the operations endpoints: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;
use super::auth::ServiceAuth;
use super::openapi::HealthAnswer;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = super::openapi::HealthAnswer)))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(HealthAnswer { status: "ok" })
}

/// Ready when the database would take a write now; a load balancer stops sending traffic
/// otherwise (a 2xx must mean durable, so a database that only answers reads is not ready).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The database takes writes", body = super::openapi::HealthAnswer),
        (status = 503, description = "The database takes no write", body = super::openapi::HealthAnswer),
    ))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.store.can_write().await {
        (StatusCode::OK, axum::Json(HealthAnswer { status: "ready" }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(HealthAnswer { status: "the database takes no write" }))
    }
}

/// Prometheus metrics (no tenant ids in labels).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("service_token" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "No or a wrong service token", body = super::openapi::ErrorBody),
    ))]
pub async fn metrics(_: ServiceAuth, State(state): State<AppState>) -> impl IntoResponse {
    // Gauges read from the database at scrape time, so every replica reports the shared truth.
    if let Ok(stats) = state.store.event_stats(state.clock.now()).await {
        // Every status is set, so one that empties reads 0 rather than its last count.
        for status in crate::billing::events::STATUSES {
            let count = stats.by_status.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            metrics::gauge!("hydra_stripe_events", "status" => status).set(count as f64);
        }
        metrics::gauge!("hydra_stripe_event_oldest_unprocessed_age_seconds")
            .set(stats.oldest_unprocessed_age as f64);
    }
    let now = state.clock.now();
    if let Ok((by_status, oldest_pending)) = state.store.outbox_stats(now).await {
        for status in ["pending", "sent", "failed"] {
            let count = by_status.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            metrics::gauge!("hydra_email_outbox", "status" => status).set(count as f64);
        }
        metrics::gauge!("hydra_email_outbox_oldest_pending_age_seconds").set(oldest_pending as f64);
    }
    for job in crate::billing::jobs::Job::ALL {
        metrics::gauge!("hydra_job_cadence_seconds", "job" => job.name()).set(job.every().as_secs_f64());
    }
    if let Ok(last_ok) = state.store.job_last_ok().await {
        for (name, at) in last_ok {
            metrics::gauge!("hydra_job_last_success_timestamp_seconds", "job" => name).set(at as f64);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
