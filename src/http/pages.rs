//! Owns the billing pages (BILL-19 to BILL-21): settings at `/billing`, the upgrade page at
//! `/billing/upgrade`, the post-checkout page at `/billing/success`, and their stylesheet and
//! script. Pages are rendered on the server from auto-escaping templates (`templates/`) out of the
//! same `Status` the API answers with; the one small script only calls the tenant API.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::DateTime;
use serde::Deserialize;

use super::AppState;
use super::assets::page_headers;
use super::auth::TenantAuth;
use super::error::ApiError;
use crate::billing::BillingError;
use crate::billing::usage::Status;
use crate::domain::access::{LapseReason, Tier};
use crate::domain::catalogue::{Interval, MAX_SEATS, PRODUCTS, plan};
use crate::domain::clock::{DAY, Timestamp};
use crate::domain::ids::SessionId;
use crate::domain::money::dollars;
use crate::domain::subscription::is_live_status;

const STYLESHEET: &str = include_str!("../../assets/billing.css");
const SCRIPT: &str = include_str!("../../assets/billing.js");
const PROMPT_DEMO_SCRIPT: &str = include_str!("../../assets/prompt-demo.js");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// How often the success page asks for the tenant's status, and when it stops and says what to
/// do instead (BILL-21).
pub const SUCCESS_POLL_MS: u64 = 2_000;
pub const SUCCESS_GIVE_UP_MS: u64 = 30_000;

/// `GET /billing/assets/{name}`: the pages' stylesheet and script (no build step: served as
/// written).
pub async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "billing.css" => ("text/css; charset=utf-8", STYLESHEET),
        "billing.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "prompt-demo.js" => ("text/javascript; charset=utf-8", PROMPT_DEMO_SCRIPT),
        "favicon.svg" => ("image/svg+xml", FAVICON),
        _ => return ApiError::not_found(format!("no asset {name}")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// A rendered page with the page security headers; a template that fails to render is our bug,
/// logged and answered with a plain 500 rather than half a page.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            (status, page_headers(), [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "a page template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "something went wrong on our side; it has been logged")
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    page: &'a str,
    demo: bool,
    heading: &'a str,
    text: &'a str,
    link: Option<(&'a str, &'a str)>,
}

fn message(
    state: &AppState,
    status: StatusCode,
    heading: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let page = MessagePage { title: heading, page: "message", demo: state.config.demo, heading, text, link };
    render(status, &page)
}

/// A mistyped page address: a page in the site's style, not the API's JSON.
pub(crate) fn page_not_found(state: &AppState) -> Response {
    message(
        state,
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no billing page at this address.",
        Some(("/billing", "Go to Plan & usage")),
    )
}

/// No session, or one that expired: pages are opened from Hydra, which signs the user in. Only
/// someone whose browser sent a session is told it ended; a first visit is just asked to sign in.
fn signed_out(state: &AppState, headers: &HeaderMap) -> Response {
    let link = state.config.demo.then_some(("/demo", "Pick a demo team"));
    let text = if super::auth::session_cookie(headers).is_some() {
        "Your session has ended. Open Billing from Hydra's settings to sign in again."
    } else {
        "Billing opens from Hydra: go to your team's settings in Hydra and choose Billing to sign in."
    };
    message(state, StatusCode::UNAUTHORIZED, "Please sign in", text, link)
}

/// An API error shown as a page, with the same status and sentence the API would give.
fn error_page(state: &AppState, e: &ApiError) -> Response {
    let (status, text) = e.status_and_message();
    message(state, status, "Something went wrong", &sentence(&text), Some(("/billing", "Back to billing")))
}

/// The API's messages are lower-case clauses; a page shows them as sentences.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `27 December 2026`, in UTC like every date we store.
pub(crate) fn date(t: Timestamp) -> String {
    DateTime::from_timestamp(t, 0).map_or_else(String::new, |d| d.format("%-d %B %Y").to_string())
}

pub(crate) fn tier_label(tier: Tier) -> &'static str {
    match tier {
        Tier::Free => "Free",
        Tier::Team => "Team",
        Tier::Business => "Business",
        Tier::Enterprise => "Enterprise",
    }
}

struct Notice {
    /// `warning` (announced as an alert) or `info`.
    kind: &'static str,
    text: String,
}

impl Notice {
    fn warning(text: String) -> Notice {
        Notice { kind: "warning", text }
    }
    fn info(text: String) -> Notice {
        Notice { kind: "info", text }
    }
}

/// The subscriber's billing section: from our rows and the catalogue at once, and from Stripe
/// what it says within its deadline and the tenant's budget of Stripe calls.
async fn account_view(
    state: &AppState,
    auth: &TenantAuth,
    status: &Status,
    row: &crate::store::TenantRow,
) -> AccountView {
    let e = &status.effective;
    let plan = row.stripe_price_id.as_deref().and_then(|p| state.config.stripe.prices.plan_of(p));
    let seats = row.stripe_seat_count.unwrap_or(1);
    let recurring = plan.map(|p| p.unit_amount * seats);
    let price = plan.filter(|_| e.tier.is_paid()).map(|p| {
        format!(
            "{} per {} ({seats} × {})",
            dollars(p.unit_amount * seats),
            p.interval.as_str(),
            dollars(p.unit_amount)
        )
    });
    let live = match super::tenant::within_tenant_limit(state, auth) {
        Ok(()) => state.account_details(row).await,
        Err(_) => None,
    };
    let credit = live.as_ref().map_or(0, |l| l.credit);
    // A renewal is next only while nothing ends the subscription first.
    let renews = e.tier.is_paid() && e.access_until.is_none() && e.grace_ends_at.is_none();
    let next_charge = match (renews, recurring, row.stripe_current_period_end) {
        (true, Some(amount), Some(at)) => Some(if credit > 0 {
            format!(
                "{} on {} (after your {} credit)",
                dollars((amount - credit).max(0)),
                date(at),
                dollars(credit.min(amount))
            )
        } else {
            format!("{} on {}", dollars(amount), date(at))
        }),
        _ => None,
    };
    AccountView {
        price,
        next_charge,
        billing_email: row.billing_email.clone().unwrap_or_else(|| "not set".to_owned()),
        live: live.map(|l| LiveAccount {
            card: l.card.unwrap_or_else(|| "none on file".to_owned()),
            credit: (l.credit > 0)
                .then(|| format!("{} credit, taken off your next invoices", dollars(l.credit))),
            owed: l.owed.filter(|o| *o > 0).map(dollars),
            invoices: l
                .invoices
                .into_iter()
                .map(|i| {
                    (date(i.created), i.number, dollars(i.total), invoice_status(&i.status), i.hosted_url)
                })
                .collect(),
        }),
    }
}

/// The paid tier a lapsed team had: the row's tier while it still names one, else the tier of the
/// price its ended subscription was on (syncing a cancelled subscription tidies the tier to free).
fn lapsed_tier(state: &AppState, status: &Status) -> Option<Tier> {
    status.effective.reason?;
    status.effective.lapsed_from.filter(|t| t.is_paid()).or_else(|| {
        let price = status.row.as_ref()?.stripe_price_id.as_deref()?;
        state.config.stripe.prices.tier_of(price).filter(|t| t.is_paid())
    })
}

/// An invoice's status in words.
fn invoice_status(status: &str) -> String {
    match status {
        "paid" => "Paid",
        "open" => "Unpaid",
        "void" => "Void",
        "uncollectible" => "Uncollectible",
        "draft" => "Draft",
        other => other,
    }
    .to_owned()
}

/// What a lapsed team had, as a link that sets the upgrade page to it.
fn restore_link(state: &AppState, status: &Status) -> Option<(String, String)> {
    let tier = lapsed_tier(state, status)?;
    let row = status.row.as_ref()?;
    // A subscription still running (past due after its grace) comes back by paying, not anew.
    if row.stripe_subscription_status.as_deref().is_some_and(is_live_status) {
        return None;
    }
    let seats = row.stripe_seat_count.unwrap_or(1).clamp(1, MAX_SEATS);
    let interval = if row.stripe_interval.as_deref() == Some("year") { "year" } else { "month" };
    let label = tier_label(tier);
    let seat_word = if seats == 1 { "seat" } else { "seats" };
    Some((
        format!("/billing/upgrade?tier={}&interval={interval}&seats={seats}", tier.as_str()),
        format!("Restore {label}, {seats} {seat_word}"),
    ))
}

/// A cancellation scheduled on a running subscription, which "Resume" takes back.
fn resumable(row: &crate::store::TenantRow) -> bool {
    row.cancel_at_period_end
        && row
            .stripe_subscription_status
            .as_deref()
            .is_some_and(|s| matches!(s, "active" | "trialing" | "past_due"))
}

/// When a cancelled subscription ended, for the notice: from the audit log's record of the sync
/// that saw it cancelled (a failed payment's cancellation has no date of its own in our rows).
async fn cancelled_at(state: &AppState, status: &Status) -> Option<Timestamp> {
    let row = status.row.as_ref()?;
    if status.effective.reason != Some(LapseReason::Canceled) {
        return None;
    }
    state.store.status_entered_at(&row.id, "canceled").await.ok().flatten()
}

/// What the settings and upgrade pages both say about the tenant's state; `cancelled_at` from
/// [`cancelled_at`].
fn notices(state: &AppState, status: &Status, cancelled_at: Option<Timestamp>) -> Vec<Notice> {
    let mut out = Vec::new();
    if state.billing_disabled_since.is_some() {
        out.push(Notice::info(
            "Plan changes are paused for maintenance. Your plan and access stay as they are.".into(),
        ));
    }
    let e = &status.effective;
    let sub = status.subscription();
    if let (Some(grace_end), Some(_)) = (e.grace_ends_at, sub) {
        out.push(Notice::warning(format!(
            "Your last payment didn't go through. Use Update payment method before {} to keep {}.",
            date(grace_end),
            tier_label(e.tier)
        )));
    } else if let (Some(until), Some(row), false) = (e.access_until, sub, status.manual_plan) {
        let tier = tier_label(e.tier);
        out.push(Notice::info(if resumable(row) {
            format!(
                "Your subscription ends on {}: you keep {tier} until then, then your team moves to Free. \
                 Resume it to keep {tier}.",
                date(until)
            )
        } else {
            format!(
                "Your subscription is cancelled. You keep {tier} until {}, then your team moves to Free.",
                date(until)
            )
        }));
    }
    if let Some(reason) = e.reason {
        let was = lapsed_tier(state, status).map(tier_label);
        let plan = was.map_or_else(|| "your plan".to_owned(), str::to_owned);
        let subscription =
            was.map_or_else(|| "Your subscription".to_owned(), |w| format!("Your {w} subscription"));
        out.push(Notice::warning(match reason {
            LapseReason::PastDueGraceEnded => {
                let since = status
                    .row
                    .as_ref()
                    .and_then(|r| r.grace_started_at)
                    .map(|g| format!(" since {}", date(g + state.config.grace_period_days * DAY)))
                    .unwrap_or_default();
                format!(
                    "Payments for {plan} kept failing, so your team is on Free{since}. Use Update payment \
                     method to get {plan} back."
                )
            }
            LapseReason::Canceled => {
                let row = status.row.as_ref();
                if row.and_then(|r| r.cancellation_reason.as_deref()) == Some("payment_failed") {
                    match cancelled_at {
                        Some(at) => format!(
                            "{subscription} was cancelled on {} because its payments failed; your team is on \
                             Free.",
                            date(at)
                        ),
                        None => format!(
                            "{subscription} was cancelled because its payments failed; your team is on Free."
                        ),
                    }
                } else {
                    match row.and_then(|r| r.stripe_current_period_end) {
                        Some(end) => format!("{subscription} ended on {}; your team is on Free.", date(end)),
                        None => format!("{subscription} has ended; your team is on Free."),
                    }
                }
            }
            LapseReason::Unpaid | LapseReason::Incomplete => format!(
                "The payment for {plan} hasn't completed, so your team is on Free. Finish it, or use Update \
                 payment method."
            ),
            LapseReason::Paused => format!("{subscription} is paused; your team is on Free meanwhile."),
            LapseReason::ManualPlanEnded => {
                "Your contract has ended; your team is on Free. Your account team can renew it.".to_owned()
            }
        }));
    }
    out
}

/// The tenant's status, or the error page to show instead.
async fn load_status(state: &AppState, auth: &TenantAuth) -> Result<Status, Response> {
    state.status(auth.tenant_id()).await.map_err(|e| error_page(state, &ApiError::from(e)))
}

fn tenant_name(status: &Status, auth: &TenantAuth) -> String {
    status
        .row
        .as_ref()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| auth.tenant_id().to_owned())
}

struct UsageBar {
    key: &'static str,
    label: &'static str,
    used: i64,
    limit: i64,
    percent: i64,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    title: &'static str,
    page: &'static str,
    demo: bool,
    tenant_name: String,
    notices: Vec<Notice>,
    tier_key: &'static str,
    tier_label: &'static str,
    interval_label: Option<&'static str>,
    paid: bool,
    manual: bool,
    /// The portal has something to show (a subscription, live or past, and its invoices): a free
    /// team that never subscribed gets only "Upgrade", not an empty portal.
    has_subscription: bool,
    /// A cancellation is scheduled that "Resume subscription" can take back.
    can_resume: bool,
    /// "Past due" beside the plan while a failed payment's grace period runs.
    past_due: bool,
    /// After a plan lapsed: the upgrade page set to what the team had, and its label
    /// ("Restore Business, 12 seats").
    restore: Option<(String, String)>,
    /// Price, next charge, card, billing email and invoices, for a tenant with a subscription.
    account: Option<AccountView>,
    is_admin: bool,
    seats: Option<i64>,
    /// ("Renews on" | "Cancels on" | "Access until" | "Pay by", the date).
    renewal: Option<(&'static str, String)>,
    usage: Vec<UsageBar>,
    resets_text: String,
}

/// The billing section of a subscriber's settings page. `live` is what Stripe said, if it
/// answered in time; the rest comes from our rows and the catalogue.
struct AccountView {
    /// "$60.00 per month (3 × $20.00)".
    price: Option<String>,
    /// "$60.00 on 30 December 2026" (after any credit), while it renews.
    next_charge: Option<String>,
    billing_email: String,
    live: Option<LiveAccount>,
}

struct LiveAccount {
    card: String,
    /// "$768.00 credit, taken off your next invoices".
    credit: Option<String>,
    /// What a failed renewal still asks for.
    owed: Option<String>,
    /// (date, number, amount, status, link).
    invoices: Vec<(String, String, String, String, Option<String>)>,
}

/// `GET /billing`: the plan, seats, renewal and notices on a paid plan; the three free quotas
/// with the days until they reset on Free.
pub async fn settings(
    auth: Result<TenantAuth, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let Ok(auth) = auth else { return signed_out(&state, &headers) };
    let status = match load_status(&state, &auth).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let e = &status.effective;
    let manual = status.manual_plan;
    // Under a manual plan, Stripe's fields (if any) are not what the tenant has.
    let sub = status.subscription().filter(|_| !manual);
    // In a grace period the date that matters is the one to pay by: "Access until" would read as
    // a cancellation, and "Renews on" would promise a renewal that depends on that payment.
    let renewal = sub.and_then(|r| match (e.grace_ends_at, e.access_until) {
        (Some(grace_end), _) => Some(("Pay by", date(grace_end))),
        (None, Some(until)) if resumable(r) => Some(("Cancels on", date(until))),
        (None, Some(until)) => Some(("Access until", date(until))),
        (None, None) => r.stripe_current_period_end.map(|end| ("Renews on", date(end))),
    });
    let usage: Vec<UsageBar> = status
        .usage
        .as_ref()
        .map(|u| {
            u.used
                .iter()
                .map(|&(metric, used)| {
                    let limit = metric.free_limit();
                    UsageBar {
                        key: metric.as_str(),
                        label: metric.label(),
                        used,
                        limit,
                        percent: (used * 100 / limit.max(1)).clamp(0, 100),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let resets_text = match status.usage.as_ref().and_then(|u| u.resets_at) {
        Some(at) => {
            let days = (at - status.now + DAY - 1).div_euclid(DAY).max(0);
            let when = match days {
                0 => "today".to_owned(),
                1 => "in 1 day".to_owned(),
                n => format!("in {n} days"),
            };
            format!("Your free runs reset {when}, on {}.", date(at))
        }
        None => "Your 30-day window starts with your first run.".to_owned(),
    };
    let account = match status.row.as_ref().filter(|r| r.stripe_subscription_id.is_some() && !manual) {
        Some(row) => Some(account_view(&state, &auth, &status, row).await),
        None => None,
    };
    let page = SettingsPage {
        title: "Plan & usage",
        page: "settings",
        demo: state.config.demo,
        tenant_name: tenant_name(&status, &auth),
        notices: notices(&state, &status, cancelled_at(&state, &status).await),
        tier_key: e.tier.as_str(),
        tier_label: tier_label(e.tier),
        interval_label: sub.and_then(|r| match r.stripe_interval.as_deref() {
            Some("year") => Some("Annual"),
            Some("month") => Some("Monthly"),
            _ => None,
        }),
        paid: e.tier.is_paid(),
        manual,
        has_subscription: status
            .row
            .as_ref()
            .is_some_and(|r| r.stripe_customer_id.is_some() && r.stripe_subscription_id.is_some()),
        is_admin: auth.require_billing_admin().is_ok(),
        can_resume: sub.is_some_and(resumable) && state.billing_disabled_since.is_none(),
        past_due: sub.is_some() && e.grace_ends_at.is_some(),
        restore: restore_link(&state, &status),
        account,
        seats: sub.and_then(|r| r.stripe_seat_count),
        renewal,
        usage,
        resets_text,
    };
    render(StatusCode::OK, &page)
}

/// One paid plan as the upgrade page offers it: amounts from the catalogue `stripe setup` creates
/// (preflight checks Stripe's prices match it), ids from the configuration.
struct PlanOption {
    key: &'static str,
    label: &'static str,
    monthly_cents: i64,
    annual_cents: i64,
    monthly_price_id: String,
    annual_price_id: String,
    monthly_text: String,
    gain: &'static str,
}

const TEAM_GAIN: &str = "Unlimited fixes, doc runs and Linear cycles, all 7 workflows in full, up to 5 \
                         connected repositories.";
const BUSINESS_GAIN: &str = "Everything in Team with unlimited repositories, plus Jira, audit logs, usage \
                             reporting and the priority fix queue.";

fn plan_options(state: &AppState) -> Vec<PlanOption> {
    let prices = &state.config.stripe.prices;
    PRODUCTS
        .iter()
        .map(|product| {
            let business = product.tier == Tier::Business;
            let monthly = plan(product.tier, Interval::Month);
            let annual = plan(product.tier, Interval::Year);
            let cents = |p: Option<&crate::domain::catalogue::Plan>| p.map_or(0, |p| p.unit_amount);
            let id = |p: Option<&crate::domain::catalogue::Plan>| {
                p.map(|p| prices.id_of(p).to_owned()).unwrap_or_default()
            };
            PlanOption {
                key: product.tier.as_str(),
                label: if business { "Business" } else { "Team" },
                monthly_cents: cents(monthly),
                annual_cents: cents(annual),
                monthly_price_id: id(monthly),
                annual_price_id: id(annual),
                monthly_text: dollars(cents(monthly)),
                gain: if business { BUSINESS_GAIN } else { TEAM_GAIN },
            }
        })
        .collect()
}

#[derive(Deserialize, Default)]
pub struct UpgradeQuery {
    tier: Option<String>,
    interval: Option<String>,
    seats: Option<i64>,
    /// Repositories the tenant has connected, when Hydra's link says so: Team caps them at 5.
    repos: Option<i64>,
    /// `cancelled` when the customer left Stripe Checkout without paying.
    checkout: Option<String>,
}

#[derive(Template)]
#[template(path = "upgrade.html")]
struct UpgradePage {
    title: &'static str,
    page: &'static str,
    demo: bool,
    tenant_name: String,
    current_label: &'static str,
    notices: Vec<Notice>,
    /// `checkout` (free: pick a plan), `change` (an active subscription: seats or Business), or
    /// `none` (nothing can be changed here now; a notice says why).
    mode: &'static str,
    plans: Vec<PlanOption>,
    selected: String,
    annual: bool,
    seats: i64,
    can_checkout: bool,
    can_upgrade: bool,
    business_gain: &'static str,
    /// What Business would cost at the subscription's seats and interval, before any preview:
    /// "Business: 3 × $40.00 = $120.00 per month".
    business_price: Option<String>,
    /// How long a previewed price holds. The page says it as a duration from when the preview
    /// arrived: the browser's clock need not match ours (the demo's runs days ahead).
    quote_ttl_secs: i64,
}

/// `GET /billing/upgrade[?tier=team|business&interval=month|year&seats=N&repos=N]`.
pub async fn upgrade(
    auth: Result<TenantAuth, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<UpgradeQuery>, QueryRejection>,
) -> Response {
    let Ok(auth) = auth else { return signed_out(&state, &headers) };
    // A malformed link still shows the page, with the defaults.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let status = match load_status(&state, &auth).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let e = &status.effective;
    let mut notices = notices(&state, &status, cancelled_at(&state, &status).await);
    let is_admin = auth.require_billing_admin().is_ok();
    let frozen = state.billing_disabled_since.is_some();
    let row = status.row.as_ref();
    let live_status = row.and_then(|r| r.stripe_subscription_status.as_deref()).filter(|s| is_live_status(s));
    let mode = if status.manual_plan {
        notices.push(Notice::info(
            "Your plan is managed by your Hydra account team; write to them to change it.".into(),
        ));
        "none"
    } else if let Some(live) = live_status {
        let changeable = e.tier.is_paid()
            && live == "active"
            && row.is_some_and(|r| !r.cancel_at_period_end && r.cancel_at.is_none());
        if changeable {
            "change"
        } else {
            if e.grace_ends_at.is_none() && e.access_until.is_none() && e.reason.is_none() {
                notices.push(Notice::warning(format!(
                    "Your subscription is {live}; manage it from Plan & usage before changing it here."
                )));
            } else {
                notices.push(Notice::info(
                    "Changes open again once the subscription is back in good standing, or resumed \
                     (Plan & usage, Resume subscription)."
                        .into(),
                ));
            }
            "none"
        }
    } else {
        "checkout"
    };
    if !is_admin && mode != "none" {
        notices.push(Notice::info("Only a billing admin of your team can change the plan.".into()));
    }
    let mode = if mode == "change" && (!is_admin || frozen) { "none" } else { mode };
    if query.repos.is_some_and(|n| n > crate::domain::access::TEAM_REPO_LIMIT) && mode == "checkout" {
        notices.push(Notice::info(format!(
            "You have {} repositories connected. Team includes {}: the ones you have keep working, but \
             connecting more needs Business.",
            query.repos.unwrap_or_default(),
            crate::domain::access::TEAM_REPO_LIMIT
        )));
    }
    if query.checkout.as_deref() == Some("cancelled") && mode == "checkout" {
        notices.push(Notice::info(
            "You left checkout, so nothing was charged. Your choices are as you left them.".into(),
        ));
    }
    let selected = match query.tier.as_deref() {
        Some(t @ ("free" | "team" | "business")) => t.to_owned(),
        _ => "team".to_owned(),
    };
    let current_seats = status.subscription().and_then(|r| r.stripe_seat_count);
    let business_price = status.subscription().and_then(|r| {
        let interval = match r.stripe_interval.as_deref() {
            Some("year") => Interval::Year,
            _ => Interval::Month,
        };
        let seats = r.stripe_seat_count?;
        let unit = plan(Tier::Business, interval)?.unit_amount;
        let per = if interval == Interval::Year { "year" } else { "month" };
        Some(format!(
            "Business: {seats} × {} = {} per {per}, from your next renewal; today only the difference for \
             the rest of this period.",
            dollars(unit),
            dollars(unit * seats)
        ))
    });
    let page = UpgradePage {
        title: "Change plan",
        page: "upgrade",
        demo: state.config.demo,
        tenant_name: tenant_name(&status, &auth),
        current_label: tier_label(e.tier),
        notices,
        mode,
        plans: plan_options(&state),
        selected,
        annual: query.interval.as_deref() == Some("year"),
        seats: current_seats.or(query.seats).unwrap_or(1).clamp(1, MAX_SEATS),
        can_checkout: is_admin && !frozen,
        can_upgrade: is_admin && !frozen && e.tier == Tier::Team,
        business_gain: BUSINESS_GAIN,
        business_price,
        quote_ttl_secs: crate::billing::quotes::QUOTE_TTL_SECS,
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct SuccessQuery {
    session_id: Option<String>,
    plan: Option<String>,
}

#[derive(Template)]
#[template(path = "success.html")]
struct SuccessPage {
    title: &'static str,
    page: &'static str,
    demo: bool,
    tier_label: &'static str,
    poll_ms: u64,
    give_up_ms: u64,
    reference: String,
    /// Stripe said the session is paid; when it could not be asked, the page does not claim it.
    confirmed: bool,
    /// Where Stripe sends the receipt.
    receipt_to: Option<String>,
}

/// `GET /billing/success?session_id=cs_…&plan=team|business`: Checkout's return. Confirms the
/// session is this tenant's (which also asks for a reconcile when the webhook is late), then the
/// script polls the status until the plan is on, for at most 30 s.
pub async fn success(
    auth: Result<TenantAuth, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SuccessQuery>, QueryRejection>,
) -> Response {
    let Ok(auth) = auth else { return signed_out(&state, &headers) };
    let Some((session_id, plan)) = query.ok().and_then(|Query(q)| Some((q.session_id?, q.plan))) else {
        return message(
            &state,
            StatusCode::BAD_REQUEST,
            "This link is incomplete",
            "The link from Checkout lost its reference. Your plan is on Plan & usage.",
            Some(("/billing", "Go to Plan & usage")),
        );
    };
    // The lookup is a Stripe call, so it spends the tenant's budget like the API's; once that is
    // spent (someone reloading), the page skips the lookup and polls our own status instead.
    let lookup = match super::tenant::within_tenant_limit(&state, &auth) {
        Ok(()) => match SessionId::parse(&session_id) {
            Ok(session) => state.checkout_progress(auth.tenant(), &session).await.map_err(ApiError::from),
            Err(e) => Err(ApiError::from(e)),
        },
        Err(e) => Err(e),
    };
    let confirmed = lookup.is_ok();
    match lookup {
        Ok(_) => {}
        Err(ApiError::Billing(BillingError::Conflict { .. })) => {
            return message(
                &state,
                StatusCode::CONFLICT,
                "Your checkout isn't finished",
                "Nothing was charged. You can pick a plan and try again.",
                Some(("/billing/upgrade", "Back to plans")),
            );
        }
        Err(ApiError::Billing(BillingError::NotFound(_) | BillingError::Invalid(_))) => {
            return message(
                &state,
                StatusCode::NOT_FOUND,
                "We couldn't find that checkout",
                "This link doesn't match a checkout of your team, so there is nothing to confirm here. \
                 Your plan and any payment show on Plan & usage.",
                Some(("/billing", "Go to Plan & usage")),
            );
        }
        // Stripe unreachable or busy, or the tenant's budget spent: the payment may well have gone
        // through, and the status the page polls is ours, so the page still waits for the plan.
        Err(e) => tracing::warn!(error = %e, "the checkout lookup failed; the success page polls anyway"),
    }
    // The plan chosen, as Checkout's return link carries it; the script replaces it with the
    // tier the status reports once provisioned.
    let tier = match plan.as_deref() {
        Some("business") => Some(Tier::Business),
        Some("team") => Some(Tier::Team),
        _ => None,
    };
    let receipt_to = match state.status(auth.tenant_id()).await {
        Ok(status) => status.row.and_then(|r| r.billing_email),
        Err(_) => None,
    };
    let page = SuccessPage {
        title: "Welcome",
        receipt_to,
        page: "success",
        demo: state.config.demo,
        tier_label: tier.map_or("your new plan", tier_label),
        poll_ms: SUCCESS_POLL_MS,
        give_up_ms: SUCCESS_GIVE_UP_MS,
        reference: session_id,
        confirmed,
    };
    render(StatusCode::OK, &page)
}
