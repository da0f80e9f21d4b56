//! Owns the billing layer's error: what a use case can refuse or fail with, in domain terms.
//! HTTP turns it into the one error shape; the CLI and jobs print or log it.
//!
//! The use cases a caller waits on (checkout, quotes, usage, the portal, resume) return it. The
//! background processing (the event worker, sync and reconcile, the jobs, the email outbox)
//! returns `anyhow` errors on purpose: nobody is answered from them, and what reads them is an
//! operator (an event's stored `last_error`, the log), who needs the whole chain (which Stripe
//! call, which SQL state) that these variants would fold into one sentence.

use serde_json::{Map, Value};

use crate::domain::catalogue::Metric;
use crate::domain::clock::Timestamp;
use crate::domain::ids::InvalidId;
use crate::store::StoreError;
use crate::stripe::StripeCallError;

pub type BillingResult<T> = Result<T, BillingError>;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { message: String, details: Map<String, Value> },
    #[error("you have used {used} of {limit} free {} in this 30-day period", metric.plural())]
    FreeTierLimitReached {
        metric: Metric,
        used: i64,
        limit: i64,
        resets_at: Option<Timestamp>,
        upgrade_url: String,
    },
    #[error("too many requests; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("billing is disabled for now; nothing is lost, try again later")]
    BillingDisabled,
    /// Stripe could not be reached or refused in a way a retry may fix.
    #[error("Stripe is unavailable right now; try again in a moment")]
    StripeUnavailable,
    #[error("the database is unavailable right now; try again in a moment")]
    DatabaseUnavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl BillingError {
    pub fn invalid(message: impl Into<String>) -> Self {
        BillingError::Invalid(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        BillingError::NotFound(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        BillingError::Conflict { message: message.into(), details: Map::new() }
    }

    /// A conflict that also tells the caller which state blocked it.
    pub fn conflict_with(message: impl Into<String>, key: &str, value: impl Into<Value>) -> Self {
        let mut details = Map::new();
        details.insert(key.to_owned(), value.into());
        BillingError::Conflict { message: message.into(), details }
    }
}

impl From<InvalidId> for BillingError {
    fn from(e: InvalidId) -> Self {
        BillingError::Invalid(e.0.to_owned())
    }
}

impl From<StoreError> for BillingError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => BillingError::DatabaseUnavailable,
            other => BillingError::Internal(other.into()),
        }
    }
}

/// Stripe's own refusal is our bug or bad state, so it is kept opaque (logged by HTTP); only
/// availability problems reach the caller as `stripe_unavailable` (retryable).
impl From<StripeCallError> for BillingError {
    fn from(e: StripeCallError) -> Self {
        match e {
            StripeCallError::OverBudget(retry_after) => BillingError::RateLimited { retry_after },
            e if e.is_retryable() => BillingError::StripeUnavailable,
            e => BillingError::Internal(e.into()),
        }
    }
}
