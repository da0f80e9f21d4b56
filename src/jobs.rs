//! Owns the background jobs: what each does, running one on demand (`jobs run-once NAME`), and
//! the scheduler `serve` runs. Every job only tidies stored state and is safe to run twice or on
//! several replicas at once.

use std::time::Duration;

use crate::app::AppState;
use crate::clock::Timestamp;
use crate::config::Secret;
use crate::db::Db;
use crate::email;
use crate::usage;
use crate::with_db;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Zeroes the free counters of ended 30-day windows (BILL-04).
    FreeTierReset,
    /// Marks unsettled usage reservations past their expiry.
    ReservationExpiry,
    /// Sends pending billing emails.
    Outbox,
    /// Canceled subscriptions past their period end: plan_tier free.
    PeriodEnd,
    /// past_due beyond the grace period: plan_tier free.
    GraceExpiry,
    /// Compares every tenant with a customer against Stripe and repairs drift.
    Reconcile,
}

impl Job {
    pub const ALL: [Job; 6] = [
        Job::FreeTierReset,
        Job::ReservationExpiry,
        Job::Outbox,
        Job::PeriodEnd,
        Job::GraceExpiry,
        Job::Reconcile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Job::FreeTierReset => "free-tier-reset",
            Job::ReservationExpiry => "reservation-expiry",
            Job::Outbox => "outbox",
            Job::PeriodEnd => "period-end",
            Job::GraceExpiry => "grace-expiry",
            Job::Reconcile => "reconcile",
        }
    }

    pub fn parse(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name)
    }

    fn every(self) -> Duration {
        match self {
            Job::FreeTierReset => Duration::from_secs(3600),
            Job::ReservationExpiry => Duration::from_secs(60),
            Job::Outbox => Duration::from_secs(10),
            Job::PeriodEnd | Job::GraceExpiry => Duration::from_secs(300),
            Job::Reconcile => Duration::from_secs(3600),
        }
    }
}

/// What a job may need besides the database.
pub struct JobContext<'a> {
    pub db: &'a Db,
    pub now: Timestamp,
    pub smtp_url: Option<&'a Secret>,
    pub public_url: &'a str,
    pub grace_period_days: i64,
    /// `BILLING_ENABLED=false`: jobs that revoke access pause.
    pub billing_frozen: bool,
    /// The whole service, for jobs that call Stripe (reconcile); `None` where not configured.
    pub app: Option<&'a AppState>,
}

impl<'a> JobContext<'a> {
    /// Everything from the running service, at its clock's now.
    pub fn of_app(state: &'a AppState) -> JobContext<'a> {
        JobContext {
            db: &state.db,
            now: state.clock.now(),
            smtp_url: state.config.smtp_url.as_ref(),
            public_url: &state.config.public_url,
            grace_period_days: state.config.grace_period_days,
            billing_frozen: state.billing_disabled_since.is_some(),
            app: Some(state),
        }
    }
}

/// Runs one job now and records its outcome in `job_runs`. Returns the rows it changed.
pub async fn run_once(ctx: &JobContext<'_>, job: Job) -> anyhow::Result<u64> {
    let (db, now) = (ctx.db, ctx.now);
    let result = match job {
        Job::FreeTierReset => usage::reset_free_tier_windows(db, now).await.map_err(anyhow::Error::from),
        Job::ReservationExpiry => usage::expire_reservations(db, now).await.map_err(anyhow::Error::from),
        Job::Outbox => email::send_pending(db, ctx.smtp_url, &email::sender(ctx.public_url), now).await,
        Job::PeriodEnd | Job::GraceExpiry | Job::Reconcile if ctx.billing_frozen => Ok(0),
        // Bounded by the process-wide Stripe budget, so it stays far below Stripe's limits.
        Job::Reconcile => match ctx.app {
            Some(app) => {
                crate::sync::reconcile(app, None, "job:reconcile").await.map(|(_, repaired)| repaired as u64)
            }
            None => {
                Err(anyhow::anyhow!("reconcile needs the full configuration (use `hydra-billing reconcile`)"))
            }
        },
        Job::PeriodEnd | Job::GraceExpiry => {
            crate::sync::expire_paid_access(db, job.name(), now, ctx.grace_period_days).await
        }
    };
    let (outcome, rows) = match &result {
        Ok(rows) => ("ok", i64::try_from(*rows).unwrap_or(i64::MAX)),
        Err(_) => ("error", 0),
    };
    with_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO job_runs (name, last_started_at, last_finished_at, last_outcome, rows_affected) \
             VALUES ($1, $2, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
             last_started_at = excluded.last_started_at, last_finished_at = excluded.last_finished_at, \
             last_outcome = excluded.last_outcome, rows_affected = excluded.rows_affected",
        )
        .bind(job.name())
        .bind(now)
        .bind(outcome)
        .bind(rows)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    metrics::counter!("hydra_job_runs_total", "job" => job.name(), "outcome" => outcome).increment(1);
    result
}

/// One tokio task per job, each on its own interval (a failed run is logged and retried at the
/// next tick), plus the webhook event worker.
pub fn spawn_scheduler(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let worker = tokio::spawn(crate::events::worker(state.clone()));
        let tasks: Vec<_> = Job::ALL
            .into_iter()
            .map(|job| {
                let state = state.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(job.every());
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        match run_once(&JobContext::of_app(&state), job).await {
                            Ok(rows) => tracing::info!(job = job.name(), rows, "job ran"),
                            Err(e) => {
                                tracing::error!(job = job.name(), error = format!("{e:#}"), "job failed")
                            }
                        }
                    }
                })
            })
            .collect();
        let _ = worker.await;
        for task in tasks {
            let _ = task.await;
        }
    })
}
