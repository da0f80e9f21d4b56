//! Owns the background jobs: what each does, running one on demand (`jobs run-once NAME`), and
//! the scheduler `serve` runs. Every job only tidies stored state and is safe to run twice or on
//! several replicas at once.

use std::time::Duration;

use crate::app::AppState;
use crate::clock::Timestamp;
use crate::db::Db;
use crate::usage;
use crate::with_db;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Zeroes the free counters of ended 30-day windows (BILL-04).
    FreeTierReset,
    /// Marks unsettled usage reservations past their expiry.
    ReservationExpiry,
}

impl Job {
    pub const ALL: [Job; 2] = [Job::FreeTierReset, Job::ReservationExpiry];

    pub fn name(self) -> &'static str {
        match self {
            Job::FreeTierReset => "free-tier-reset",
            Job::ReservationExpiry => "reservation-expiry",
        }
    }

    pub fn parse(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name)
    }

    fn every(self) -> Duration {
        match self {
            Job::FreeTierReset => Duration::from_secs(3600),
            Job::ReservationExpiry => Duration::from_secs(60),
        }
    }
}

/// Runs one job now and records its outcome in `job_runs`. Returns the rows it changed.
pub async fn run_once(db: &Db, job: Job, now: Timestamp) -> anyhow::Result<u64> {
    let result = match job {
        Job::FreeTierReset => usage::reset_free_tier_windows(db, now).await,
        Job::ReservationExpiry => usage::expire_reservations(db, now).await,
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
    Ok(result?)
}

/// One tokio task per job, each on its own interval; a failed run is logged and retried at the
/// next tick.
pub fn spawn_scheduler(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tasks: Vec<_> = Job::ALL
            .into_iter()
            .map(|job| {
                let state = state.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(job.every());
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        match run_once(&state.db, job, state.clock.now()).await {
                            Ok(rows) => tracing::info!(job = job.name(), rows, "job ran"),
                            Err(e) => {
                                tracing::error!(job = job.name(), error = format!("{e:#}"), "job failed")
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    })
}
