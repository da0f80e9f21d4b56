//! Owns gating Hydra's own Rust routes on a paid feature (BILL-16): an axum extractor that lets a
//! request through only when the calling tenant's effective tier includes the feature, and
//! otherwise answers 402 `subscription_required` (the plan lapsed) or `feature_not_in_plan`.
//!
//! ```ignore
//! use hydra_billing::http::gate::{Jira, RequireFeature};
//!
//! // Only tenants whose plan includes Jira reach the handler.
//! async fn connect_jira(_: RequireFeature<Jira>, /* … */) -> impl IntoResponse { /* … */ }
//! let routes = Router::new().route("/integrations/jira", post(connect_jira));
//! ```
//! Hydra's services in other languages ask `GET /api/tenants/{id}/access?feature=jira` instead.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::auth::TenantAuth;
use super::error::ApiError;
use crate::domain::access::{Feature, Tier};

/// A feature a route can require.
pub trait Gate {
    const FEATURE: Feature;
    const NAME: &'static str;
}

macro_rules! gates {
    ($($ty:ident => $feature:ident, $name:literal;)*) => {$(
        #[doc = concat!("The `", $name, "` feature.")]
        pub struct $ty;
        impl Gate for $ty {
            const FEATURE: Feature = Feature::$feature;
            const NAME: &'static str = $name;
        }
    )*};
}

gates! {
    Jira => Jira, "jira";
    AuditLogs => AuditLogs, "audit_logs";
    UsageReporting => UsageReporting, "usage_reporting";
    PriorityQueue => PriorityQueue, "priority_queue";
    Sso => Sso, "sso";
    Rbac => Rbac, "rbac";
    Vpc => Vpc, "vpc";
}

/// Extracting it succeeds only for a tenant whose plan has `G`'s feature.
pub struct RequireFeature<G: Gate> {
    pub tenant_id: String,
    pub tier: Tier,
    _gate: PhantomData<G>,
}

impl<G: Gate> FromRequestParts<AppState> for RequireFeature<G> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = TenantAuth::from_request_parts(parts, state).await?;
        let (effective, v) = state.access(auth.tenant_id(), G::FEATURE, None).await?;
        let upgrade_url = state.config.upgrade_url();
        match (v.allowed, v.lapsed, effective.reason) {
            (true, _, _) => {
                Ok(RequireFeature { tenant_id: auth.claims.sub, tier: effective.tier, _gate: PhantomData })
            }
            (false, true, Some(reason)) => {
                Err(ApiError::SubscriptionRequired { reason: reason.as_str(), upgrade_url })
            }
            _ => Err(ApiError::FeatureNotInPlan {
                feature: G::NAME,
                required_tier: v.required_tier.map_or("business", Tier::as_str),
                upgrade_url,
            }),
        }
    }
}
