//! Owns the admin API: the manual plan (Enterprise, or an emergency override during an incident).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::AdminAuth;
use super::error::{ApiError, ApiResult};
use super::openapi::{ActorHeader, ErrorBody, EventStatusName, TierName};
use crate::billing::events::STATUSES;
use crate::domain::access::Tier;
use crate::domain::clock::{parse_rfc3339, rfc3339, rfc3339_opt};
use crate::domain::ids::{EventId, TenantId};
use crate::store::{EventRow, ManualPlan, StoreError};

/// A manual plan (Enterprise, or an override during an incident), or its removal.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// `null` removes the manual plan. Required, so a misspelt body cannot remove one by accident.
    #[schema(value_type = Option<TierName>, required = true)]
    plan_tier: Option<String>,
    /// Written to the audit log; at most 500 characters.
    #[schema(example = "Enterprise contract 2027")]
    reason: String,
    /// When the manual plan ends (RFC 3339); absent means until removed.
    #[serde(default)]
    #[schema(format = DateTime)]
    contract_ends_at: Option<String>,
}

/// The tenant's manual plan after the change, and the tier it now has.
#[derive(Serialize, ToSchema)]
pub struct PlanAnswer {
    tenant_id: String,
    #[schema(value_type = Option<TierName>)]
    manual_plan_tier: Option<String>,
    #[schema(format = DateTime)]
    manual_contract_ends_at: Option<String>,
    /// The effective tier.
    #[schema(value_type = TierName)]
    plan_tier: &'static str,
}

/// Set or remove a tenant's manual plan; it wins over Stripe's state until it ends.
#[utoipa::path(post, path = "/api/admin/tenants/{id}/plan", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "Hydra's tenant id", pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), ActorHeader),
    request_body = PlanBody,
    responses(
        (status = 200, description = "Changed (and audited)", body = PlanAnswer),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ))]
pub async fn set_plan(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<PlanAnswer>> {
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
    let no_tenant = || ApiError::not_found(format!("no tenant {id}"));
    match state.store.set_manual_plan(id.as_str(), plan, &admin.actor, state.clock.now()).await {
        Err(StoreError::NotFound) => return Err(no_tenant()),
        other => other?,
    };
    tracing::info!(tenant = %id, actor = %admin.actor, plan = ?tier, "manual plan changed");
    // Read back as every other answer reads a tenant's tier, so this one cannot differ.
    let (row, effective) = state.tenant_effective(id.as_str()).await?;
    let row = row.ok_or_else(no_tenant)?;
    Ok(Json(PlanAnswer {
        tenant_id: row.id,
        manual_plan_tier: row.manual_plan_tier,
        manual_contract_ends_at: rfc3339_opt(row.manual_contract_ends_at),
        plan_tier: effective.tier.as_str(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events in this state.
    #[param(value_type = Option<EventStatusName>)]
    status: Option<String>,
    /// At most this many (1 to 1000; 100 by default).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A stored Stripe event.
#[derive(Serialize, ToSchema)]
pub struct EventAnswer {
    #[schema(example = "evt_1Q2w3E4r5T6y")]
    id: String,
    #[serde(rename = "type")]
    #[schema(example = "invoice.paid")]
    kind: String,
    #[schema(value_type = EventStatusName)]
    status: String,
    customer_id: Option<String>,
    attempts: i64,
    last_error: Option<String>,
    /// Stripe's event time.
    #[schema(format = DateTime)]
    created: String,
    #[schema(format = DateTime)]
    received_at: String,
    #[schema(format = DateTime)]
    processed_at: Option<String>,
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventList {
    data: Vec<EventAnswer>,
}

/// Stored Stripe events, newest first.
#[utoipa::path(get, path = "/api/admin/events", tag = "admin", security(("admin_token" = [])),
    params(EventsQuery),
    responses((status = 200, description = "Events, newest first", body = EventList)))]
pub async fn list_events(
    _: AdminAuth,
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EventList>> {
    let Query(query) = query?;
    if let Some(s) = query.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::invalid(format!("status {s:?} is one of {}", STATUSES.join(", "))));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.list_events(query.status.as_deref(), limit).await?;
    Ok(Json(EventList { data: rows.into_iter().map(event_answer).collect() }))
}

fn event_answer(row: EventRow) -> EventAnswer {
    EventAnswer {
        id: row.id,
        kind: row.kind,
        status: row.status,
        customer_id: row.customer_id,
        attempts: row.attempts,
        last_error: row.last_error,
        created: rfc3339(row.created),
        received_at: rfc3339(row.received_at),
        processed_at: rfc3339_opt(row.processed_at),
    }
}

/// A replay queued.
#[derive(Serialize, ToSchema)]
pub struct ReplayAnswer {
    id: String,
    /// Always `received`: a worker processes it again shortly.
    #[schema(example = "received")]
    status: &'static str,
}

/// Process a stored event again (always safe: processing re-reads Stripe).
#[utoipa::path(post, path = "/api/admin/events/{id}/replay", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "Stripe's event id", pattern = "^[A-Za-z0-9_]{1,255}$"), ActorHeader),
    responses(
        (status = 200, description = "Queued", body = ReplayAnswer),
        (status = 404, description = "No stored event with this id", body = ErrorBody),
    ))]
pub async fn replay_event(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReplayAnswer>> {
    let id = EventId::parse(&id)?;
    if !state.replay_event(&id).await? {
        return Err(ApiError::not_found(format!("no stored event {id}")));
    }
    tracing::info!(event_id = %id, actor = %admin.actor, "event replay requested");
    Ok(Json(ReplayAnswer { id: id.as_str().to_owned(), status: "received" }))
}
