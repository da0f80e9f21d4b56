//! Owns the admin API: the manual plan (Enterprise, or an emergency override during an incident).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Tier;
use crate::app::AppState;
use crate::auth::AdminAuth;
use crate::clock::{parse_rfc3339, rfc3339_opt};
use crate::error::{ApiError, ApiResult};
use crate::tenants::{self, ManualPlan, validate_tenant_id};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// `null` removes the manual plan. Required, so a misspelt body cannot remove one by accident.
    plan_tier: Option<String>,
    reason: String,
    #[serde(default)]
    contract_ends_at: Option<String>,
}

pub async fn set_plan(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    validate_tenant_id(&id)?;
    let Json(raw) = body?;
    if raw.get("plan_tier").is_none() {
        return Err(ApiError::invalid("plan_tier is required (null removes the manual plan)"));
    }
    let body: PlanBody =
        serde_json::from_value(raw).map_err(|e| ApiError::invalid(format!("the body is not valid: {e}")))?;
    let tier = match body.plan_tier.as_deref() {
        None => None,
        Some(t) => Some(Tier::parse(t).ok_or_else(|| {
            ApiError::invalid("plan_tier is one of free, team, business, enterprise, or null")
        })?),
    };
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid("reason is required (at most 500 characters)"));
    }
    let contract_ends_at = match body.contract_ends_at.as_deref() {
        None => None,
        Some(s) => {
            Some(parse_rfc3339(s).ok_or_else(|| ApiError::invalid("contract_ends_at is an RFC 3339 time"))?)
        }
    };
    let row = tenants::set_manual_plan(
        &state.db,
        &id,
        ManualPlan { tier, reason, contract_ends_at },
        &admin.actor,
        state.clock.now(),
    )
    .await?;
    tracing::info!(tenant = %id, actor = %admin.actor, plan = ?tier, "manual plan changed");
    let effective = state.effective(&row.billing_state());
    Ok(Json(json!({
        "tenant_id": row.id,
        "manual_plan_tier": row.manual_plan_tier,
        "manual_contract_ends_at": rfc3339_opt(row.manual_contract_ends_at),
        "plan_tier": effective.tier,
    })))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/admin/events[?status=…]`: stored Stripe events, newest first.
pub async fn list_events(
    _: AdminAuth,
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    if let Some(s) = query.status.as_deref().filter(|s| !crate::events::STATUSES.contains(s)) {
        return Err(ApiError::invalid(format!(
            "status {s:?} is one of {}",
            crate::events::STATUSES.join(", ")
        )));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = crate::events::list(&state.db, query.status.as_deref(), limit).await?;
    Ok(Json(json!({ "data": rows.iter().map(|r| r.to_json()).collect::<Vec<_>>() })))
}

/// `POST /api/admin/events/{id}/replay`: process a stored event again (safe: fetch-and-sync).
pub async fn replay_event(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    if id.len() > 255 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::invalid("not an event id"));
    }
    if !crate::events::replay(&state.db, &id).await? {
        return Err(ApiError::not_found(format!("no stored event {id}")));
    }
    tracing::info!(event_id = %id, actor = %admin.actor, "event replay requested");
    state.wake_worker();
    Ok(Json(json!({ "id": id, "status": "received" })))
}
