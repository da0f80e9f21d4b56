//! Owns the one error shape every endpoint answers with (design.md, "Errors").
//!
//! Handlers return `Result<_, ApiError>`; each variant fixes its status and `code`, and carries the
//! details that code promises. Unexpected failures become an opaque 500 whose cause is logged, never
//! sent: database messages can echo request data.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { message: String, details: Map<String, Value> },
    #[error("the free tier allows {limit} {metric} runs per 30 days and {used} are used")]
    FreeTierLimitReached {
        metric: &'static str,
        used: i64,
        limit: i64,
        resets_at: Option<String>,
        upgrade_url: String,
    },
    #[error("this needs a paid plan again ({reason})")]
    SubscriptionRequired { reason: &'static str, upgrade_url: String },
    #[error("{feature} is not in your plan; it comes with {required_tier}")]
    FeatureNotInPlan { feature: &'static str, required_tier: &'static str, upgrade_url: String },
    #[error("too many requests; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("billing is disabled for now; nothing is lost, try again later")]
    BillingDisabled,
    /// Stripe could not be reached or refused in a way a retry may fix.
    #[error("Stripe is unavailable right now; try again in a moment")]
    StripeUnavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::Conflict { message: message.into(), details: Map::new() }
    }

    /// A conflict that also tells the caller which state blocked it.
    pub fn conflict_with(message: impl Into<String>, key: &str, value: impl Into<Value>) -> Self {
        let mut details = Map::new();
        details.insert(key.to_owned(), value.into());
        ApiError::Conflict { message: message.into(), details }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::FreeTierLimitReached { .. } => {
                (StatusCode::PAYMENT_REQUIRED, "free_tier_limit_reached")
            }
            ApiError::SubscriptionRequired { .. } => (StatusCode::PAYMENT_REQUIRED, "subscription_required"),
            ApiError::FeatureNotInPlan { .. } => (StatusCode::PAYMENT_REQUIRED, "feature_not_in_plan"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::BillingDisabled => (StatusCode::SERVICE_UNAVAILABLE, "billing_disabled"),
            ApiError::StripeUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "stripe_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl ApiError {
    /// The status and the sentence a caller (or a page) sees. An internal cause is logged here
    /// and never shown: database messages can echo request data.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        let message = match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "something went wrong on our side; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        (self.status_and_code().0, message)
    }
}

/// Stripe's own refusal is our bug or bad state, so it is logged and answered opaquely; only
/// availability problems reach the caller as `stripe_unavailable` (retryable).
impl From<crate::stripe::StripeCallError> for ApiError {
    fn from(e: crate::stripe::StripeCallError) -> Self {
        match e {
            crate::stripe::StripeCallError::OverBudget(retry_after) => ApiError::RateLimited { retry_after },
            e if e.is_retryable() => ApiError::StripeUnavailable,
            e => ApiError::Internal(e.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (_, code) = self.status_and_code();
        let (status, message) = self.status_and_message();
        let mut error = Map::new();
        error.insert("code".into(), code.into());
        error.insert("message".into(), message.into());
        let retry_after = match &self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        };
        match self {
            ApiError::Conflict { details, .. } => error.extend(details),
            ApiError::SubscriptionRequired { reason, upgrade_url } => {
                error.insert("reason".into(), reason.into());
                error.insert("upgrade_url".into(), upgrade_url.into());
            }
            ApiError::FeatureNotInPlan { feature, required_tier, upgrade_url } => {
                error.insert("feature".into(), feature.into());
                error.insert("required_tier".into(), required_tier.into());
                error.insert("upgrade_url".into(), upgrade_url.into());
            }
            ApiError::RateLimited { retry_after } => {
                error.insert("retry_after".into(), retry_after.into());
            }
            ApiError::FreeTierLimitReached { metric, used, limit, resets_at, upgrade_url } => {
                error.insert("metric".into(), metric.into());
                error.insert("used".into(), used.into());
                error.insert("limit".into(), limit.into());
                error.insert("resets_at".into(), resets_at.into());
                error.insert("upgrade_url".into(), upgrade_url.into());
            }
            _ => {}
        }
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
        ApiError::InvalidRequest(format!("the body is not valid: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidRequest(format!("the query string is not valid: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::InvalidRequest(format!("the path is not valid: {}", rejection.body_text()))
    }
}
