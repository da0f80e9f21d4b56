//! Owns Stripe's error shape: `{"error": {"type", "code", "message", "param", …}}` with the HTTP
//! statuses Stripe uses (stripe-lifecycles.md §7).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

#[derive(Clone, Debug, PartialEq)]
pub struct StripeError {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    /// Card errors also carry `decline_code`, `payment_intent`, `charge`…
    pub extra: Box<Map<String, Value>>,
}

impl StripeError {
    fn new(status: u16, kind: &'static str, code: Option<&str>, message: impl Into<String>) -> StripeError {
        StripeError {
            status,
            kind,
            code: code.map(str::to_owned),
            message: message.into(),
            param: None,
            extra: Box::default(),
        }
    }

    fn with_param(mut self, param: &str) -> StripeError {
        self.param = Some(param.to_owned());
        self
    }

    pub fn with_status(mut self, status: u16) -> StripeError {
        self.status = status;
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> StripeError {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn missing(param: &str) -> StripeError {
        StripeError::new(
            400,
            "invalid_request_error",
            Some("parameter_missing"),
            format!("Missing required param: {param}."),
        )
        .with_param(param)
    }

    pub fn invalid(param: &str, message: &str) -> StripeError {
        StripeError::new(400, "invalid_request_error", None, format!("Invalid {param}: {message}"))
            .with_param(param)
    }

    /// An unknown `Stripe-Version` header.
    pub fn invalid_version(version: &str) -> StripeError {
        StripeError::new(
            400,
            "invalid_request_error",
            Some("api_version_invalid"),
            format!("Invalid Stripe API version: {version}"),
        )
    }

    pub fn invalid_integer(param: &str) -> StripeError {
        StripeError::new(400, "invalid_request_error", Some("parameter_invalid_integer"), "Invalid integer")
            .with_param(param)
    }

    pub fn unknown_parameter(param: &str) -> StripeError {
        StripeError::new(
            400,
            "invalid_request_error",
            Some("parameter_unknown"),
            format!("Received unknown parameter: {param}"),
        )
        .with_param(param)
    }

    /// An id in the path that does not exist.
    pub fn no_such(kind: &str, id: &str) -> StripeError {
        StripeError::new(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            format!("No such {kind}: '{id}'"),
        )
        .with_param("id")
    }

    /// An id in a body parameter that does not exist.
    pub fn no_such_param(kind: &str, id: &str, param: &str) -> StripeError {
        StripeError::new(
            400,
            "invalid_request_error",
            Some("resource_missing"),
            format!("No such {kind}: '{id}'"),
        )
        .with_param(param)
    }

    pub fn state(message: impl Into<String>) -> StripeError {
        StripeError::new(400, "invalid_request_error", None, message)
    }

    pub fn card_declined(decline_code: &str) -> StripeError {
        StripeError::new(402, "card_error", Some("card_declined"), "Your card was declined.")
            .with("decline_code", decline_code)
    }

    pub fn unauthorized(message: impl Into<String>) -> StripeError {
        StripeError::new(401, "invalid_request_error", None, message)
    }

    /// What Stripe answers past its rate limit (stripe-lifecycles.md §7): 429, `rate_limit`.
    pub fn rate_limited() -> StripeError {
        StripeError::new(
            429,
            "invalid_request_error",
            Some("rate_limit"),
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        )
        .with("doc_url", "https://stripe.com/docs/error-codes/rate-limit")
    }

    /// Stripe's own failure: the request may or may not have been applied.
    pub fn api_error() -> StripeError {
        StripeError::new(500, "api_error", None, "An unknown error occurred")
    }

    pub fn idempotency(key: &str) -> StripeError {
        StripeError::new(
            400,
            "idempotency_error",
            None,
            format!(
                "Keys for idempotent requests can only be used with the same parameters they were first used \
                 with. Try using a key other than '{key}' if you meant to execute a different request."
            ),
        )
    }

    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), self.kind.into());
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), self.message.clone().into());
        error.insert("param".into(), json!(self.param));
        if let Some(code) = &self.code {
            error.insert(
                "doc_url".into(),
                format!("https://docs.stripe.com/error-codes/{}", code.replace('_', "-")).into(),
            );
        }
        error.extend(self.extra.as_ref().clone());
        json!({ "error": error })
    }
}

impl IntoResponse for StripeError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self.body())).into_response()
    }
}
