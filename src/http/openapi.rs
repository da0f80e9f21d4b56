//! Owns the API's OpenAPI 3.1 document: generated from the handlers' annotations and the answer
//! types they return, served at `GET /api/openapi.json` and committed as `docs/openapi.json` (a
//! test fails when the two drift). Pages are for browsers and are not part of it.

use axum::Json;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The tiers, as every answer spells them.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // a schema only: answers carry the domain's own strings
pub enum TierName {
    Free,
    Team,
    Business,
    Enterprise,
}

/// What Hydra meters on Free.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MetricName {
    Fix,
    DocRun,
    LinearCycle,
}

/// What the access check can be asked about.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum FeatureName {
    Workflows,
    Jira,
    AuditLogs,
    UsageReporting,
    PriorityQueue,
    Sso,
    Rbac,
    Vpc,
    ConnectedRepos,
    Seats,
}

/// Why a tenant that had a plan is on Free now.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum LapseReasonName {
    PastDueGraceEnded,
    Canceled,
    Unpaid,
    Incomplete,
    Paused,
    ManualPlanEnded,
}

/// Where a stored Stripe event is in its processing.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum EventStatusName {
    Received,
    Processing,
    Processed,
    Failed,
    Parked,
    Ignored,
}

/// Every error's `code`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    NotFound,
    Conflict,
    FreeTierLimitReached,
    SubscriptionRequired,
    FeatureNotInPlan,
    Forbidden,
    RateLimited,
    BillingDisabled,
    StripeUnavailable,
    DatabaseUnavailable,
    InternalError,
}

/// The one error shape: `code` and `message` always, and the details the code promises.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorObject,
}

/// An error; `conflict` may carry more fields naming what conflicts (`checkout_status`, …).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorObject {
    code: ErrorCode,
    /// A sentence for a person.
    message: String,
    /// `free_tier_limit_reached`.
    metric: Option<MetricName>,
    /// `free_tier_limit_reached`: committed runs plus open reservations.
    used: Option<i64>,
    /// `free_tier_limit_reached`.
    limit: Option<i64>,
    /// `free_tier_limit_reached`: when a unit frees up.
    #[schema(format = DateTime)]
    resets_at: Option<String>,
    /// The 402s: where the customer can upgrade.
    upgrade_url: Option<String>,
    /// `subscription_required`.
    reason: Option<LapseReasonName>,
    /// `feature_not_in_plan`.
    feature: Option<FeatureName>,
    /// `feature_not_in_plan`.
    required_tier: Option<TierName>,
    /// `rate_limited`: seconds (also the `Retry-After` header).
    retry_after: Option<u64>,
}

/// `{status}` of the operations endpoints.
#[derive(Serialize, ToSchema)]
pub struct HealthAnswer {
    pub status: &'static str,
}

/// Stripe's delivery was stored.
#[derive(Serialize, ToSchema)]
pub struct ReceivedAnswer {
    pub received: bool,
}

/// Who an admin call is made by, for the audit log (`admin-token` when absent).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ActorHeader {
    #[param(rename = "X-Hydra-Actor", example = "alice")]
    actor: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hydra-billing",
        description = "Hydra's billing service on Stripe: free-tier metering, access checks, \
            subscriptions and their changes, Stripe's webhooks. Every error has the shape \
            `{\"error\": {\"code\", \"message\", …details}}`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        super::service::put_tenant,
        super::service::reserve,
        super::service::commit,
        super::service::release,
        super::service::access,
        super::tenant::status,
        super::tenant::reservation,
        super::tenant::checkout,
        super::tenant::checkout_session,
        super::tenant::seats,
        super::tenant::upgrade,
        super::tenant::portal,
        super::tenant::resume,
        super::admin::set_plan,
        super::admin::list_events,
        super::admin::replay_event,
        super::webhooks::receive,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        openapi_json,
    ),
    components(schemas(
        TierName, MetricName, FeatureName, LapseReasonName, EventStatusName, ErrorCode, ErrorBody,
        ErrorObject
    )),
    modifiers(&Conventions),
    tags(
        (name = "service", description = "Hydra's own services (the service token)"),
        (name = "tenant", description = "A tenant's users (a tenant token or the session cookie)"),
        (name = "admin", description = "Operators (the admin token)"),
        (name = "stripe", description = "Stripe's webhooks (signed)"),
        (name = "operations", description = "Health and metrics"),
    ),
)]
struct ApiDoc;

/// What every call shares, added once instead of on each handler: the security schemes, and the
/// answers any `/api/` call can give (bad input, missing credentials, a database that takes no
/// write).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |format: &str| {
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format(format).build(),
            )
        };
        components.add_security_scheme("service_token", bearer("HYDRA_SERVICE_TOKEN"));
        components.add_security_scheme("admin_token", bearer("HYDRA_ADMIN_TOKEN"));
        components.add_security_scheme("tenant_token", bearer("JWT"));
        components.add_security_scheme(
            "tenant_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::http::auth::SESSION_COOKIE))),
        );
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"))))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/api/") || path == "/api/openapi.json" {
                continue;
            }
            for operation in [&mut item.get, &mut item.put, &mut item.post].into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                responses.entry("400".into()).or_insert_with(|| error("Bad input (`invalid_request`)"));
                if secured {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| error("No or bad credentials (`unauthorized`)"));
                }
                responses.entry("503".into()).or_insert_with(|| {
                    error(
                        "`database_unavailable` (with `Retry-After`), `billing_disabled` or \
                         `stripe_unavailable`: retry later",
                    )
                });
            }
        }
    }
}

/// The document, built once per call (it is small and rarely asked for).
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as committed in `docs/openapi.json`: pretty, with a final newline.
pub fn document_text() -> String {
    let mut text = document().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// This document, machine-readable.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::access::{Feature, Tier};
    use crate::domain::catalogue::Metric;

    /// The enum values the document names, read back from it.
    fn values(name: &str) -> Vec<String> {
        let doc = serde_json::to_value(document()).unwrap_or_default();
        doc["components"]["schemas"][name]["enum"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_documented_names_are_the_domains() {
        let tiers = values("TierName");
        assert_eq!(tiers.len(), 4);
        assert!(tiers.iter().all(|t| Tier::parse(t).is_some_and(|p| p.as_str() == t)));
        assert_eq!(values("MetricName"), Metric::ALL.map(|m| m.as_str().to_owned()));
        assert_eq!(values("FeatureName"), Feature::ALL.map(str::to_owned));
        assert_eq!(values("EventStatusName"), crate::billing::events::STATUSES.map(str::to_owned));
    }
}
