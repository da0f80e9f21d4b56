//! Owns the tenant-facing billing calls (more arrive with checkout, seats and the portal).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::TenantAuth;
use super::error::{ApiError, ApiResult};
use super::openapi::{ErrorBody, LapseReasonName, MetricName, TierName};
use crate::billing::checkout::PortalFlow;
use crate::billing::quotes::{self, Change};
use crate::billing::usage::Status;
use crate::domain::catalogue::Prices;
use crate::domain::clock::{rfc3339, rfc3339_opt};
use crate::domain::ids::{QuoteId, SessionId};
use crate::domain::usage::shown_status;

/// Free usage of one metric in the current 30-day window.
#[derive(Serialize, ToSchema)]
pub struct UsageCount {
    /// Committed runs plus open reservations.
    used: i64,
    limit: i64,
}

/// Whether the tenant's plan gives it access now.
#[derive(Serialize, ToSchema)]
pub struct AccessState {
    allowed: bool,
    /// Why a paid plan no longer gives access.
    #[schema(value_type = Option<LapseReasonName>)]
    reason: Option<&'static str>,
    #[schema(format = DateTime)]
    grace_ends_at: Option<String>,
    #[schema(format = DateTime)]
    access_until: Option<String>,
}

/// The tenant's plan, subscription and (on Free) its usage; subscription fields are null unless
/// a subscription is what gives the tier.
#[derive(Serialize, ToSchema)]
pub struct StatusAnswer {
    tenant_id: String,
    /// The effective tier.
    #[schema(value_type = TierName)]
    plan_tier: &'static str,
    #[schema(example = "active")]
    subscription_status: Option<String>,
    seat_count: Option<i64>,
    /// `month` or `year`.
    interval: Option<String>,
    #[schema(format = DateTime)]
    current_period_end: Option<String>,
    cancel_at_period_end: Option<bool>,
    /// Cents per interval the subscription costs now (seats × the price), when its price is one
    /// of the four on offer.
    recurring_amount: Option<i64>,
    access: AccessState,
    /// Free only: per metric (`fix`, `doc_run`, `linear_cycle`).
    usage: Option<BTreeMap<&'static str, UsageCount>>,
    /// Free only: when the oldest run of the window stops counting.
    #[schema(format = DateTime)]
    resets_at: Option<String>,
}

/// The status answer, built from the same [`Status`] the settings page renders.
fn status_answer(status: &Status, tenant_id: &str, prices: &Prices) -> StatusAnswer {
    let sub = status.subscription();
    let effective = &status.effective;
    let usage = status.usage.as_ref().map(|u| {
        u.used
            .iter()
            .map(|(m, used)| (m.as_str(), UsageCount { used: *used, limit: m.free_limit() }))
            .collect()
    });
    StatusAnswer {
        tenant_id: tenant_id.to_owned(),
        plan_tier: effective.tier.as_str(),
        subscription_status: sub.and_then(|r| r.stripe_subscription_status.clone()),
        seat_count: sub.and_then(|r| r.stripe_seat_count),
        interval: sub.and_then(|r| r.stripe_interval.clone()),
        current_period_end: rfc3339_opt(sub.and_then(|r| r.stripe_current_period_end)),
        cancel_at_period_end: sub.map(|r| r.cancel_at_period_end),
        recurring_amount: sub.and_then(|r| {
            let plan = prices.plan_of(r.stripe_price_id.as_deref()?)?;
            Some(plan.unit_amount * r.stripe_seat_count?)
        }),
        access: AccessState {
            allowed: effective.reason.is_none(),
            reason: effective.reason.map(|r| r.as_str()),
            grace_ends_at: rfc3339_opt(effective.grace_ends_at),
            access_until: rfc3339_opt(effective.access_until),
        },
        usage,
        resets_at: rfc3339_opt(status.usage.as_ref().and_then(|u| u.resets_at)),
    }
}

/// The tenant's status answer as it stands now.
async fn current_status(state: &AppState, auth: &TenantAuth) -> ApiResult<Json<StatusAnswer>> {
    let status = state.status(auth.tenant_id()).await?;
    Ok(Json(status_answer(&status, auth.tenant_id(), &state.config.stripe.prices)))
}

/// The tenant's plan, subscription and, on Free, its usage.
#[utoipa::path(get, path = "/api/billing/status", tag = "tenant",
    security(("tenant_token" = []), ("tenant_cookie" = [])),
    responses((status = 200, description = "The tenant's billing status", body = StatusAnswer)))]
pub async fn status(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<StatusAnswer>> {
    current_status(&state, &auth).await
}

/// One metered run, as the tenant's pages show it.
#[derive(Serialize, ToSchema)]
pub struct ReservationState {
    reservation_id: String,
    #[schema(value_type = MetricName)]
    metric: String,
    #[schema(value_type = TierName)]
    tier: String,
    /// `open`, `committed`, `released` or `expired` (an open one past its time shows `expired`).
    status: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(format = DateTime)]
    settled_at: Option<String>,
}

/// One of the tenant's own metered runs, so its pages can show a run's state. Another tenant's
/// reservation answers 404, as a missing one.
#[utoipa::path(get, path = "/api/billing/usage/reservations/{id}", tag = "tenant",
    security(("tenant_token" = []), ("tenant_cookie" = [])),
    params(("id" = String, Path, description = "The reservation id", pattern = "^[A-Za-z0-9_]{1,64}$")),
    responses(
        (status = 200, description = "The run", body = ReservationState),
        (status = 404, description = "Not this tenant's, or none", body = ErrorBody),
    ))]
pub async fn reservation(
    auth: TenantAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ReservationState>> {
    let id = crate::domain::ids::ReservationId::parse(&id)?;
    let view = state.reservation(auth.tenant(), id.as_str()).await?;
    let status = shown_status(&view.status, view.expires_at, state.clock.now());
    Ok(Json(ReservationState {
        reservation_id: view.reservation_id,
        metric: view.metric,
        tier: view.tier,
        status: status.to_owned(),
        created_at: rfc3339(view.created_at),
        expires_at: rfc3339(view.expires_at),
        settled_at: rfc3339_opt(view.settled_at),
    }))
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

/// What to buy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// One of the four configured Stripe prices.
    #[schema(example = "price_team_monthly")]
    price_id: String,
    /// Seats.
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 500, default = 1)]
    quantity: i64,
}

/// Where to send the customer to pay.
#[derive(Serialize, ToSchema)]
pub struct CheckoutAnswer {
    /// Stripe Checkout's page.
    url: String,
    session_id: String,
}

fn one() -> i64 {
    1
}

/// Start Stripe Checkout for a paid plan. Creating one expires the tenant's previous open session.
#[utoipa::path(post, path = "/api/billing/checkout", tag = "tenant",
    security(("tenant_token" = []), ("tenant_cookie" = [])),
    request_body = CheckoutBody,
    responses(
        (status = 200, description = "Checkout started", body = CheckoutAnswer),
        (status = 403, description = "Not a billing admin, or a cookie call without the same origin", body = ErrorBody),
        (status = 409, description = "A manual plan or a live subscription already", body = ErrorBody),
        (status = 429, description = "Over the tenant's 60 Stripe calls a minute", body = ErrorBody),
    ))]
pub async fn checkout(
    auth: TenantAuth,
    State(state): State<AppState>,
    body: Result<Json<CheckoutBody>, JsonRejection>,
) -> ApiResult<Json<CheckoutAnswer>> {
    stripe_call_allowed(&state, &auth)?;
    state.require_enabled()?;
    let Json(body) = body?;
    let started = state.start_checkout(auth.tenant(), &body.price_id, body.quantity).await?;
    Ok(Json(CheckoutAnswer { url: started.url, session_id: started.session_id }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// The Checkout Session id Stripe sent the customer back with.
    #[param(value_type = String, required = true, example = "cs_test_a1b2c3", pattern = "^cs_[A-Za-z0-9_]{1,197}$")]
    session_id: Option<String>,
}

/// After Checkout: whether the plan is provisioned yet.
#[derive(Serialize, ToSchema)]
pub struct SessionAnswer {
    /// `active` once the subscription is stored, `provisioning` until then.
    #[schema(example = "active")]
    status: &'static str,
    #[schema(value_type = TierName)]
    plan_tier: &'static str,
}

/// Confirm a completed Checkout Session is this tenant's and whether its plan is in place yet.
#[utoipa::path(get, path = "/api/billing/checkout/session", tag = "tenant",
    security(("tenant_token" = []), ("tenant_cookie" = [])),
    params(SessionQuery),
    responses(
        (status = 200, description = "Provisioning or active", body = SessionAnswer),
        (status = 404, description = "Not this tenant's session", body = ErrorBody),
        (status = 409, description = "The session is open or expired (`checkout_status`)", body = ErrorBody),
        (status = 429, description = "Over the tenant's 60 Stripe calls a minute", body = ErrorBody),
    ))]
pub async fn checkout_session(
    auth: TenantAuth,
    State(state): State<AppState>,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> ApiResult<Json<SessionAnswer>> {
    within_tenant_limit(&state, &auth)?;
    let Query(query) = query?;
    let session_id = query.session_id.ok_or_else(|| ApiError::invalid("session_id is required"))?;
    let progress = state.checkout_progress(auth.tenant(), &SessionId::parse(&session_id)?).await?;
    Ok(Json(SessionAnswer {
        status: if progress.provisioned { "active" } else { "provisioning" },
        plan_tier: progress.plan_tier.as_str(),
    }))
}

/// A preview (`{quantity}` / `{tier}`) or a confirmation (`{quote_id, confirm: true}`), never both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    /// Seats (`/seats` previews).
    #[schema(minimum = 1, maximum = 500)]
    quantity: Option<i64>,
    /// `business` (`/upgrade` previews).
    #[schema(example = "business")]
    tier: Option<String>,
    /// A quote to apply, with `confirm: true`.
    quote_id: Option<String>,
    confirm: Option<bool>,
}

/// One line of Stripe's proration invoice.
#[derive(Serialize, ToSchema)]
pub struct QuoteLine {
    description: Option<String>,
    /// Cents; negative for unused time credited.
    amount: i64,
    quantity: Option<i64>,
}

/// A binding price for a change: confirming it charges exactly `amount_due`.
#[derive(Serialize, ToSchema)]
pub struct QuoteAnswer {
    quote_id: String,
    #[schema(format = DateTime)]
    proration_date: String,
    /// Cents charged now if confirmed (0 when the change leaves a credit).
    amount_due: i64,
    #[schema(example = "usd")]
    currency: String,
    lines: Vec<QuoteLine>,
    /// The quote holds for 10 minutes.
    #[schema(format = DateTime)]
    expires_at: String,
    /// The seats after the change.
    quantity: i64,
    /// Cents a lower price leaves on the customer's balance; Stripe takes it off the next invoices.
    credit: i64,
    /// The recurring charge from the next renewal on.
    next: Option<NextChargeAnswer>,
    /// The card Stripe charges, e.g. `Visa •4242`, when the subscription names one.
    #[schema(example = "Visa •4242")]
    card: Option<String>,
}

/// What the subscription costs from its next renewal on.
#[derive(Serialize, ToSchema)]
pub struct NextChargeAnswer {
    /// When that charge first applies (the current period's end).
    #[schema(format = DateTime)]
    from: String,
    /// Cents per seat per interval.
    unit_amount: i64,
    quantity: i64,
    /// Cents per interval: `unit_amount × quantity`.
    amount: i64,
    /// `month` or `year`.
    #[schema(example = "month")]
    interval: &'static str,
}

/// A quote applied.
#[derive(Serialize, ToSchema)]
pub struct AppliedAnswer {
    applied: bool,
    quote_id: String,
    amount_due: i64,
    quantity: i64,
    price_id: String,
    /// Stripe's invoice for the change (its id, or null).
    #[schema(value_type = Option<Object>)]
    latest_invoice: Value,
}

/// A preview or an applied change.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ChangeAnswer {
    Quote(QuoteAnswer),
    Applied(AppliedAnswer),
}

async fn change(
    state: &AppState,
    auth: &TenantAuth,
    body: ChangeBody,
    kind: &str,
) -> ApiResult<ChangeAnswer> {
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
            Ok(ChangeAnswer::Applied(AppliedAnswer {
                applied: true,
                quote_id: applied.quote_id,
                amount_due: applied.amount_due,
                quantity: applied.quantity,
                price_id: applied.price_id,
                latest_invoice: applied.latest_invoice,
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
            Ok(ChangeAnswer::Quote(QuoteAnswer {
                quote_id: q.quote_id,
                proration_date: rfc3339(q.proration_date),
                amount_due: q.amount_due,
                currency: q.currency,
                lines: q
                    .lines
                    .iter()
                    .map(|l| QuoteLine {
                        description: l["description"].as_str().map(str::to_owned),
                        amount: l["amount"].as_i64().unwrap_or(0),
                        quantity: l["quantity"].as_i64(),
                    })
                    .collect(),
                expires_at: rfc3339(q.expires_at),
                quantity: q.quantity,
                credit: q.credit,
                next: q.next.map(|n| NextChargeAnswer {
                    from: rfc3339(n.from),
                    unit_amount: n.unit_amount,
                    quantity: n.quantity,
                    amount: n.amount,
                    interval: n.interval,
                }),
                card: q.card,
            }))
        }
    }
}

/// Preview a seat change (`{quantity}`) or apply a quote (`{quote_id, confirm: true}`).
#[utoipa::path(post, path = "/api/billing/seats", tag = "tenant",
    security(("tenant_token" = []), ("tenant_cookie" = [])),
    request_body = ChangeBody,
    responses(
        (status = 200, description = "A quote, or the applied change", body = ChangeAnswer),
        (status = 403, description = "Not a billing admin, or a cookie call without the same origin", body = ErrorBody),
        (status = 404, description = "No such quote", body = ErrorBody),
        (status = 409, description = "No changeable subscription, a stale quote or a declined charge", body = ErrorBody),
        (status = 429, description = "Over the tenant's 60 Stripe calls a minute", body = ErrorBody),
    ))]
pub async fn seats(
    auth: TenantAuth,
    State(state): State<AppState>,
    body: Result<Json<ChangeBody>, JsonRejection>,
) -> ApiResult<Json<ChangeAnswer>> {
    let Json(body) = body?;
    Ok(Json(change(&state, &auth, body, "seats").await?))
}

/// Preview Team → Business (`{tier: "business"}`) or apply a quote (`{quote_id, confirm: true}`).
#[utoipa::path(post, path = "/api/billing/upgrade", tag = "tenant",
    security(("tenant_token" = []), ("tenant_cookie" = [])),
    request_body = ChangeBody,
    responses(
        (status = 200, description = "A quote, or the applied change", body = ChangeAnswer),
        (status = 403, description = "Not a billing admin, or a cookie call without the same origin", body = ErrorBody),
        (status = 404, description = "No such quote", body = ErrorBody),
        (status = 409, description = "No changeable subscription, a stale quote or a declined charge", body = ErrorBody),
        (status = 429, description = "Over the tenant's 60 Stripe calls a minute", body = ErrorBody),
    ))]
pub async fn upgrade(
    auth: TenantAuth,
    State(state): State<AppState>,
    body: Result<Json<ChangeBody>, JsonRejection>,
) -> ApiResult<Json<ChangeAnswer>> {
    let Json(body) = body?;
    Ok(Json(change(&state, &auth, body, "upgrade").await?))
}

/// Take back a scheduled cancellation: the subscription renews as before; nothing is charged now.
#[utoipa::path(post, path = "/api/billing/resume", tag = "tenant",
    security(("tenant_token" = []), ("tenant_cookie" = [])),
    responses(
        (status = 200, description = "Resumed: the tenant's status after it", body = StatusAnswer),
        (status = 403, description = "Not a billing admin, or a cookie call without the same origin", body = ErrorBody),
        (status = 409, description = "No subscription set to cancel", body = ErrorBody),
        (status = 429, description = "Over the tenant's 60 Stripe calls a minute", body = ErrorBody),
    ))]
pub async fn resume(auth: TenantAuth, State(state): State<AppState>) -> ApiResult<Json<StatusAnswer>> {
    stripe_call_allowed(&state, &auth)?;
    state.require_enabled()?;
    quotes::resume(&state, auth.tenant()).await?;
    current_status(&state, &auth).await
}

/// A link to Stripe's page.
#[derive(Serialize, ToSchema)]
pub struct UrlAnswer {
    url: String,
}

/// A fresh Customer Portal session every call; `flow` opens it at that step. Served with
/// billing disabled too: a customer can always cancel.
#[utoipa::path(post, path = "/api/billing/portal", tag = "tenant",
    security(("tenant_token" = []), ("tenant_cookie" = [])),
    request_body(content = Option<PortalBody>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The portal's URL", body = UrlAnswer),
        (status = 403, description = "Not a billing admin, or a cookie call without the same origin", body = ErrorBody),
        (status = 409, description = "The tenant has no Stripe customer yet", body = ErrorBody),
        (status = 429, description = "Over the tenant's 60 Stripe calls a minute", body = ErrorBody),
    ))]
pub async fn portal(
    auth: TenantAuth,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<Json<UrlAnswer>> {
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
    Ok(Json(UrlAnswer { url }))
}

/// Where the portal opens.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalBody {
    /// `payment_method_update` or `subscription_cancel`; absent opens its home page.
    #[schema(example = "payment_method_update")]
    flow: Option<String>,
}
