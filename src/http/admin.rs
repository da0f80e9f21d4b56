//! Owns the admin API: the manual plan (Enterprise, or an emergency override during an incident).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::AdminAuth;
use super::error::{ApiError, ApiResult};
use crate::billing::events::STATUSES;
use crate::domain::access::Tier;
use crate::domain::clock::{parse_rfc3339, rfc3339, rfc3339_opt};
use crate::domain::ids::{EventId, TenantId};
use crate::store::{EventRow, ManualPlan, StoreError};

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
    let id = TenantId::parse(&id)?;
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
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(|c| c == '\0') {
        return Err(ApiError::invalid("reason is required (at most 500 characters, no NUL)"));
    }
    let contract_ends_at = match body.contract_ends_at.as_deref() {
        None => None,
        Some(s) => {
            Some(parse_rfc3339(s).ok_or_else(|| ApiError::invalid("contract_ends_at is an RFC 3339 time"))?)
        }
    };
    let plan = ManualPlan { tier, reason, contract_ends_at };
    let row = match state.store.set_manual_plan(id.as_str(), plan, &admin.actor, state.clock.now()).await {
        Err(StoreError::NotFound) => return Err(ApiError::not_found(format!("no tenant {id}"))),
        other => other?,
    };
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
    if let Some(s) = query.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::invalid(format!("status {s:?} is one of {}", STATUSES.join(", "))));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.list_events(query.status.as_deref(), limit).await?;
    Ok(Json(json!({ "data": rows.iter().map(event_json).collect::<Vec<_>>() })))
}

fn event_json(row: &EventRow) -> Value {
    let mut v = serde_json::to_value(row).unwrap_or(Value::Null);
    v["created"] = rfc3339(row.created).into();
    v["received_at"] = rfc3339(row.received_at).into();
    v["processed_at"] = rfc3339_opt(row.processed_at).into();
    v
}

/// `POST /api/admin/events/{id}/replay`: process a stored event again (safe: fetch-and-sync).
pub async fn replay_event(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = EventId::parse(&id)?;
    if !state.replay_event(&id).await? {
        return Err(ApiError::not_found(format!("no stored event {id}")));
    }
    tracing::info!(event_id = %id, actor = %admin.actor, "event replay requested");
    Ok(Json(json!({ "id": id.as_str(), "status": "received" })))
}
