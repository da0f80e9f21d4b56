//! Owns the running service: shared state, the router with its middleware, and the
//! build-then-run split that lets tests start the real server on port 0.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::api;
use crate::clock::{Clock, Timestamp};
use crate::config::Config;
use crate::db::Db;
use crate::jobs;
use crate::telemetry;
use crate::with_db;

/// Calls a tenant may make per minute to the endpoints that reach Stripe.
pub const TENANT_CALLS_PER_MINUTE: u32 = 60;

/// Webhook bodies are limited to this too: a 413 is an event lost once Stripe stops retrying.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

pub struct Inner {
    pub config: Config,
    pub db: Db,
    pub clock: Clock,
    /// Set while `BILLING_ENABLED=false`: access is judged as if the clock stopped here.
    pub billing_disabled_since: Option<Timestamp>,
    pub metrics: PrometheusHandle,
    pub stripe: crate::stripe::StripeClient,
    /// Wakes the event worker when a webhook has been stored.
    pub worker_wake: tokio::sync::Notify,
    /// Per tenant, on the endpoints that call Stripe.
    pub tenant_limiter: crate::ratelimit::Limiter,
}

/// What every handler and job shares; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Connects, migrates and applies the rollback switch's bookkeeping.
    pub async fn new(config: Config, db: Db, clock: Clock) -> anyhow::Result<AppState> {
        db.migrate_up().await.context("cannot apply database migrations")?;
        let billing_disabled_since = billing_switch(&db, config.billing_enabled, clock.now()).await?;
        let stripe = crate::stripe::StripeClient::with_budget(
            &config.stripe.api_base,
            config.stripe.secret_key.clone(),
            config.stripe.calls_per_second,
        );
        Ok(AppState(Arc::new(Inner {
            config,
            db,
            clock,
            billing_disabled_since,
            metrics: telemetry::metrics_handle(),
            stripe,
            worker_wake: tokio::sync::Notify::new(),
            tenant_limiter: crate::ratelimit::Limiter::new(TENANT_CALLS_PER_MINUTE, 60),
        })))
    }

    pub fn wake_worker(&self) {
        self.worker_wake.notify_one();
    }

    /// The access rules applied now (or as of the freeze) with the configured grace period.
    pub fn effective(&self, billing: &crate::access::BillingState) -> crate::access::Effective {
        crate::access::effective_tier(billing, self.access_time(), self.config.grace_period_days)
    }

    /// The instant access rules are judged at: now, or the moment billing was disabled.
    pub fn access_time(&self) -> Timestamp {
        self.billing_disabled_since.unwrap_or_else(|| self.clock.now())
    }
}

/// Records the first start with billing disabled (kept across restarts and replicas) and clears
/// it once billing is enabled again.
async fn billing_switch(db: &Db, enabled: bool, now: Timestamp) -> anyhow::Result<Option<Timestamp>> {
    if enabled {
        with_db!(db, |pool| {
            sqlx::query("DELETE FROM billing_settings WHERE key = 'billing_disabled_since'")
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        return Ok(None);
    }
    let since: (String,) = with_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO billing_settings (key, value) VALUES ('billing_disabled_since', $1) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(now.to_string())
        .execute(pool)
        .await?;
        sqlx::query_as("SELECT value FROM billing_settings WHERE key = 'billing_disabled_since'")
            .fetch_one(pool)
            .await
    })?;
    let since = since.0.parse().context("billing_disabled_since is not a timestamp")?;
    tracing::warn!(billing_disabled_since = since, "BILLING_ENABLED=false: billing is frozen");
    Ok(Some(since))
}

pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The service's routes plus `extra` (the demo's own pages), behind the same middleware.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    api::routes()
        .merge(extra)
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(record_metrics))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(telemetry::request_span)
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Request counts and latencies by route template (never by tenant id).
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("hydra_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("hydra_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
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

    /// Serves HTTP and runs the background jobs until `shutdown` resolves.
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
        let scheduler = with_jobs.then(|| jobs::spawn_scheduler(self.state.clone()));
        let app = router_with(self.state.clone(), extra);
        let result = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await;
        if let Some(handle) = scheduler {
            handle.abort();
        }
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
