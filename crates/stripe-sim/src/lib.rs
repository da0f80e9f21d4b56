//! stripe-sim: an offline, stateful stand-in for the Stripe API subset hydra-billing uses, served
//! over real HTTP with Stripe's wire format, errors, idempotency, API-version shapes, test clocks
//! and signed webhook deliveries. What it models and what it does not: README.md in this crate.
//!
//! Start it in-process with [`Simulator::start`] (tests bind port 0) or as
//! `hydra-billing stripe sim --port P`.

pub mod api;
pub mod billing;
pub mod cards;
pub mod entitlements;
pub mod error;
pub mod form;
pub mod objects;
pub mod rng;
pub mod spec;
pub mod webhooks;
pub mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{Mutex, Notify};

use crate::error::StripeError;
use crate::world::{CURRENT_API_VERSION, IdempotentResponse, World, render};

pub use crate::billing::{AfterRetries, Settings as BillingSettings};
pub use crate::webhooks::{Attempt, Chaos, sign, signature_header};

#[derive(Clone, Debug)]
pub struct SimSettings {
    pub billing: billing::Settings,
    pub chaos: Option<Chaos>,
    /// Waits between webhook attempts after a failure; the last one reached ends the retries.
    pub webhook_retry_delays: Vec<Duration>,
    /// How the API itself behaves: slow, rate-limited, failing (all off by default).
    pub conditions: Conditions,
}

impl Default for SimSettings {
    fn default() -> Self {
        // Stripe retries live events for up to 3 days; a simulator serving tests retries in
        // seconds so a receiver that was down briefly still gets every event during a test.
        let webhook_retry_delays = [100, 250, 500, 1000, 2000, 4000].map(Duration::from_millis).to_vec();
        SimSettings {
            billing: billing::Settings::default(),
            chaos: None,
            webhook_retry_delays,
            conditions: Conditions::default(),
        }
    }
}

/// The API as the real one behaves on a bad day, on demand: every call waits `latency` plus up
/// to `jitter`; more than `rate_limit` calls a second from one key are answered 429 `rate_limit`
/// (a token bucket, as Stripe limits); a seeded `fail_rate` share of calls fails, in three equal
/// parts: 500 `api_error` before the request is applied, 500 after it was (Stripe's 500s may
/// come after the write happened, which only an Idempotency-Key makes safe to retry), and no
/// answer for `hang` after it was applied (a timeout, for a client that waits less).
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    pub latency: Duration,
    pub jitter: Duration,
    pub rate_limit: Option<u32>,
    pub fail_rate: f64,
    pub seed: u64,
    /// How long a call that "times out" is held before it is answered 504 (default 30 s).
    pub hang: Option<Duration>,
    /// Keys the conditions leave alone: a test harness playing the Dashboard or the customer's
    /// browser calls with its own key (the simulator's own convenience; Stripe has none).
    pub exempt_keys: Vec<String>,
}

/// The mutable half of [`Conditions`]: the seeded randomness and each key's bucket.
struct ConditionsState {
    rng: rng::Rng,
    /// Per API key: (tokens left, when they were counted).
    buckets: std::collections::HashMap<String, (f64, std::time::Instant)>,
}

/// What the conditions decided for one call.
enum Verdict {
    Proceed,
    RateLimited,
    FailBefore,
    FailAfter,
    TimeoutAfter,
}

/// What every request handler and the deliverer share.
pub struct Shared {
    pub world: Mutex<World>,
    pub settings: SimSettings,
    /// Every delivery attempt, oldest first.
    pub attempts: Mutex<Vec<Attempt>>,
    /// What chaos mode did so far: deliveries sent twice, first attempts dropped.
    pub chaos_duplicates: std::sync::atomic::AtomicU64,
    pub chaos_dropped: std::sync::atomic::AtomicU64,
    pub wake: Notify,
    pub base_url: String,
    conditions: std::sync::Mutex<ConditionsState>,
    /// Calls answered 429 or 500 by the conditions so far, and of the 500s those that came
    /// after the request was applied.
    pub rate_limited: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub failed_after_write: std::sync::atomic::AtomicU64,
    pub timed_out: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The wait and the verdict for one call of `key`.
    fn judge(&self, key: &str) -> (Duration, Verdict) {
        let c = &self.settings.conditions;
        if c.exempt_keys.iter().any(|k| k == key) {
            return (Duration::ZERO, Verdict::Proceed);
        }
        let mut state = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
        let jitter = if c.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(state.rng.below(c.jitter.as_micros() as u64 + 1))
        };
        if let Some(limit) = c.rate_limit {
            let now = std::time::Instant::now();
            let (tokens, since) = state.buckets.entry(key.to_owned()).or_insert((f64::from(limit), now));
            *tokens = (*tokens + since.elapsed().as_secs_f64() * f64::from(limit)).min(f64::from(limit));
            *since = now;
            if *tokens < 1.0 {
                return (c.latency + jitter, Verdict::RateLimited);
            }
            *tokens -= 1.0;
        }
        let verdict = if c.fail_rate > 0.0 && state.rng.chance(c.fail_rate) {
            match state.rng.below(3) {
                0 => Verdict::FailBefore,
                1 => Verdict::FailAfter,
                _ => Verdict::TimeoutAfter,
            }
        } else {
            Verdict::Proceed
        };
        (c.latency + jitter, verdict)
    }
}

/// What the API's conditions and webhook chaos did so far, counted as each was decided: tests
/// assert on these to know the rate limiter and the failures really happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Calls answered 429 `rate_limit` by the rate limiter.
    pub rate_limited: u64,
    /// Calls failed on purpose by `fail_rate`: 500 before or after the request was applied, and
    /// the 504s after a hang.
    pub failed: u64,
    /// Of `failed`, those applied before failing (the 500s after the write, and the 504s).
    pub failed_after_write: u64,
    /// Of `failed`, those held for `hang` and then answered 504.
    pub timed_out: u64,
    /// Webhook deliveries chaos sent twice.
    pub webhooks_duplicated: u64,
    /// First webhook delivery attempts chaos dropped (then retried).
    pub webhooks_dropped: u64,
}

impl Shared {
    /// The counts so far.
    pub fn stats(&self) -> SimStats {
        let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        SimStats {
            rate_limited: read(&self.rate_limited),
            failed: read(&self.failed),
            failed_after_write: read(&self.failed_after_write),
            timed_out: read(&self.timed_out),
            webhooks_duplicated: read(&self.chaos_duplicates),
            webhooks_dropped: read(&self.chaos_dropped),
        }
    }
}

/// A running simulator.
pub struct Simulator {
    pub base_url: String,
    pub shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    deliverer: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
    advancer: tokio::task::JoinHandle<()>,
}

impl Simulator {
    /// Binds `addr` (port 0 for any) and serves until dropped.
    pub async fn start(addr: SocketAddr, settings: SimSettings) -> std::io::Result<Simulator> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let settings_seed = settings.conditions.seed;
        let shared = Arc::new(Shared {
            world: Mutex::new(World::serving_at(&base_url)),
            settings,
            attempts: Mutex::new(Vec::new()),
            chaos_duplicates: Default::default(),
            chaos_dropped: Default::default(),
            wake: Notify::new(),
            base_url: base_url.clone(),
            conditions: std::sync::Mutex::new(ConditionsState {
                rng: rng::Rng::new(settings_seed),
                buckets: Default::default(),
            }),
            rate_limited: Default::default(),
            failed: Default::default(),
            failed_after_write: Default::default(),
            timed_out: Default::default(),
        });
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let deliverer = tokio::spawn(webhooks::deliverer(shared.clone()));
        let ticker = tokio::spawn(realtime_ticker(shared.clone()));
        let advancer = tokio::spawn(advancer(shared.clone()));
        Ok(Simulator { base_url, shared, server, deliverer, ticker, advancer })
    }

    /// What the conditions (429s, injected failures) and chaos did so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Every webhook delivery attempt so far.
    pub async fn attempts(&self) -> Vec<Attempt> {
        self.shared.attempts.lock().await.clone()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.server.abort();
        self.deliverer.abort();
        self.ticker.abort();
        self.advancer.abort();
    }
}

/// Works off advancing test clocks after their `advance` request was answered: a moment later
/// (Stripe takes seconds; code that reads the clock without waiting for `ready` fails here too),
/// each clock runs to its target and turns `ready`.
async fn advancer(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut world = shared.world.lock().await;
        let pending = std::mem::take(&mut world.pending_advances);
        if pending.is_empty() {
            continue;
        }
        for (clock, target) in pending {
            api::finish_advance(&mut world, &shared.settings.billing, &clock, target);
        }
        drop(world);
        shared.wake.notify_one();
    }
}

/// Customers without a test clock live in real time: their renewals and retries run as the
/// system clock reaches them.
async fn realtime_ticker(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut world = shared.world.lock().await;
        let customers: Vec<String> = world
            .list_where("customer", |c| c["test_clock"].is_null())
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_owned))
            .collect();
        let now = world::system_now();
        billing::run_until(&mut world, &shared.settings.billing, &customers, now, |_, _| {});
        drop(world);
        shared.wake.notify_one();
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/checkout/{id}",
            axum::routing::get(api::pages::checkout_page).post(api::pages::checkout_submit),
        )
        .route("/portal/{id}", axum::routing::get(api::pages::portal_page).post(api::pages::portal_submit))
        .route("/invoice/{id}", axum::routing::get(api::pages::invoice_page).post(api::pages::invoice_submit))
        .fallback(dispatch)
        .with_state(shared)
}

/// One decoded API request.
pub struct Req {
    pub method: Method,
    /// Path segments after `/v1`.
    pub path: Vec<String>,
    pub params: Value,
    pub version: String,
    pub idempotency_key: Option<String>,
    pub request_id: String,
}

impl Req {
    /// `expand[]` parameter values.
    pub fn expand(&self) -> Vec<String> {
        self.params["expand"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&shared, method, uri, headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn check_key(headers: &HeaderMap) -> Result<String, StripeError> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(StripeError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, \
             using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        ));
    };
    let key = value.strip_prefix("Bearer ").unwrap_or(value).trim();
    if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
        Ok(key.to_owned())
    } else {
        // Never echo the key: show its last four characters only, as Stripe does.
        let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        Err(StripeError::unauthorized(format!(
            "Invalid API Key provided: ****{tail}. The simulator accepts test-mode keys only."
        )))
    }
}

async fn handle(
    shared: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, StripeError> {
    let path = uri.path();
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err(StripeError::no_such("route", path)
            .with("message", format!("Unrecognized request URL ({method}: {path}).")));
    };
    let key = check_key(&headers)?;
    let (wait, verdict) = shared.judge(&key);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    match verdict {
        Verdict::RateLimited => {
            shared.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut response = StripeError::rate_limited().into_response();
            response
                .headers_mut()
                .insert("stripe-rate-limited-reason", HeaderValue::from_static("global-rate"));
            response.headers_mut().insert("stripe-should-retry", HeaderValue::from_static("true"));
            return Ok(response);
        }
        Verdict::FailBefore => {
            shared.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(StripeError::api_error());
        }
        Verdict::Proceed | Verdict::FailAfter | Verdict::TimeoutAfter => {}
    }
    let raw = if method == Method::GET || method == Method::DELETE {
        uri.query().unwrap_or_default().as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    let params = form::decode(&raw)?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(spec) = spec::of(method.as_str(), &segments) {
        spec::check(&spec, &params)?;
    }
    let version =
        headers.get("stripe-version").and_then(|v| v.to_str().ok()).unwrap_or(CURRENT_API_VERSION).to_owned();
    world::check_version(&version)?;
    let idempotency_key = (method == Method::POST)
        .then(|| headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .flatten();
    let mut world = shared.world.lock().await;
    let request_id = world.new_id("req");
    let req = Req {
        method: method.clone(),
        path: rest.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        params,
        version,
        idempotency_key,
        request_id,
    };
    // Same key, same endpoint and parameters: the first response again; other parameters: an error.
    let fingerprint = format!("{} {} {}", req.method, path, req.params);
    if let Some((key, saved)) =
        req.idempotency_key.as_ref().and_then(|k| Some((k, world.idempotency.get(k)?)))
    {
        if saved.fingerprint != fingerprint {
            return Err(StripeError::idempotency(key));
        }
        let mut response = json_response(saved.status, &saved.body);
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }
    let result = api::route(&mut world, shared, &req);
    let (status, body) = match &result {
        Ok(object) => {
            let mut rendered = render(object, &req.version);
            world::expand(&world, &mut rendered, &req.expand(), &req.version);
            world::drop_includables(&mut rendered, &req.expand());
            (200, rendered)
        }
        Err(e) => (e.status, e.body()),
    };
    // Stripe does not save validation failures (they may be retried with the same key).
    let saved = result.is_ok() || result.as_ref().is_err_and(|e| e.kind != "invalid_request_error");
    if let (Some(key), true) = (&req.idempotency_key, saved) {
        world.idempotency.insert(key.clone(), IdempotentResponse { fingerprint, status, body: body.clone() });
    }
    drop(world);
    shared.wake.notify_one();
    match verdict {
        Verdict::FailAfter => {
            // Applied (and saved under its key), but the answer is lost to a 500.
            shared.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.failed_after_write.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(StripeError::api_error());
        }
        Verdict::TimeoutAfter => {
            // Applied, then no answer in time: the client's timeout fires first.
            shared.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.failed_after_write.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.timed_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(shared.settings.conditions.hang.unwrap_or(Duration::from_secs(30))).await;
            let mut timed_out = StripeError::api_error().with_status(504);
            timed_out.message = "The request timed out.".to_owned();
            return Err(timed_out);
        }
        _ => {}
    }
    let mut response = json_response(status, &body);
    if let Ok(id) = HeaderValue::from_str(&req.request_id) {
        response.headers_mut().insert("request-id", id);
    }
    Ok(response)
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, axum::Json(body.clone())).into_response()
}
