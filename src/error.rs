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
            ApiError::BillingDisabled => (StatusCode::SERVICE_UNAVAILABLE, "billing_disabled"),
            ApiError::StripeUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "stripe_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

/// Stripe's own refusal is our bug or bad state, so it is logged and answered opaquely; only
/// availability problems reach the caller as `stripe_unavailable` (retryable).
impl From<crate::stripe::StripeCallError> for ApiError {
    fn from(e: crate::stripe::StripeCallError) -> Self {
        if e.is_retryable() { ApiError::StripeUnavailable } else { ApiError::Internal(e.into()) }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "something went wrong on our side; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let mut error = Map::new();
        error.insert("code".into(), code.into());
        error.insert("message".into(), message.into());
        match self {
            ApiError::Conflict { details, .. } => error.extend(details),
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
