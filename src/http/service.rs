//! Owns the calls of Hydra's own services: announcing tenants, metering runs, asking for access.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::ServiceAuth;
use super::error::{ApiError, ApiResult};
use super::openapi::{ErrorBody, FeatureName, MetricName, TierName};
use crate::domain::access::{Feature, Tier};
use crate::domain::catalogue::Metric;
use crate::domain::clock::{DAY, rfc3339, rfc3339_opt};
use crate::domain::ids::{ReservationId, TenantId};
use crate::store::Settle;

/// A tenant as Hydra announces it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantBody {
    /// Display name, at most 200 characters.
    #[schema(example = "Acme")]
    name: String,
    /// Where billing emails go; empty or absent means none.
    #[serde(default)]
    #[schema(example = "billing@acme.example")]
    billing_email: Option<String>,
}

/// The tenant as stored after the call.
#[derive(Serialize, ToSchema)]
pub struct TenantAnswer {
    id: String,
    name: String,
    billing_email: Option<String>,
    /// The stored tier (the effective one is what `access` answers).
    #[schema(value_type = TierName)]
    plan_tier: String,
}

/// Create or update a tenant; new tenants are on Free.
#[utoipa::path(put, path = "/api/tenants/{id}", tag = "service", security(("service_token" = [])),
    params(("id" = String, Path, description = "Hydra's tenant id", pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")),
    request_body = TenantBody,
    responses(
        (status = 201, description = "Created (on Free)", body = TenantAnswer),
        (status = 200, description = "Updated", body = TenantAnswer),
    ))]
pub async fn put_tenant(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<TenantBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(axum::http::StatusCode, Json<TenantAnswer>)> {
    let id = TenantId::parse(&id)?;
    let Json(body) = body?;
    let name = body.name.trim();
    crate::domain::ids::check_tenant_name(name).map_err(ApiError::invalid)?;
    let email = body.billing_email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    if email.is_some_and(|e| !crate::domain::ids::plausible_email(e)) {
        return Err(ApiError::invalid("billing_email is not an email address"));
    }
    let (row, created) = state.store.upsert_tenant(id.as_str(), name, email, state.clock.now()).await?;
    let status = if created { axum::http::StatusCode::CREATED } else { axum::http::StatusCode::OK };
    let answer = TenantAnswer {
        id: row.id,
        name: row.name,
        billing_email: row.billing_email,
        plan_tier: row.plan_tier,
    };
    Ok((status, Json(answer)))
}

const MAX_RESERVATION_TTL: i64 = DAY;

/// The optional body of a reserve; an empty body takes the defaults.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveBody {
    /// How long the unit is held if the run never settles; 15 minutes unless the runner knows
    /// its run takes longer.
    #[schema(minimum = 60, maximum = 86400)]
    ttl_seconds: Option<i64>,
}

/// A unit held for one run until it is committed, released or expires.
#[derive(Serialize, ToSchema)]
pub struct ReservationAnswer {
    #[schema(example = "res_3f9c1e0a5b7d4c2e8f6a1b0c9d8e7f6a")]
    reservation_id: String,
    #[schema(format = DateTime)]
    expires_at: String,
    /// The effective tier the run is metered under; only `free` runs count against a quota.
    #[schema(value_type = TierName)]
    tier: &'static str,
    #[schema(value_type = MetricName)]
    metric: &'static str,
}

/// A reservation after commit or release.
#[derive(Serialize, ToSchema)]
pub struct SettleAnswer {
    reservation_id: String,
    /// `committed`, `released`, or `expired` for a release after the unit lapsed (repeating a
    /// call answers the same).
    #[schema(example = "committed")]
    status: &'static str,
}

/// Reserve one unit of a metric before a workflow run.
#[utoipa::path(post, path = "/api/tenants/{id}/usage/{metric}/reserve", tag = "service",
    security(("service_token" = [])),
    params(("id" = String, Path, description = "Hydra's tenant id (an unknown one is a new free tenant)", pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
           ("metric" = MetricName, Path)),
    request_body(content = Option<ReserveBody>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "Reserved", body = ReservationAnswer),
        (status = 402, description = "`free_tier_limit_reached`", body = ErrorBody),
    ))]
pub async fn reserve(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path((id, metric)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<ReservationAnswer>> {
    let id = TenantId::parse(&id)?;
    let metric = Metric::parse(&metric)
        .ok_or_else(|| ApiError::invalid("metric is one of fix, doc_run, linear_cycle"))?;
    let ttl = if body.iter().all(u8::is_ascii_whitespace) {
        state.config.reservation_ttl_secs
    } else {
        let parsed: ReserveBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the body is not valid: {e}")))?;
        match parsed.ttl_seconds {
            None => state.config.reservation_ttl_secs,
            Some(t) if (60..=MAX_RESERVATION_TTL).contains(&t) => t,
            Some(_) => return Err(ApiError::invalid("ttl_seconds is between 60 and 86400")),
        }
    };
    let r = state.reserve(&id, metric, ttl).await?;
    Ok(Json(ReservationAnswer {
        reservation_id: r.reservation_id,
        expires_at: rfc3339(r.expires_at),
        tier: r.tier.as_str(),
        metric: r.metric.as_str(),
    }))
}

async fn settle(state: &AppState, id: &str, how: Settle) -> ApiResult<Json<SettleAnswer>> {
    let id = ReservationId::parse(id)?;
    let status = state.settle(&id, how).await?;
    Ok(Json(SettleAnswer { reservation_id: id.as_str().to_owned(), status }))
}

/// The run succeeded: it counts, exactly once.
#[utoipa::path(post, path = "/api/usage/reservations/{id}/commit", tag = "service",
    security(("service_token" = [])), params(("id" = String, Path, description = "The reservation id", pattern = "^[A-Za-z0-9_]{1,64}$")),
    responses(
        (status = 200, description = "Committed (again: the same answer)", body = SettleAnswer),
        (status = 404, description = "No such reservation", body = ErrorBody),
        (status = 409, description = "Already released or expired", body = ErrorBody),
    ))]
pub async fn commit(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SettleAnswer>> {
    settle(&state, &id, Settle::Commit).await
}

/// The run failed: it does not count.
#[utoipa::path(post, path = "/api/usage/reservations/{id}/release", tag = "service",
    security(("service_token" = [])), params(("id" = String, Path, description = "The reservation id", pattern = "^[A-Za-z0-9_]{1,64}$")),
    responses(
        (status = 200, description = "Released (again: the same answer)", body = SettleAnswer),
        (status = 404, description = "No such reservation", body = ErrorBody),
        (status = 409, description = "Already committed", body = ErrorBody),
    ))]
pub async fn release(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SettleAnswer>> {
    settle(&state, &id, Settle::Release).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessQuery {
    /// The feature asked about.
    #[param(value_type = FeatureName, required = true)]
    feature: Option<String>,
    /// Repos after connecting (`connected_repos`) or active developers (`seats`); required for those.
    #[param(value_type = Option<u32>, maximum = 1000000)]
    count: Option<String>,
}

/// Whether the tenant may use a feature now, and why not.
#[derive(Serialize, ToSchema)]
pub struct AccessAnswer {
    allowed: bool,
    /// Why not, when not: a lapse reason (`past_due_grace_ended`, …) or `feature_not_in_plan`,
    /// `repo_limit_reached`, `seat_limit_reached`.
    reason: Option<&'static str>,
    /// The effective tier.
    #[schema(value_type = TierName)]
    plan_tier: &'static str,
    #[schema(format = DateTime)]
    access_until: Option<String>,
    #[schema(format = DateTime)]
    grace_ends_at: Option<String>,
    #[schema(value_type = Option<TierName>)]
    required_tier: Option<&'static str>,
    upgrade_url: String,
}

/// Ask whether a tenant may use a feature (answered from memory; see the README on staleness).
#[utoipa::path(get, path = "/api/tenants/{id}/access", tag = "service", security(("service_token" = [])),
    params(("id" = String, Path, description = "Hydra's tenant id (an unknown one is a new free tenant)", pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
           AccessQuery),
    responses((status = 200, description = "The answer", body = AccessAnswer)))]
pub async fn access(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<AccessQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AccessAnswer>> {
    let id = TenantId::parse(&id)?;
    let Query(query) = query?;
    let feature = query
        .feature
        .as_deref()
        .and_then(Feature::parse)
        .ok_or_else(|| ApiError::invalid(format!("feature is one of {}", Feature::ALL.join(", "))))?;
    let count = match query.count.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|n| (0..=1_000_000).contains(n))
                .ok_or_else(|| ApiError::invalid("count is a whole number from 0 to 1000000"))?,
        ),
    };
    if feature.needs_count() && count.is_none() {
        return Err(ApiError::invalid("count is required for connected_repos and seats"));
    }
    // An unknown tenant is answered as a new free tenant: Hydra may not have announced it yet.
    let (effective, verdict) = state.access(id.as_str(), feature, count).await?;
    Ok(Json(AccessAnswer {
        allowed: verdict.allowed,
        reason: verdict.reason,
        plan_tier: effective.tier.as_str(),
        access_until: rfc3339_opt(effective.access_until),
        grace_ends_at: rfc3339_opt(effective.grace_ends_at),
        required_tier: verdict.required_tier.map(Tier::as_str),
        upgrade_url: state.config.upgrade_url(),
    }))
}
