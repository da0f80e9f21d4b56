//! Owns the tenant-facing billing calls (more arrive with checkout, seats and the portal).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::TenantAuth;
use super::error::{ApiError, ApiResult};
use crate::billing::checkout::PortalFlow;
use crate::billing::quotes::{self, Change};
use crate::billing::usage::Status;
use crate::domain::clock::{rfc3339, rfc3339_opt};
use crate::domain::ids::{QuoteId, SessionId};
use crate::domain::usage::shown_status;

/// The status answer, built from the same [`Status`] the settings page renders.
fn status_json(status: &Status, tenant_id: &str) -> Value {
    let sub = status.subscription();
    let effective = &status.effective;
    let usage = status.usage.as_ref().map(|u| {
        u.used
            .iter()
            .map(|(m, used)| (m.as_str().to_owned(), json!({ "used": used, "limit": m.free_limit() })))
            .collect::<Map<String, Value>>()
    });
    json!({
        "tenant_id": tenant_id,
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
        "usage": usage,
        "resets_at": rfc3339_opt(status.usage.as_ref().and_then(|u| u.resets_at)),
    })
}

/// `GET /api/billing/status`: the tenant's plan, subscription and, on free, its usage.
pub async fn status(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(status_json(&state.status(auth.tenant_id()).await?, auth.tenant_id())))
}

/// `GET /api/billing/usage/reservations/{id}`: one of the tenant's own metered runs, so its
/// pages can show a run's state. Another tenant's reservation answers 404, as a missing one.
pub async fn reservation(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = crate::domain::ids::ReservationId::parse(&id)?;
    let view = state.reservation(auth.tenant(), id.as_str()).await?;
    let status = shown_status(&view.status, view.expires_at, state.clock.now());
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

/// Every billing call that reaches Stripe: a billing admin, within the tenant's rate limit.
pub(crate) fn stripe_call_allowed(state: &AppState, auth: &TenantAuth) -> Result<(), ApiError> {
    auth.require_billing_admin()?;
    within_tenant_limit(state, auth)
}

/// One call from the tenant's budget of Stripe-reaching calls.
pub(crate) fn within_tenant_limit(state: &AppState, auth: &TenantAuth) -> Result<(), ApiError> {
    state.tenant_limiter.check(auth.tenant_id(), state.clock.now()).map_err(ApiError::rate_limited)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    price_id: String,
    #[serde(default = "one")]
    quantity: i64,
}

fn one() -> i64 {
    1
}

/// `POST /api/billing/checkout` `{price_id, quantity}` → `{url, session_id}`.
pub async fn checkout(
    auth: TenantAuth,
    State(state): State<AppState>,
    body: Result<Json<CheckoutBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    stripe_call_allowed(&state, &auth)?;
    state.require_enabled()?;
    let Json(body) = body?;
    let started = state.start_checkout(auth.tenant(), &body.price_id, body.quantity).await?;
    Ok(Json(json!({ "url": started.url, "session_id": started.session_id })))
}

#[derive(Deserialize)]
pub struct SessionQuery {
    session_id: Option<String>,
}

/// `GET /api/billing/checkout/session?session_id=cs_…` → `{status, plan_tier}`.
pub async fn checkout_session(
    auth: TenantAuth,
    State(state): State<AppState>,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    within_tenant_limit(&state, &auth)?;
    let Query(query) = query?;
    let session_id = query.session_id.ok_or_else(|| ApiError::invalid("session_id is required"))?;
    let progress = state.checkout_progress(auth.tenant(), &SessionId::parse(&session_id)?).await?;
    Ok(Json(json!({
        "status": if progress.provisioned { "active" } else { "provisioning" },
        "plan_tier": progress.plan_tier,
    })))
}

/// A preview (`{quantity}` / `{tier}`) or a confirmation (`{quote_id, confirm: true}`), never both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    quantity: Option<i64>,
    tier: Option<String>,
    quote_id: Option<String>,
    confirm: Option<bool>,
}

async fn change(state: &AppState, auth: &TenantAuth, body: ChangeBody, kind: &str) -> ApiResult<Value> {
    stripe_call_allowed(state, auth)?;
    state.require_enabled()?;
    let tenant = auth.tenant();
    match (body.quote_id, body.quantity.is_some() || body.tier.is_some()) {
        (Some(_), true) => {
            Err(ApiError::invalid("send either a change to preview or a quote_id to confirm, not both"))
        }
        (Some(quote), false) => {
            if body.confirm != Some(true) {
                return Err(ApiError::invalid("confirming a quote needs \"confirm\": true"));
            }
            let applied = quotes::confirm(state, tenant, &QuoteId::parse(&quote)?, kind).await?;
            Ok(json!({
                "applied": true,
                "quote_id": applied.quote_id,
                "amount_due": applied.amount_due,
                "quantity": applied.quantity,
                "price_id": applied.price_id,
                "latest_invoice": applied.latest_invoice,
            }))
        }
        (None, _) => {
            let change = match (kind, body.quantity, body.tier.as_deref()) {
                ("seats", Some(n), None) => Change::Seats(n),
                ("upgrade", None, Some("business")) => Change::UpgradeToBusiness,
                ("upgrade", None, Some(_)) => {
                    return Err(ApiError::invalid("tier is \"business\": downgrades happen in the portal"));
                }
                ("seats", ..) => return Err(ApiError::invalid("quantity is required")),
                _ => return Err(ApiError::invalid("tier is required")),
            };
            let q = quotes::preview(state, tenant, change).await?;
            Ok(json!({
                "quote_id": q.quote_id,
                "proration_date": rfc3339(q.proration_date),
                "amount_due": q.amount_due,
                "currency": q.currency,
                "lines": q.lines,
                "expires_at": rfc3339(q.expires_at),
            }))
        }
    }
}

/// `POST /api/billing/seats`.
pub async fn seats(
    auth: TenantAuth,
    State(state): State<AppState>,
    body: Result<Json<ChangeBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    Ok(Json(change(&state, &auth, body, "seats").await?))
}

/// `POST /api/billing/upgrade`.
pub async fn upgrade(
    auth: TenantAuth,
    State(state): State<AppState>,
    body: Result<Json<ChangeBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    Ok(Json(change(&state, &auth, body, "upgrade").await?))
}

/// `POST /api/billing/portal` `[{flow}]` → `{url}`, a fresh session every call; `flow`
/// (`payment_method_update` or `subscription_cancel`) opens it at that step. Served with billing
/// disabled too: a customer can always cancel.
pub async fn portal(
    auth: TenantAuth,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    stripe_call_allowed(&state, &auth)?;
    let flow =
        if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let parsed: PortalBody = serde_json::from_slice(&body)
                .map_err(|e| ApiError::invalid(format!("the body is not valid: {e}")))?;
            match parsed.flow.as_deref() {
                None => None,
                Some(f) => Some(PortalFlow::parse(f).ok_or_else(|| {
                    ApiError::invalid("flow is payment_method_update or subscription_cancel")
                })?),
            }
        };
    let url = state.portal_url(auth.tenant(), flow).await?;
    Ok(Json(json!({ "url": url })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalBody {
    flow: Option<String>,
}
