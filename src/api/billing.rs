//! Owns the tenant-facing billing calls (more arrive with checkout, seats and the portal).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use crate::access::effective_tier;
use crate::app::AppState;
use crate::auth::TenantAuth;
use crate::clock::{rfc3339, rfc3339_opt};
use crate::error::{ApiError, ApiResult};
use crate::tenants;
use crate::usage;

/// `GET /api/billing/status`: the tenant's plan, subscription and, on free, its usage.
pub async fn status(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let now = state.clock.now();
    let row = tenants::get(&state.db, auth.tenant_id()).await?;
    let billing = row.as_ref().map(|r| r.billing_state()).unwrap_or_default();
    let effective = effective_tier(&billing, state.access_time(), state.config.grace_period_days);
    let paid = effective.tier.is_paid();
    let sub = row.as_ref().filter(|_| paid);
    let mut body = json!({
        "tenant_id": auth.tenant_id(),
        "plan_tier": effective.tier,
        "subscription_status": sub.and_then(|r| r.stripe_subscription_status.clone()),
        "seat_count": sub.and_then(|r| r.stripe_seat_count),
        "interval": sub.and_then(|r| r.stripe_interval.clone()),
        "current_period_end": rfc3339_opt(sub.and_then(|r| r.stripe_current_period_end)),
        "cancel_at_period_end": sub.map(|r| r.cancel_at_period_end),
        "access": {
            "allowed": effective.reason.is_none(),
            "reason": effective.reason,
            "grace_ends_at": rfc3339_opt(effective.grace_ends_at),
            "access_until": rfc3339_opt(effective.access_until),
        },
        "usage": null,
        "resets_at": null,
    });
    if !paid {
        let (usage, resets_at) = match &row {
            Some(row) => {
                let u = usage::free_usage(&state.db, row, now).await?;
                (u.used.to_vec(), u.resets_at)
            }
            None => (usage::Metric::ALL.map(|m| (m, 0)).to_vec(), None),
        };
        let usage: Map<String, Value> = usage
            .into_iter()
            .map(|(m, used)| (m.as_str().to_owned(), json!({ "used": used, "limit": m.free_limit() })))
            .collect();
        body["usage"] = Value::Object(usage);
        body["resets_at"] = json!(rfc3339_opt(resets_at));
    }
    Ok(Json(body))
}

/// `GET /api/billing/usage/reservations/{id}`: one of the tenant's own metered runs, so its
/// pages can show a run's state. Another tenant's reservation answers 404, as a missing one.
pub async fn reservation(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::not_found(format!("no reservation {id}"));
    let view = usage::reservation_of(&state.db, auth.tenant_id(), &id).await?.ok_or_else(not_found)?;
    let now = state.clock.now();
    let status =
        if view.status == "open" && view.expires_at <= now { "expired" } else { view.status.as_str() };
    Ok(Json(json!({
        "reservation_id": view.reservation_id,
        "metric": view.metric,
        "tier": view.tier,
        "status": status,
        "created_at": rfc3339(view.created_at),
        "expires_at": rfc3339(view.expires_at),
        "settled_at": rfc3339_opt(view.settled_at),
    })))
}
