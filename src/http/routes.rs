//! Owns the route table of the HTTP API: which handler (one module per caller kind)
//! serves each path.

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use super::error::ApiError;
use super::{AppState, admin, assets, ops, pages, service, tenant};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(super::openapi::openapi_json))
        .route("/api/tenants/{id}", put(service::put_tenant))
        .route("/api/tenants/{id}/usage/{metric}/reserve", post(service::reserve))
        .route("/api/usage/reservations/{id}/commit", post(service::commit))
        .route("/api/usage/reservations/{id}/release", post(service::release))
        .route("/api/tenants/{id}/access", get(service::access))
        .route("/api/billing/status", get(tenant::status))
        .route("/api/billing/usage/reservations/{id}", get(tenant::reservation))
        .route("/api/billing/checkout", post(tenant::checkout))
        .route("/api/billing/checkout/session", get(tenant::checkout_session))
        .route("/api/billing/seats", post(tenant::seats))
        .route("/api/billing/upgrade", post(tenant::upgrade))
        .route("/api/billing/portal", post(tenant::portal))
        .route("/api/billing/resume", post(tenant::resume))
        .route("/api/admin/tenants/{id}/plan", post(admin::set_plan))
        .route("/api/admin/events", get(admin::list_events))
        .route("/api/admin/events/{id}/replay", post(admin::replay_event))
        .route("/api/webhooks/stripe", post(super::webhooks::receive))
        .route("/billing", get(pages::settings))
        .route("/billing/upgrade", get(pages::upgrade))
        .route("/billing/success", get(pages::success))
        .route("/billing/assets/{name}", get(pages::asset))
        .route("/billing/upgrade-prompt.js", get(assets::upgrade_prompt_js))
        .route("/billing/upgrade-prompt", get(assets::upgrade_prompt_demo))
        .route("/billing/session", post(assets::start_session))
}

/// Unknown paths: under `/billing` a person typed or followed a link, so they get a page; anywhere
/// else a program called, so it gets the error shape.
pub async fn not_found(State(state): State<AppState>, uri: Uri) -> Response {
    if uri.path() == "/billing" || uri.path().starts_with("/billing/") {
        return pages::page_not_found(&state);
    }
    ApiError::not_found("no such endpoint").into_response()
}

pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}
