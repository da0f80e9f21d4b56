//! Owns the tenant-facing billing calls (more arrive with checkout, seats and the portal).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::access::Effective;
use crate::app::AppState;
use crate::auth::TenantAuth;
use crate::clock::{rfc3339, rfc3339_opt};
use crate::error::{ApiError, ApiResult};
use crate::tenants;
use crate::usage;

/// What a tenant's billing looks like now: the API's status answer and the settings page are
/// both this, so the page can never disagree with the API.
pub struct Status {
    pub row: Option<tenants::TenantRow>,
    pub effective: Effective,
    /// Free only: per metric, committed plus open units of the current window.
    pub usage: Option<usage::FreeUsage>,
    pub now: crate::clock::Timestamp,
    /// A manual plan decides the tier (pages then show it instead of the subscription's fields).
    pub manual_plan: bool,
}

impl Status {
    pub async fn load(state: &AppState, tenant_id: &str) -> ApiResult<Status> {
        let now = state.clock.now();
        let row = tenants::get(&state.db, tenant_id).await?;
        let billing = row.as_ref().map(|r| r.billing_state()).unwrap_or_default();
        let effective = state.effective(&billing);
        let usage = match (&row, effective.tier.is_paid()) {
            (_, true) => None,
            (Some(row), false) => Some(usage::free_usage(&state.db, row, now).await?),
            (None, false) => {
                Some(usage::FreeUsage { used: usage::Metric::ALL.map(|m| (m, 0)), resets_at: None })
            }
        };
        let manual_plan = billing.manual_plan_in_force(state.access_time()).is_some();
        Ok(Status { row, effective, usage, now, manual_plan })
    }

    /// The subscription columns, shown only while they are what gives the tenant its tier.
    pub fn subscription(&self) -> Option<&tenants::TenantRow> {
        self.row.as_ref().filter(|_| self.effective.tier.is_paid())
    }

    fn to_json(&self, tenant_id: &str) -> Value {
        let sub = self.subscription();
        let effective = &self.effective;
        let usage = self.usage.as_ref().map(|u| {
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
            "resets_at": rfc3339_opt(self.usage.as_ref().and_then(|u| u.resets_at)),
        })
    }
}

/// `GET /api/billing/status`: the tenant's plan, subscription and, on free, its usage.
pub async fn status(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(Status::load(&state, auth.tenant_id()).await?.to_json(auth.tenant_id())))
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
    let status = usage::shown_status(&view.status, view.expires_at, now);
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
    state.tenant_limiter.check(auth.tenant_id(), state.clock.now())
}

fn require_billing_enabled(state: &AppState) -> Result<(), ApiError> {
    if state.billing_disabled_since.is_some() { Err(ApiError::BillingDisabled) } else { Ok(()) }
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
    require_billing_enabled(&state)?;
    let Json(body) = body?;
    Ok(Json(crate::checkout::start(&state, auth.tenant_id(), &body.price_id, body.quantity).await?))
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
    state.tenant_limiter.check(auth.tenant_id(), state.clock.now())?;
    let Query(query) = query?;
    let session_id = query.session_id.ok_or_else(|| ApiError::invalid("session_id is required"))?;
    Ok(Json(crate::checkout::session_status(&state, auth.tenant_id(), &session_id).await?))
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
    require_billing_enabled(state)?;
    let tenant = auth.tenant_id();
    match (body.quote_id, body.quantity.is_some() || body.tier.is_some()) {
        (Some(_), true) => {
            Err(ApiError::invalid("send either a change to preview or a quote_id to confirm, not both"))
        }
        (Some(quote), false) => {
            if body.confirm != Some(true) {
                return Err(ApiError::invalid("confirming a quote needs \"confirm\": true"));
            }
            crate::quotes::confirm(state, tenant, &quote, kind).await
        }
        (None, _) => {
            let change = match (kind, body.quantity, body.tier.as_deref()) {
                ("seats", Some(n), None) => crate::quotes::Change::Seats(n),
                ("upgrade", None, Some("business")) => crate::quotes::Change::UpgradeToBusiness,
                ("upgrade", None, Some(_)) => {
                    return Err(ApiError::invalid("tier is \"business\": downgrades happen in the portal"));
                }
                ("seats", ..) => return Err(ApiError::invalid("quantity is required")),
                _ => return Err(ApiError::invalid("tier is required")),
            };
            crate::quotes::preview(state, tenant, change).await
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

/// `POST /api/billing/portal` → `{url}`, a fresh session every call. Served with billing disabled
/// too: a customer can always cancel.
pub async fn portal(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    stripe_call_allowed(&state, &auth)?;
    let row = crate::tenants::get(&state.db, auth.tenant_id()).await?;
    let customer = row
        .and_then(|r| r.stripe_customer_id)
        .ok_or_else(|| ApiError::conflict("there is no billing account yet; upgrade first"))?;
    let return_url = format!("{}/billing", state.config.public_url);
    let mut form = crate::stripe::params(&[("customer", &customer), ("return_url", &return_url)]);
    if let Some(config) = &state.config.stripe.portal_config_id {
        form.push(("configuration".into(), config.clone()));
    }
    let session = state.stripe.post("/v1/billing_portal/sessions", &form, None).await?;
    let url = session["url"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("Stripe returned a portal session without url"))?;
    Ok(Json(json!({ "url": url })))
}
