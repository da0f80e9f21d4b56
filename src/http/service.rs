//! Owns the calls of Hydra's own services: announcing tenants, metering runs, asking for access.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::auth::ServiceAuth;
use super::error::{ApiError, ApiResult};
use crate::domain::access::{Feature, Tier};
use crate::domain::catalogue::Metric;
use crate::domain::clock::{DAY, rfc3339, rfc3339_opt};
use crate::domain::ids::{ReservationId, TenantId};
use crate::store::Settle;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantBody {
    name: String,
    #[serde(default)]
    billing_email: Option<String>,
}

pub async fn put_tenant(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<TenantBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let id = TenantId::parse(&id)?;
    let Json(body) = body?;
    let name = body.name.trim();
    if name.chars().count() > 200 {
        return Err(ApiError::invalid("name is at most 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name holds no control characters"));
    }
    let email = body.billing_email.as_deref().map(str::trim).filter(|e| !e.is_empty());
    if let Some(email) = email {
        let plausible = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !plausible {
            return Err(ApiError::invalid("billing_email is not an email address"));
        }
    }
    let (row, created) = state.store.upsert_tenant(id.as_str(), name, email, state.clock.now()).await?;
    let status = if created { axum::http::StatusCode::CREATED } else { axum::http::StatusCode::OK };
    Ok((
        status,
        Json(json!({
            "id": row.id,
            "name": row.name,
            "billing_email": row.billing_email,
            "plan_tier": row.plan_tier,
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    /// How long the unit is held if the run never settles; 15 minutes unless the runner knows
    /// its run takes longer.
    ttl_seconds: Option<i64>,
}

const MAX_RESERVATION_TTL: i64 = DAY;

pub async fn reserve(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path((id, metric)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({
        "reservation_id": r.reservation_id,
        "expires_at": rfc3339(r.expires_at),
        "tier": r.tier,
        "metric": r.metric,
    })))
}

async fn settle(state: &AppState, id: &str, how: Settle) -> ApiResult<Json<Value>> {
    let id = ReservationId::parse(id)?;
    let status = state.settle(&id, how).await?;
    Ok(Json(json!({ "reservation_id": id.as_str(), "status": status })))
}

pub async fn commit(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    settle(&state, &id, Settle::Commit).await
}

pub async fn release(
    _: ServiceAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    settle(&state, &id, Settle::Release).await
}

#[derive(Deserialize)]
pub struct AccessQuery {
    feature: Option<String>,
    count: Option<String>,
}

#[derive(Serialize)]
pub struct AccessAnswer {
    allowed: bool,
    /// Why not, when not: a lapse reason (`past_due_grace_ended`, …) or `feature_not_in_plan`,
    /// `repo_limit_reached`, `seat_limit_reached`.
    reason: Option<&'static str>,
    plan_tier: &'static str,
    access_until: Option<String>,
    grace_ends_at: Option<String>,
    required_tier: Option<&'static str>,
    upgrade_url: String,
}

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
                .ok_or_else(|| ApiError::invalid("count is a whole number from 0"))?,
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
