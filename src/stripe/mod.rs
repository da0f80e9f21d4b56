//! Owns every call to Stripe: a thin async client over reqwest with its own error type, retries
//! under one Idempotency-Key, a process-wide call budget, and one pager for list endpoints;
//! `objects` reads what Stripe returns (both API shapes), `setup` makes the catalogue.
//!
//! Why not async-stripe: it took about 5 minutes to build on our 2-core machines against about 1
//! minute for reqwest + serde, and its strict types reject objects of other API versions (a
//! webhook's shape follows the endpoint's version, not ours). Here objects stay `serde_json::Value`
//! and we read only the fields we use, so unknown fields are ignored and both shapes parse.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::Secret;
use crate::domain::clock::Clock;

pub mod objects;
pub mod setup;

pub use objects::{HANDLED_EVENTS, SubscriptionView, id_of, invoice_subscription, params};

/// Pinned on every call: the version of Stripe's example objects the simulator's shape facts
/// (`crates/stripe-sim/tests/stripe_shapes.json`) were derived from.
/// `stripe setup` creates the webhook endpoint with it, so events arrive in this shape too.
pub const STRIPE_API_VERSION: &str = "2026-07-29.dahlia";

#[derive(Debug, thiserror::Error)]
pub enum StripeCallError {
    /// Stripe answered with an error object (a 4xx that retrying will not fix).
    #[error("Stripe refused the request ({status} {kind}{}): {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Api { status: u16, kind: String, code: Option<String>, message: String, param: Option<String> },
    /// Network failure, timeout, 429 or 5xx after our retries: try again later.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// This process's own budget of Stripe calls is spent for this second.
    #[error("the Stripe call budget is spent; retry in {0} s")]
    OverBudget(u64),
}

impl StripeCallError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StripeCallError::Unavailable(_) | StripeCallError::OverBudget(_))
    }
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    timeout: Duration,
    base: String,
    key: Secret,
    max_retries: u32,
    backoff: Duration,
    /// One budget for every Stripe call of the process (reconcile included), well under
    /// Stripe's limits (25/s in test mode, 100/s live).
    budget: std::sync::Arc<crate::ratelimit::Limiter>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl StripeClient {
    pub fn new(base: &str, key: Secret) -> StripeClient {
        StripeClient::with_budget(base, key, 20, Duration::from_secs(20))
    }

    pub fn with_budget(base: &str, key: Secret, calls_per_second: u32, timeout: Duration) -> StripeClient {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        StripeClient {
            http,
            timeout,
            base: base.trim_end_matches('/').to_owned(),
            key,
            // Enough to ride out a few seconds of 429s at Stripe's test-mode rate.
            max_retries: 5,
            backoff: Duration::from_millis(250),
            budget: std::sync::Arc::new(crate::ratelimit::Limiter::new(calls_per_second, 1)),
        }
    }

    pub async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value, StripeCallError> {
        self.send(reqwest::Method::GET, path, query, None).await
    }

    /// POST with form-encoded `params` and an `Idempotency-Key` (derived from the operation by the
    /// caller, or random): every retry of this call reuses it, so Stripe applies it once.
    pub async fn post(
        &self,
        path: &str,
        params: &[(String, String)],
        idempotency_key: Option<String>,
    ) -> Result<Value, StripeCallError> {
        let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.send(reqwest::Method::POST, path, params, Some(key)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(String, String)],
        idempotency_key: Option<String>,
    ) -> Result<Value, StripeCallError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            self.spend_budget().await?;
            // The first request a `sent_at` scope sends: Stripe's answer is at least that fresh.
            let _ = SENT.try_with(|sent| {
                if sent.get().is_none() {
                    sent.set(Some(Instant::now()));
                }
            });
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.key.expose())
                .header("Stripe-Version", STRIPE_API_VERSION);
            request =
                if method == reqwest::Method::GET { request.query(params) } else { request.form(params) };
            if let Some(key) = &idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            // What a failed attempt was, and how long Stripe asked us to wait (Retry-After).
            let (outcome, asked_wait) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(60)));
                    // Stripe says outright when a retry cannot help (or must happen).
                    let should_retry = response
                        .headers()
                        .get("stripe-should-retry")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v == "true");
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if (200..300).contains(&status) {
                        metrics::counter!("hydra_stripe_calls_total", "outcome" => "ok").increment(1);
                        return Ok(body);
                    }
                    let error = &body["error"];
                    let text = |k: &str| error[k].as_str().map(str::to_owned);
                    let transient = status == 429
                        || status >= 500
                        || (status == 409 && text("code").as_deref() == Some("idempotency_key_in_use"));
                    if should_retry.unwrap_or(transient) {
                        let outcome = if status == 429 { "rate_limited" } else { "unavailable" };
                        metrics::counter!("hydra_stripe_calls_total", "outcome" => outcome).increment(1);
                        (StripeCallError::Unavailable(format!("HTTP {status}")), retry_after)
                    } else {
                        metrics::counter!("hydra_stripe_calls_total", "outcome" => "refused").increment(1);
                        return Err(StripeCallError::Api {
                            status,
                            kind: text("type").unwrap_or_else(|| "api_error".into()),
                            code: text("code"),
                            message: text("message").unwrap_or_else(|| "no message".into()),
                            param: text("param"),
                        });
                    }
                }
                // reqwest's error text names the URL and cause, never our headers.
                Err(e) => {
                    metrics::counter!("hydra_stripe_calls_total", "outcome" => "unavailable").increment(1);
                    (StripeCallError::Unavailable(e.without_url().to_string()), None)
                }
            };
            // A write is retried only under its Idempotency-Key (every POST here has one), so a
            // 500 or timeout after Stripe applied it cannot apply it twice; reads are safe.
            let retryable = method == reqwest::Method::GET || idempotency_key.is_some();
            if attempt >= self.max_retries || !retryable {
                return Err(outcome);
            }
            attempt += 1;
            tokio::time::sleep(asked_wait.unwrap_or_else(|| jittered(self.backoff * 2u32.pow(attempt - 1))))
                .await;
        }
    }
}

/// `base` plus up to half of it again, at random: clients that failed together do not retry
/// together.
fn jittered(base: Duration) -> Duration {
    let spread = base.as_millis() as u64 / 2;
    let random = (uuid::Uuid::new_v4().as_u128() % u128::from(spread.max(1))) as u64;
    base + Duration::from_millis(random)
}

impl StripeClient {
    /// The longest one call can take, every retry timing out and every back-off at its longest.
    pub fn longest_call(&self) -> Duration {
        let tries = self.max_retries + 1;
        let waits: Duration = (0..self.max_retries).map(|n| self.backoff * 2u32.pow(n) * 3 / 2).sum();
        self.timeout * tries + waits
    }

    /// Every object of a list endpoint, paging past `has_more` with `starting_after` (the one
    /// pager: subscriptions, entitlements and webhook endpoints all go through it).
    pub async fn list_all(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, StripeCallError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut page_query = params(query);
            page_query.push(("limit".into(), "100".into()));
            if let Some(a) = &after {
                page_query.push(("starting_after".into(), a.clone()));
            }
            let page = self.get(path, &page_query).await?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            after = data.last().and_then(|o| o["id"].as_str()).map(str::to_owned);
            all.extend(data);
            if page["has_more"] != true || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// Takes one call from the budget, waiting for the next second once if it is spent (a
    /// request should not wait longer), or for as long as it takes inside [`patiently`].
    async fn spend_budget(&self) -> Result<(), StripeCallError> {
        let waits = if PATIENT.try_with(|p| *p).unwrap_or(false) { PATIENT_WAITS } else { 1 };
        let mut waited = 0;
        loop {
            match self.budget.check("stripe", Clock::System.now()) {
                Ok(()) => return Ok(()),
                Err(retry_after) if waited >= waits => {
                    metrics::counter!("hydra_stripe_calls_total", "outcome" => "over_budget").increment(1);
                    return Err(StripeCallError::OverBudget(retry_after));
                }
                Err(_) => {
                    waited += 1;
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
            }
        }
    }
}

tokio::task_local! {
    static PATIENT: bool;
    static SENT: std::cell::Cell<Option<Instant>>;
}

/// Runs `work` and says when its first Stripe request was sent (after any wait for the call
/// budget), or `None` if it sent none: what was read reflects Stripe at that moment or later.
pub async fn sent_at<T>(work: impl std::future::Future<Output = T>) -> (T, Option<Instant>) {
    SENT.scope(std::cell::Cell::new(None), async {
        let out = work.await;
        (out, SENT.with(|sent| sent.get()))
    })
    .await
}

/// Seconds a patient caller waits for the budget before giving up (it refills every second, so
/// only a budget shared by far more work than it allows waits this long).
const PATIENT_WAITS: u32 = 120;

/// Runs `work` with Stripe calls that wait for the call budget instead of failing when it is
/// spent: for background work (the event workers), where waiting is the point; a request still
/// fails fast with `rate_limited`. Without this, a burst of events spent the budget and the rest
/// failed their attempt and were retried 10 s later, again all at once.
pub async fn patiently<T>(work: impl std::future::Future<Output = T>) -> T {
    PATIENT.scope(true, work).await
}

/// reqwest is built without a TLS provider of its own; ring is ours (smaller and quicker to build
/// than aws-lc). Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[tokio::test]
    async fn the_process_wide_budget_refuses_calls_beyond_it_without_sending_them() {
        // Nothing listens on port 9: every call that is sent fails as unavailable, so an
        // over-budget answer proves the call was never sent.
        let mut client = StripeClient::new("http://127.0.0.1:9", Secret::new("sk_test_fake_budget"));
        client.max_retries = 0;
        client.budget = std::sync::Arc::new(crate::ratelimit::Limiter::new(2, 3600));
        for _ in 0..2 {
            assert!(matches!(client.get("/v1/x", &[]).await, Err(StripeCallError::Unavailable(_))));
        }
        let over = client.get("/v1/x", &[]).await.unwrap_err();
        assert!(matches!(over, StripeCallError::OverBudget(_)));
    }

    /// Background work waits for the budget to refill instead of failing. One call per 4 s: a
    /// request's single 1 s wait would end over budget on the second call (a quarter token, or
    /// half if the wait spans two clock seconds); patient work sends it once the token is back.
    #[tokio::test]
    async fn patient_work_waits_for_the_budget_instead_of_failing() {
        let mut client = StripeClient::new("http://127.0.0.1:9", Secret::new("sk_test_fake_budget"));
        client.max_retries = 0;
        client.budget = std::sync::Arc::new(crate::ratelimit::Limiter::new(1, 4));
        let outcomes = patiently(async {
            let mut all = Vec::new();
            for _ in 0..2 {
                all.push(client.get("/v1/x", &[]).await);
            }
            all
        })
        .await;
        assert!(outcomes.iter().all(|o| matches!(o, Err(StripeCallError::Unavailable(_)))), "{outcomes:?}");
    }
}
