//! Owns the HTTP surface: `AppState` (HTTP's alone: the use cases plus what only requests need),
//! the router with its middleware, the one error shape, authentication, rate limits, handlers,
//! pages and the webhook endpoint; response bodies are built here. The build-then-run split lets
//! tests start the real server on port 0.

pub mod admin;
pub mod assets;
pub mod auth;
pub mod error;
pub mod gate;
pub mod openapi;
pub mod ops;
pub mod pages;
mod routes;
pub mod service;
pub mod tenant;
pub mod webhooks;

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::billing::Billing;
use crate::telemetry;

/// Calls a tenant may make per minute to the endpoints that reach Stripe.
pub const TENANT_CALLS_PER_MINUTE: u32 = 60;

/// Webhook bodies are limited to this too: a 413 is an event lost once Stripe stops retrying.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

pub struct Inner {
    /// The use cases, shared with jobs and the CLI; handlers reach its fields through `Deref`.
    pub billing: Billing,
    pub metrics: PrometheusHandle,
    /// Per tenant, on the endpoints that call Stripe.
    pub tenant_limiter: crate::ratelimit::Limiter,
}

impl Deref for Inner {
    type Target = Billing;
    fn deref(&self) -> &Billing {
        &self.billing
    }
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(billing: Billing) -> AppState {
        AppState(Arc::new(Inner {
            billing,
            metrics: telemetry::metrics_handle(),
            tenant_limiter: crate::ratelimit::Limiter::new(TENANT_CALLS_PER_MINUTE, 60),
        }))
    }
}

pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The service's routes plus `extra` (the demo's own pages), behind the same middleware.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    routes::routes()
        .merge(extra)
        // Applies to the routes above, so it must follow them: axum's own 405 has no body.
        .method_not_allowed_fallback(routes::method_not_allowed)
        .fallback(routes::not_found)
        // One layer, composed by ServiceBuilder (outermost first): `Router::layer` wraps each
        // route in a boxed service per call, and every box is cloned on every request. Six
        // layers applied one by one cost the access check a fifth of its throughput.
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(telemetry::request_span)
                        .on_response(log_response),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::from_fn(measured_in_our_shape))
                .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)),
        )
        .with_state(state)
}

/// A request that took longer than this is logged at INFO whatever its status.
const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// Each request's line: at INFO when it failed (4xx, 5xx) or was slow, else at DEBUG. One JSON
/// line per request at INFO cost 42% of the access check's throughput (52,000 against 90,000 a
/// second on one core), and at Hydra's rates the successes are a flood nobody reads; every
/// request is still counted in `hydra_http_requests_total`, and `RUST_LOG=hydra_billing::http=debug`
/// logs them all.
fn log_response(response: &Response, latency: Duration, _span: &tracing::Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_millis() as u64;
    if status >= 400 || latency >= SLOW_REQUEST {
        tracing::info!(status, latency_ms, "finished processing request");
    } else {
        tracing::debug!(status, latency_ms, "finished processing request");
    }
}

/// Request counts and latencies by route template (never by tenant id); and, since axum answers
/// a body over the limit with plain text, that answer in the one error shape instead. One
/// middleware for both: each `from_fn` boxes the rest of the stack again on every request.
async fn measured_in_our_shape(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none_or(|v| !v.as_bytes().starts_with(b"application/json"));
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && plain {
        response = error::ApiError::PayloadTooLarge.into_response();
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("hydra_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("hydra_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a static label (no allocation on the hot paths).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// A bound, not yet running server: tests read the port before it runs.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(state: AppState) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(state.config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", state.config.bind))?;
        Ok(Application { listener, state })
    }

    /// On a listener bound beforehand (tests that must know the URL before the config exists).
    pub fn on_listener(state: AppState, listener: TcpListener) -> Application {
        Application { listener, state }
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves HTTP and (with `with_jobs`) runs the background jobs until `shutdown` resolves;
    /// then the jobs and any work requests started are stopped before this returns.
    pub async fn run_until(
        self,
        with_jobs: bool,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.run_with_routes(Router::new(), with_jobs, shutdown).await
    }

    /// The same with `extra` routes served too (only `demo` adds any).
    pub async fn run_with_routes(
        self,
        extra: Router<AppState>,
        with_jobs: bool,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut background = JoinSet::new();
        if with_jobs {
            self.state.billing.spawn_background(&mut background);
        }
        let app = router_with(self.state.clone(), extra);
        let result = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await;
        background.shutdown().await;
        self.state.billing.stop_background().await;
        result.context("the HTTP server stopped")
    }
}

/// Resolves on Ctrl-C or SIGTERM, so deployments drain in-flight requests.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
