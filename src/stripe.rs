//! Owns every call to Stripe: a thin async client over reqwest, and lenient readers of the objects
//! it returns (both API shapes).
//!
//! Why not async-stripe: it took about 5 minutes to build on our 2-core machines against about 1
//! minute for reqwest + serde, and its strict types reject objects of other API versions (a
//! webhook's shape follows the endpoint's version, not ours). Here objects stay `serde_json::Value`
//! and we read only the fields we use, so unknown fields are ignored and both shapes parse.

use std::time::Duration;

use serde_json::Value;

use crate::config::Secret;

/// Pinned on every call: the version `../shared/stripe/fixtures3.json` was generated for.
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
        StripeClient::with_budget(base, key, 20)
    }

    pub fn with_budget(base: &str, key: Secret, calls_per_second: u32) -> StripeClient {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        StripeClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            max_retries: 3,
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
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if (200..300).contains(&status) {
                        metrics::counter!("hydra_stripe_calls_total", "outcome" => "ok").increment(1);
                        return Ok(body);
                    }
                    let error = &body["error"];
                    let text = |k: &str| error[k].as_str().map(str::to_owned);
                    if status == 429
                        || status >= 500
                        || (status == 409 && text("code").as_deref() == Some("idempotency_key_in_use"))
                    {
                        StripeCallError::Unavailable(format!("HTTP {status}"))
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
                Err(e) => StripeCallError::Unavailable(e.without_url().to_string()),
            };
            metrics::counter!("hydra_stripe_calls_total", "outcome" => "unavailable").increment(1);
            if attempt >= self.max_retries {
                return Err(outcome);
            }
            attempt += 1;
            tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
        }
    }
}

impl StripeClient {
    /// Takes one call from the budget, waiting for the next second once if it is spent.
    async fn spend_budget(&self) -> Result<(), StripeCallError> {
        for wait in [true, false] {
            match self.budget.check("stripe", crate::clock::Clock::System.now()) {
                Ok(()) => return Ok(()),
                Err(crate::error::ApiError::RateLimited { retry_after }) if !wait => {
                    metrics::counter!("hydra_stripe_calls_total", "outcome" => "over_budget").increment(1);
                    return Err(StripeCallError::OverBudget(retry_after));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1000)).await,
            }
        }
        Ok(())
    }
}

/// reqwest is built without a TLS provider of its own; ring is ours (smaller and quicker to build
/// than aws-lc). Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Form parameters in Stripe's nested encoding: `[("items[0][price]", "price_x"), …]`.
pub fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The id of an expandable field, whether it arrived as an id or as the object.
pub fn id_of(field: &Value) -> Option<&str> {
    field.as_str().or_else(|| field["id"].as_str())
}

/// What we read from a subscription, in either API shape.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionView {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub price_id: Option<String>,
    pub quantity: Option<i64>,
    pub interval: Option<String>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub tenant_metadata: Option<String>,
    pub latest_invoice: Option<String>,
    pub created: i64,
}

impl SubscriptionView {
    /// Reads a subscription object; `None` if it is not one.
    pub fn read(sub: &Value) -> Option<SubscriptionView> {
        if sub["object"] != "subscription" {
            return None;
        }
        let item = &sub["items"]["data"][0];
        // Current shape: periods on the item; before 2025-03-31: on the subscription.
        let period = |field: &str| item[field].as_i64().or_else(|| sub[field].as_i64());
        Some(SubscriptionView {
            id: sub["id"].as_str()?.to_owned(),
            customer: id_of(&sub["customer"])?.to_owned(),
            status: sub["status"].as_str()?.to_owned(),
            price_id: id_of(&item["price"]).map(str::to_owned),
            quantity: item["quantity"].as_i64().or_else(|| sub["quantity"].as_i64()),
            interval: item["price"]["recurring"]["interval"].as_str().map(str::to_owned),
            current_period_start: period("current_period_start"),
            current_period_end: period("current_period_end"),
            cancel_at_period_end: sub["cancel_at_period_end"].as_bool().unwrap_or(false),
            cancel_at: sub["cancel_at"].as_i64(),
            cancellation_reason: sub["cancellation_details"]["reason"].as_str().map(str::to_owned),
            tenant_metadata: sub["metadata"]["hydra_tenant_id"].as_str().map(str::to_owned),
            latest_invoice: id_of(&sub["latest_invoice"]).map(str::to_owned),
            created: sub["created"].as_i64().unwrap_or(0),
        })
    }

    pub fn is_live(&self) -> bool {
        is_live_status(&self.status)
    }
}

/// Not ended: Stripe may still charge it (design.md: any status but canceled and
/// incomplete_expired is live, so unpaid and paused are too).
pub fn is_live_status(status: &str) -> bool {
    !matches!(status, "canceled" | "incomplete_expired")
}

/// The subscription an invoice belongs to, in either API shape.
pub fn invoice_subscription(invoice: &Value) -> Option<&str> {
    id_of(&invoice["parent"]["subscription_details"]["subscription"])
        .or_else(|| id_of(&invoice["subscription"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_subscription_shapes_read_the_same() {
        let current = json!({
            "object": "subscription", "id": "sub_1", "customer": "cus_1", "status": "active",
            "cancel_at_period_end": false, "cancel_at": null, "created": 5,
            "items": {"data": [{"price": {"id": "price_t", "recurring": {"interval": "month"}}, "quantity": 3,
                                "current_period_start": 10, "current_period_end": 20}]},
            "metadata": {"hydra_tenant_id": "t1"},
        });
        let mut legacy = current.clone();
        legacy["items"]["data"][0].as_object_mut().unwrap().remove("current_period_end");
        legacy["items"]["data"][0].as_object_mut().unwrap().remove("current_period_start");
        legacy["current_period_start"] = json!(10);
        legacy["current_period_end"] = json!(20);
        let a = SubscriptionView::read(&current).unwrap();
        assert_eq!(a, SubscriptionView::read(&legacy).unwrap());
        assert_eq!(
            (a.quantity, a.current_period_end, a.tenant_metadata.as_deref()),
            (Some(3), Some(20), Some("t1"))
        );
        assert_eq!(invoice_subscription(&json!({"subscription": "sub_1"})), Some("sub_1"));
        assert_eq!(
            invoice_subscription(&json!({"parent": {"subscription_details": {"subscription": "sub_2"}}})),
            Some("sub_2")
        );
    }
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
        let response = axum::response::IntoResponse::into_response(crate::error::ApiError::from(over));
        assert_eq!(response.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
    }
}
