//! Owns logs and metrics: JSON log lines carrying a request id, and the one Prometheus recorder
//! every app in the process shares.

use std::sync::OnceLock;

use axum::http::Request;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Span;
use tracing_subscriber::EnvFilter;

/// JSON lines on stdout; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    init_logging_default("info");
}

/// The same with another default level (the demo keeps its terminal for the URL: `warn`).
pub fn init_logging_default(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .try_init();
}

/// The span of one request. Only the method, the path and the request id: headers, query strings
/// and bodies can hold tokens, session ids or webhook payloads, which never go into logs.
pub fn request_span<B>(request: &Request<B>) -> Span {
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder; installed on first use, so several apps (tests) can share it.
/// The counters alerts take `increase()` of, present at 0 from the start: a counter created by
/// its first increment has no earlier sample, so Prometheus would never see that increase.
fn register_counters_at_zero() {
    for outcome in ["stored", "duplicate", "bad_signature", "store_failed"] {
        metrics::counter!("hydra_webhooks_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["ok", "refused", "unavailable", "rate_limited", "over_budget"] {
        metrics::counter!("hydra_stripe_calls_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("hydra_reconcile_drift_total").increment(0);
    metrics::counter!("hydra_double_subscriptions_total").increment(0);
}

pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if something else installed a recorder first; ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            register_counters_at_zero();
            handle
        })
        .clone()
}
