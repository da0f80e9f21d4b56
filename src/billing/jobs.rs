//! Owns the background jobs: what each does, running one on demand (`jobs run-once NAME`), and
//! the tasks `serve` runs (each job on its interval, and the event worker), owned by a `JoinSet`
//! so shutdown stops them. Every job only tidies stored state and is safe to run twice or on
//! several replicas at once.

use std::time::Duration;

use tokio::task::JoinSet;

use super::{Billing, email};
use crate::domain::clock::{DAY, Timestamp};

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

    /// The cadence on the service's clock.
    pub fn every(self) -> Duration {
        match self {
            Job::FreeTierReset => Duration::from_secs(3600),
            Job::ReservationExpiry => Duration::from_secs(60),
            Job::Outbox => Duration::from_secs(10),
            Job::PeriodEnd | Job::GraceExpiry => Duration::from_secs(300),
            Job::Reconcile => Duration::from_secs(3600),
        }
    }
}

impl Billing {
    /// Runs one job now and records its outcome in `job_runs`. Returns the rows it changed.
    pub async fn run_job(&self, job: Job) -> anyhow::Result<u64> {
        self.run_job_at(job, self.clock.now()).await
    }

    /// Runs one job as of `now`: the scheduler passes the instant it claimed the run with, so
    /// the recorded start is the claimed one even when the clock moves during the run.
    async fn run_job_at(&self, job: Job, now: Timestamp) -> anyhow::Result<u64> {
        let store = &self.store;
        let result = match job {
            Job::FreeTierReset => store.reset_free_tier_windows(now).await.map_err(anyhow::Error::from),
            Job::ReservationExpiry => store.expire_reservations(now).await.map_err(anyhow::Error::from),
            Job::Outbox => {
                email::send_pending(store, self.config.smtp_url.as_ref(), &self.config.email_from, now).await
            }
            // The rollback switch pauses every job that could take access away.
            Job::PeriodEnd | Job::GraceExpiry | Job::Reconcile if self.billing_frozen() => Ok(0),
            // Bounded by the process-wide Stripe budget, so it stays far below Stripe's limits.
            Job::Reconcile => {
                self.reconcile(None, "job:reconcile").await.map(|(_, repaired)| repaired as u64)
            }
            Job::PeriodEnd | Job::GraceExpiry => store
                .expire_paid_access(job.name(), now, self.config.grace_period_days * DAY)
                .await
                .map_err(anyhow::Error::from),
        };
        let (outcome, rows) = match &result {
            Ok(rows) => ("ok", i64::try_from(*rows).unwrap_or(i64::MAX)),
            Err(_) => ("error", 0),
        };
        store.record_job_run(job.name(), now, outcome, rows).await?;
        metrics::counter!("hydra_job_runs_total", "job" => job.name(), "outcome" => outcome).increment(1);
        result
    }

    /// Starts the event worker and the job scheduler in `tasks`; whoever owns `tasks` stops them
    /// all with it.
    ///
    /// A job is due when its cadence has passed on the service's clock since its last start
    /// (`job_runs`), and each period's run is claimed in the database: with several replicas
    /// each job still runs once per period, and a moved test clock (or the demo's) moves the
    /// jobs with it. A failed run is logged and waits for its next period.
    pub fn spawn_background(&self, tasks: &mut JoinSet<()>) {
        for _ in 0..self.event_workers() {
            tasks.spawn(self.clone().event_worker());
        }
        // PostgreSQL: the access cache follows the other replicas' writes (returns on SQLite).
        tasks.spawn(self.store.clone().listen_for_changes());
        let billing = self.clone();
        tasks.spawn(async move {
            loop {
                billing.run_due_jobs().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Runs every job whose period has come (claimed, so once across replicas).
    pub async fn run_due_jobs(&self) {
        for job in Job::ALL {
            let every = job.every().as_secs() as i64;
            let now = self.clock.now();
            match self.store.claim_job_run(job.name(), now, every).await {
                Ok(true) => match self.run_job_at(job, now).await {
                    Ok(rows) => tracing::info!(job = job.name(), rows, "job ran"),
                    Err(e) => tracing::error!(job = job.name(), error = format!("{e:#}"), "job failed"),
                },
                Ok(false) => {}
                Err(e) => tracing::warn!(job = job.name(), error = %e, "cannot claim the job's run"),
            }
        }
    }
}
