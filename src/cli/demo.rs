//! Owns `hydra-billing demo`: the whole product offline in one process, with nothing to
//! configure. A fresh SQLite file, the Stripe simulator in-process (with its hosted Checkout and
//! portal pages), the catalogue made by the same code as `stripe setup`, three demo teams, a dev
//! sign-in page and buttons that move the simulator's test clock and ours together. `serve` never
//! runs any of this: the demo's routes exist only in the router built here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use crate::billing::Billing;
use crate::billing::jobs::Job;
use crate::config::{Config, Secret};
use crate::domain::access::Tier;
use crate::domain::catalogue::{self, Interval, Metric};
use crate::domain::clock::{Clock, DAY, Timestamp};
use crate::domain::ids::{ReservationId, TenantId};
use crate::domain::subscription::is_live_status;
use crate::http::auth::{self, MintRequest, Role};
use crate::http::pages::{date, render, tier_label};
use crate::http::{AppState, Application, shutdown_signal};
use crate::store::{Settle, Store};
use crate::stripe::params;

/// A test-mode key the simulator accepts; it guards nothing (the simulator is on loopback).
const SIM_KEY: &str = "sk_test_fake_demo";

/// One demo team: (id, name, what it is on).
struct DemoTeam {
    id: &'static str,
    name: &'static str,
    plan: DemoPlan,
}

enum DemoPlan {
    /// Free with this many (fixes, doc runs, cycles) used in the current window.
    Free(i64, i64, i64),
    /// Subscribed with 4242 to this plan, with this many seats.
    Paid(Tier, Interval, i64),
}

const TEAMS: [DemoTeam; 3] = [
    DemoTeam { id: "acme", name: "Acme Robotics", plan: DemoPlan::Free(4, 1, 3) },
    DemoTeam { id: "globex", name: "Globex", plan: DemoPlan::Paid(Tier::Team, Interval::Month, 3) },
    DemoTeam { id: "initech", name: "Initech", plan: DemoPlan::Paid(Tier::Business, Interval::Year, 12) },
];

/// What the demo's own routes need besides the app.
struct DemoCtx {
    /// The one test clock every demo customer lives on.
    test_clock: String,
    /// One clock move at a time: a second one while the first advances would read a stale renewal
    /// date or meet Stripe's "clock is advancing" refusal.
    travel: tokio::sync::Mutex<()>,
    /// The demo's own service token and URL: "Run a fix" calls the service API as Hydra's runner
    /// does, over HTTP, so what it shows is what Hydra gets.
    service_token: String,
    api: String,
    http: reqwest::Client,
}

/// Runs the demo on `port` (0 for any) until Ctrl-C.
pub async fn run(port: u16) -> anyhow::Result<()> {
    crate::telemetry::init_logging_default("error");
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}; pick another with --port"))?;
    let public_url = format!("http://{}", listener.local_addr()?);
    let sim = stripe_sim::Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        stripe_sim::SimSettings::default(),
    )
    .await
    .context("cannot start the Stripe simulator")?;
    crate::stripe::install_crypto_provider();
    let stripe = crate::stripe::StripeClient::new(&sim.base_url, Secret::new(SIM_KEY));
    let setup = crate::stripe::setup::run(&stripe, &public_url)
        .await
        .context("setting up the simulator's catalogue")?;

    let dir = std::env::temp_dir().join(format!("hydra-billing-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let db_path = dir.join("demo.db");
    let mut vars: std::collections::HashMap<String, String> = setup
        .env
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let random = || format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    vars.extend([
        ("DATABASE_URL".to_owned(), format!("sqlite://{}", db_path.display())),
        ("BIND".to_owned(), public_url.trim_start_matches("http://").to_owned()),
        ("PUBLIC_URL".to_owned(), public_url.clone()),
        ("STRIPE_SECRET_KEY".to_owned(), SIM_KEY.to_owned()),
        ("STRIPE_API_BASE".to_owned(), sim.base_url.clone()),
        ("HYDRA_AUTH_SECRET".to_owned(), random()),
        ("HYDRA_SERVICE_TOKEN".to_owned(), random()),
    ]);
    let mut config = Config::from_vars(&vars).map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;
    config.demo = true;
    let store = Store::connect(&config.database_url).await?;
    store.migrate_up().await?;
    let state = AppState::new(Billing::open(config, store, Clock::shifted()).await?);

    let test_clock = stripe
        .post(
            "/v1/test_helpers/test_clocks",
            &params(&[("frozen_time", &state.clock.now().to_string()), ("name", "demo")]),
            None,
        )
        .await?;
    let ctx = Arc::new(DemoCtx {
        test_clock: test_clock["id"].as_str().unwrap_or_default().to_owned(),
        travel: tokio::sync::Mutex::new(()),
        service_token: state
            .config
            .service_tokens
            .first()
            .context("the demo configuration has a service token")?
            .expose()
            .to_owned(),
        api: public_url.clone(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
    });
    let routes = Router::new()
        .route("/", get(|| async { Redirect::to("/demo") }))
        .route("/demo", get(demo_page))
        .route("/demo/login", post(login))
        .route("/demo/clock", post(move_clock))
        .route("/demo/run", post(run_fix))
        .layer(Extension(ctx.clone()));
    let app = Application::on_listener(state.clone(), listener);
    let server = tokio::spawn(app.run_with_routes(routes, true, shutdown_signal()));

    seed(&state, &ctx).await.context("creating the demo teams")?;
    super::print_banner(&format!(
        "hydra-billing demo is running, offline: a built-in Stripe simulator and test cards only.\n  \
         Open      {public_url}/\n  Database  {} (SQLite, new for this run)\n  Stripe    {} (the \
         simulator)\nPress Ctrl-C to stop.\n",
        db_path.display(),
        sim.base_url
    ));
    let result = server.await.context("the demo server stopped")?;
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The demo teams: customers on the demo test clock; Acme free near its limits, Globex on Team
/// monthly and Initech on Business annual, both paid with 4242.
async fn seed(state: &AppState, ctx: &DemoCtx) -> anyhow::Result<()> {
    let now = state.clock.now();
    for team in &TEAMS {
        let email = format!("billing@{}.example", team.id);
        state.store.upsert_tenant(team.id, team.name, Some(&email), now).await?;
        let mut form = params(&[
            ("email", &email),
            ("name", team.name),
            ("test_clock", &ctx.test_clock),
            ("metadata[hydra_tenant_id]", team.id),
        ]);
        if let DemoPlan::Paid(..) = team.plan {
            form.push(("payment_method".into(), "pm_card_visa".into()));
        }
        let customer = state.stripe.post("/v1/customers", &form, None).await?;
        let customer = customer["id"].as_str().context("a customer without id")?.to_owned();
        state.store.set_customer(team.id, &customer).await?;
        let tenant = TenantId::parse(team.id)?;
        match team.plan {
            DemoPlan::Free(fixes, doc_runs, cycles) => {
                for (metric, n) in
                    [(Metric::Fix, fixes), (Metric::DocRun, doc_runs), (Metric::LinearCycle, cycles)]
                {
                    for _ in 0..n {
                        let r =
                            state.reserve(&tenant, metric, 60).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                        let id = ReservationId::parse(&r.reservation_id)?;
                        state.settle(&id, Settle::Commit).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    }
                }
            }
            DemoPlan::Paid(tier, interval, seats) => {
                let plan = catalogue::plan(tier, interval).context("the catalogue sells every demo plan")?;
                let price = state.config.stripe.prices.id_of(plan);
                state
                    .stripe
                    .post(
                        "/v1/subscriptions",
                        &params(&[
                            ("customer", &customer),
                            ("items[0][price]", price),
                            ("items[0][quantity]", &seats.to_string()),
                            ("metadata[hydra_tenant_id]", team.id),
                            // As Checkout does: every subscription is classic.
                            ("billing_mode[type]", "classic"),
                        ]),
                        None,
                    )
                    .await?;
            }
        }
    }
    // Webhooks bring the same state a moment later; reconciling now makes the first page right.
    state.reconcile(None, "demo").await?;
    Ok(())
}

struct TeamView {
    id: &'static str,
    name: &'static str,
    summary: String,
}

/// What "Run a fix" got from the service.
enum RunOutcome {
    /// Reserved and committed.
    Ran { team: &'static str, message: String },
    /// The 402: what the upgrade prompt beside it needs.
    Refused { team: &'static str, message: String, metric: String, resets_at: String },
}

#[derive(Template)]
#[template(path = "demo.html")]
struct DemoPage {
    title: &'static str,
    page: &'static str,
    demo: bool,
    teams: Vec<TeamView>,
    now: String,
    ahead: Option<i64>,
    error: Option<String>,
    ran: Option<RunOutcome>,
    /// The team the clock's picker starts on.
    selected: &'static str,
}

/// The controls page; the clock's team picker starts on the team the browser is signed in as, so
/// it does not snap back to the first team after each move.
async fn demo_page(
    State(state): State<AppState>,
    auth: Result<crate::http::auth::TenantAuth, crate::http::error::ApiError>,
) -> Response {
    let signed_in = auth.ok().and_then(|a| team(a.tenant_id())).map(|t| t.id);
    render_demo_with(&state, StatusCode::OK, None, None, signed_in).await
}

async fn render_demo(state: &AppState, status: StatusCode, error: Option<String>) -> Response {
    render_demo_with(state, status, error, None, None).await
}

async fn render_demo_with(
    state: &AppState,
    status: StatusCode,
    error: Option<String>,
    ran: Option<RunOutcome>,
    selected: Option<&'static str>,
) -> Response {
    let mut teams = Vec::new();
    for team in &TEAMS {
        let summary = match state.status(team.id).await {
            Ok(s) => match (s.subscription(), &s.usage) {
                (Some(row), _) => format!(
                    "{}, {} seats, {}",
                    tier_label(s.effective.tier),
                    row.stripe_seat_count.unwrap_or(0),
                    row.stripe_subscription_status
                        .as_deref()
                        .map_or("no subscription".to_owned(), |s| s.replace('_', " "))
                ),
                (None, Some(u)) => {
                    let used: Vec<String> =
                        u.used.iter().map(|(m, n)| format!("{} {n}/{}", m.label(), m.free_limit())).collect();
                    format!("Free: {}", used.join(", "))
                }
                (None, None) => tier_label(s.effective.tier).to_owned(),
            },
            Err(_) => "unknown".to_owned(),
        };
        teams.push(TeamView { id: team.id, name: team.name, summary });
    }
    let now = state.clock.now();
    let ahead = (now - crate::domain::clock::Clock::System.now()) / DAY;
    let page = DemoPage {
        title: "Demo",
        page: "demo",
        demo: true,
        teams,
        now: format!(
            "{} {}",
            date(now),
            chrono::DateTime::from_timestamp(now, 0)
                .map_or_else(String::new, |d| d.format("%H:%M UTC").to_string())
        ),
        ahead: (ahead > 0).then_some(ahead),
        error,
        ran,
        selected: selected.unwrap_or(TEAMS[0].id),
    };
    render(status, &page)
}

#[derive(Deserialize)]
struct TeamForm {
    tenant: String,
    #[serde(default)]
    action: Option<String>,
}

fn team(id: &str) -> Option<&'static DemoTeam> {
    TEAMS.iter().find(|t| t.id == id)
}

/// How long a demo sign-in lasts.
const DEMO_SESSION_SECS: i64 = 12 * 3600;

/// A token for the team's billing admin, and when it expires.
fn team_token(
    state: &AppState,
    team: &DemoTeam,
) -> Result<(String, Timestamp), crate::http::error::ApiError> {
    let now = state.clock.now();
    let request = MintRequest {
        tenant: team.id,
        uid: "demo",
        role: Role::BillingAdmin,
        email: None,
        ttl_secs: DEMO_SESSION_SECS,
        now,
    };
    Ok((auth::mint(&state.config.auth_secret, request)?, now + DEMO_SESSION_SECS))
}

/// Signs the browser in as a demo team's billing admin and opens its billing page.
fn sign_in(state: &AppState, team: &DemoTeam) -> Response {
    match team_token(state, team)
        .and_then(|(t, until)| crate::http::assets::signed_in(state, &t, until, "/billing"))
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn login(State(state): State<AppState>, form: Result<Form<TeamForm>, FormRejection>) -> Response {
    match form.ok().and_then(|Form(f)| team(&f.tenant)) {
        Some(t) => sign_in(&state, t),
        None => render_demo(&state, StatusCode::NOT_FOUND, Some("There is no such demo team.".into())).await,
    }
}

/// Moves time for everyone (one test clock, one app clock), then signs in as the chosen team so
/// its billing page shows what happened.
async fn move_clock(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<DemoCtx>>,
    form: Result<Form<TeamForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return render_demo(&state, StatusCode::BAD_REQUEST, Some("Pick a team and an action.".into())).await;
    };
    let Some(team) = team(&form.tenant) else {
        return render_demo(&state, StatusCode::NOT_FOUND, Some("There is no such demo team.".into())).await;
    };
    let _one_at_a_time = ctx.travel.lock().await;
    match travel_for(&state, &ctx, team, form.action.as_deref().unwrap_or("day")).await {
        Ok(()) => sign_in(&state, team),
        Err(e) => render_demo(&state, StatusCode::CONFLICT, Some(format!("{e:#}"))).await,
    }
}

async fn travel_for(state: &AppState, ctx: &DemoCtx, team: &DemoTeam, action: &str) -> anyhow::Result<()> {
    let now = state.clock.now();
    let row = state.store.tenant(team.id).await?.context("the demo team is missing")?;
    let renewal = || {
        row.stripe_current_period_end
            .filter(|_| row.stripe_subscription_status.as_deref().is_some_and(is_live_status))
            .map(|end| end + 3600 + 60)
            .with_context(|| format!("{} has no subscription to renew; upgrade it first", team.name))
    };
    let to = match action {
        "day" => now + DAY,
        "renewal" => renewal()?,
        "fail_renewal" => {
            let to = renewal()?;
            let customer = row.stripe_customer_id.as_deref().context("no customer")?;
            let pm = state
                .stripe
                .post(
                    "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
                    &params(&[("customer", customer)]),
                    None,
                )
                .await?;
            let pm = pm["id"].as_str().unwrap_or("pm_card_chargeCustomerFail");
            let sub = row.stripe_subscription_id.as_deref().context("no subscription")?;
            state
                .stripe
                .post(&format!("/v1/subscriptions/{sub}"), &params(&[("default_payment_method", pm)]), None)
                .await?;
            to
        }
        "grace" => now + state.config.grace_period_days * DAY + 3600,
        other => anyhow::bail!("unknown action {other:?}"),
    };
    travel(state, ctx, to).await
}

/// Advances the test clock to `to` (never backwards), waits until the simulator has run what
/// was due, sets our clock to match, then lets the jobs and a reconcile catch up at once instead
/// of at their next tick.
async fn travel(state: &AppState, ctx: &DemoCtx, to: Timestamp) -> anyhow::Result<()> {
    let path = format!("/v1/test_helpers/test_clocks/{}", ctx.test_clock);
    let frozen = state.stripe.get(&path, &[]).await?["frozen_time"].as_i64().unwrap_or(0);
    let to = to.max(frozen + 1);
    state.stripe.post(&format!("{path}/advance"), &params(&[("frozen_time", &to.to_string())]), None).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while state.stripe.get(&path, &[]).await?["status"] != "ready" {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the simulator's clock did not finish advancing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    state.clock.set(to);
    state.reconcile(None, "demo").await?;
    state.drain_events().await?;
    for job in [Job::PeriodEnd, Job::GraceExpiry, Job::FreeTierReset] {
        state.run_job(job).await?;
    }
    Ok(())
}

/// "Run a fix" as Hydra's runner does it: reserve through the service API, run (instantly
/// here), commit. On the free tier's limit the 402 comes back and the page shows the upgrade
/// prompt with the 402's own fields; the browser is signed in as the team, so the prompt's
/// "See plans" opens that team's upgrade page.
async fn run_fix(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<DemoCtx>>,
    form: Result<Form<TeamForm>, FormRejection>,
) -> Response {
    let Some(team) = form.ok().and_then(|Form(f)| team(&f.tenant)) else {
        return render_demo(&state, StatusCode::NOT_FOUND, Some("There is no such demo team.".into())).await;
    };
    let outcome = match metered_fix(&ctx, team).await {
        Ok(outcome) => outcome,
        Err(e) => return render_demo(&state, StatusCode::BAD_GATEWAY, Some(format!("{e:#}"))).await,
    };
    let mut response = render_demo_with(&state, StatusCode::OK, None, Some(outcome), Some(team.id)).await;
    if let Ok(cookie) =
        team_token(&state, team).and_then(|(t, until)| crate::http::assets::session_cookie(&state, &t, until))
    {
        response.headers_mut().insert(axum::http::header::SET_COOKIE, cookie);
    }
    response
}

async fn metered_fix(ctx: &DemoCtx, team: &'static DemoTeam) -> anyhow::Result<RunOutcome> {
    let call =
        |path: String| ctx.http.post(format!("{}{path}", ctx.api)).bearer_auth(&ctx.service_token).send();
    let reserved = call(format!("/api/tenants/{}/usage/fix/reserve", team.id)).await?;
    let status = reserved.status();
    let body: serde_json::Value = reserved.json().await?;
    if status == StatusCode::PAYMENT_REQUIRED {
        let error = &body["error"];
        let text = |k: &str| error[k].as_str().unwrap_or_default().to_owned();
        return Ok(RunOutcome::Refused {
            team: team.name,
            message: text("message"),
            metric: text("metric"),
            resets_at: text("resets_at"),
        });
    }
    anyhow::ensure!(status.is_success(), "the service answered {status}: {body}");
    let id = body["reservation_id"].as_str().context("a reservation without id")?;
    let committed = call(format!("/api/usage/reservations/{id}/commit")).await?;
    anyhow::ensure!(committed.status().is_success(), "the commit answered {}", committed.status());
    let tier = body["tier"].as_str().unwrap_or("free");
    let message = if tier == "free" {
        format!(
            "The fix ran for {}: reserved {id}, then committed. It counts against the free tier.",
            team.name
        )
    } else {
        format!(
            "The fix ran for {} on {tier}: reserved {id}, then committed. Paid plans run unlimited fixes.",
            team.name
        )
    };
    Ok(RunOutcome::Ran { team: team.name, message })
}
