//! Owns the one error shape every endpoint answers with (the README's error codes), and its mapping
//! from each lower layer's error: a use case's [`BillingError`] is carried as it is, and only the
//! refusals HTTP itself makes (credentials, roles, feature gates) are added here.
//!
//! Each error fixes its status and `code`, and carries the details that code promises.
//! Unexpected failures become an opaque 500 whose cause is logged, never sent: database messages
//! can echo request data.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::billing::BillingError;
use crate::domain::clock::rfc3339_opt;
use crate::domain::ids::InvalidId;
use crate::store::StoreError;
use crate::stripe::StripeCallError;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What a use case refused or failed with.
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("this needs a paid plan again ({reason})")]
    SubscriptionRequired { reason: &'static str, upgrade_url: String },
    #[error("{feature} is not in your plan; it comes with {required_tier}")]
    FeatureNotInPlan { feature: &'static str, required_tier: &'static str, upgrade_url: String },
    /// The path exists but not with this method. HTTP's own 405 keeps its status (and axum's
    /// `Allow` header); the code is `invalid_request`, as for any request the caller must change.
    #[error("this endpoint does not accept {0}")]
    MethodNotAllowed(axum::http::Method),
    /// A body over [`super::BODY_LIMIT_BYTES`], whichever part of the stack met it first. HTTP's
    /// own 413 keeps its status; the code is `invalid_request`.
    #[error("the body is larger than {} bytes", super::BODY_LIMIT_BYTES)]
    PayloadTooLarge,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Billing(BillingError::invalid(message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::Billing(BillingError::not_found(message))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::Billing(BillingError::conflict(message))
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        ApiError::Billing(BillingError::RateLimited { retry_after })
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::SubscriptionRequired { .. } => (StatusCode::PAYMENT_REQUIRED, "subscription_required"),
            ApiError::FeatureNotInPlan { .. } => (StatusCode::PAYMENT_REQUIRED, "feature_not_in_plan"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
            ApiError::Billing(e) => match e {
                BillingError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                BillingError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                BillingError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
                BillingError::FreeTierLimitReached { .. } => {
                    (StatusCode::PAYMENT_REQUIRED, "free_tier_limit_reached")
                }
                BillingError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                BillingError::BillingDisabled => (StatusCode::SERVICE_UNAVAILABLE, "billing_disabled"),
                BillingError::StripeUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "stripe_unavailable"),
                BillingError::DatabaseUnavailable => {
                    (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
                }
                BillingError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            },
        }
    }

    /// The status and the sentence a caller (or a page) sees. An internal cause is logged here
    /// and never shown: database messages can echo request data.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        let message = match self {
            ApiError::Billing(BillingError::Internal(cause)) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "something went wrong on our side; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        (self.status_and_code().0, message)
    }

    /// The code's promised details, beside `code` and `message`.
    fn details(self) -> Map<String, Value> {
        let mut error = Map::new();
        let mut put = |key: &str, value: Value| {
            error.insert(key.to_owned(), value);
        };
        match self {
            ApiError::SubscriptionRequired { reason, upgrade_url } => {
                put("reason", reason.into());
                put("upgrade_url", upgrade_url.into());
            }
            ApiError::FeatureNotInPlan { feature, required_tier, upgrade_url } => {
                put("feature", feature.into());
                put("required_tier", required_tier.into());
                put("upgrade_url", upgrade_url.into());
            }
            ApiError::Billing(BillingError::Conflict { details, .. }) => return details,
            ApiError::Billing(BillingError::RateLimited { retry_after }) => {
                put("retry_after", retry_after.into())
            }
            ApiError::Billing(BillingError::FreeTierLimitReached {
                metric,
                used,
                limit,
                resets_at,
                upgrade_url,
            }) => {
                put("metric", metric.as_str().into());
                put("used", used.into());
                put("limit", limit.into());
                put("resets_at", rfc3339_opt(resets_at).into());
                put("upgrade_url", upgrade_url.into());
            }
            _ => {}
        }
        error
    }

    /// Seconds a caller should wait before retrying, for the answers that say so.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Billing(BillingError::RateLimited { retry_after }) => Some(*retry_after),
            // The pool answers within its acquire timeout; a client waits a moment and retries.
            ApiError::Billing(BillingError::DatabaseUnavailable) => Some(2),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Billing(e.into())
    }
}

impl From<InvalidId> for ApiError {
    fn from(e: InvalidId) -> Self {
        ApiError::Billing(e.into())
    }
}

impl From<StripeCallError> for ApiError {
    fn from(e: StripeCallError) -> Self {
        ApiError::Billing(e.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Billing(BillingError::Internal(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (_, code) = self.status_and_code();
        let (status, message) = self.status_and_message();
        let retry_after = self.retry_after();
        let mut error = Map::new();
        error.insert("code".into(), code.into());
        error.insert("message".into(), message.into());
        error.extend(self.details());
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

// axum's own rejections answer in plain text; these keep them in our shape. The rejection text
// names the problem (missing field, wrong type) without echoing secrets.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::PayloadTooLarge;
        }
        ApiError::invalid(format!("the body is not valid: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(format!("the query string is not valid: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid(format!("the path is not valid: {}", rejection.body_text()))
    }
}
