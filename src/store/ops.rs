//! Owns the operational tables and checks: the rollback switch's timestamp, the jobs' last runs,
//! preflight's integrity counts and its migration round trip on a copy of the database.

use anyhow::Context;

use super::{Db, Store, StoreResult};
use crate::domain::clock::Timestamp;
use crate::with_db;

/// What preflight counts that should be zero.
pub struct IntegrityCounts {
    pub paid_without_subscription: i64,
    pub customers_shared: i64,
}

impl Store {
    /// Records the first start with billing disabled (kept across restarts and replicas) and
    /// returns it; with billing enabled, clears it and returns `None`.
    pub async fn billing_switch(&self, enabled: bool, now: Timestamp) -> anyhow::Result<Option<Timestamp>> {
        if enabled {
            with_db!(self, |pool| {
                sqlx::query("DELETE FROM billing_settings WHERE key = 'billing_disabled_since'")
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            return Ok(None);
        }
        let since: (String,) = with_db!(self, |pool| {
            sqlx::query(
                "INSERT INTO billing_settings (key, value) VALUES ('billing_disabled_since', $1) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(now.to_string())
            .execute(pool)
            .await?;
            sqlx::query_as("SELECT value FROM billing_settings WHERE key = 'billing_disabled_since'")
                .fetch_one(pool)
                .await
        })?;
        Ok(Some(since.0.parse().context("billing_disabled_since is not a timestamp")?))
    }

    /// The stored moment billing was disabled, read only (commands other than `serve` never
    /// record it); `None` when it is not recorded or cannot be read.
    pub async fn stored_billing_switch(&self) -> Option<Timestamp> {
        let row: Option<(String,)> = with_db!(self, |pool| {
            sqlx::query_as("SELECT value FROM billing_settings WHERE key = 'billing_disabled_since'")
                .fetch_optional(pool)
                .await
        })
        .ok()
        .flatten();
        row.and_then(|(v,)| v.parse().ok())
    }

    /// Claims this period's run of a job: true for exactly one caller (process or replica) once
    /// `every` seconds have passed since its last start; the start is recorded with the claim.
    pub async fn claim_job_run(&self, name: &str, now: Timestamp, every: i64) -> StoreResult<bool> {
        let claimed: Option<(String,)> = with_db!(self, |pool| {
            sqlx::query_as(
                "INSERT INTO job_runs (name, last_started_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET last_started_at = excluded.last_started_at \
                 WHERE job_runs.last_started_at <= $3 RETURNING name",
            )
            .bind(name)
            .bind(now)
            .bind(now - every)
            .fetch_all(pool)
            .await
            .map(super::first)
        })?;
        Ok(claimed.is_some())
    }

    /// When each job last started (operators, metrics and tests read it).
    pub async fn job_starts(&self) -> StoreResult<Vec<(String, Timestamp)>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as("SELECT name, last_started_at FROM job_runs ORDER BY name").fetch_all(pool).await
        })?)
    }

    /// Records a job's outcome for operators (`job_runs`). A run that outlasted its period never
    /// moves the start back behind a later claim (another replica's, or this one's next).
    pub async fn record_job_run(
        &self,
        name: &str,
        now: Timestamp,
        outcome: &str,
        rows: i64,
    ) -> StoreResult<()> {
        with_db!(self, |pool| {
            sqlx::query(
                "INSERT INTO job_runs \
                 (name, last_started_at, last_finished_at, last_outcome, rows_affected, last_ok_at) \
                 VALUES ($1, $2, $2, $3, $4, CASE WHEN $3 = 'ok' THEN $2 END) \
                 ON CONFLICT (name) DO UPDATE SET \
                 last_started_at = CASE WHEN job_runs.last_started_at > excluded.last_started_at \
                 THEN job_runs.last_started_at ELSE excluded.last_started_at END, \
                 last_finished_at = excluded.last_finished_at, \
                 last_outcome = excluded.last_outcome, rows_affected = excluded.rows_affected, \
                 last_ok_at = COALESCE(excluded.last_ok_at, job_runs.last_ok_at)",
            )
            .bind(name)
            .bind(now)
            .bind(outcome)
            .bind(rows)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Each job's last error-free finish (jobs that never finished well are absent).
    pub async fn job_last_ok(&self) -> StoreResult<Vec<(String, Timestamp)>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as("SELECT name, last_ok_at FROM job_runs WHERE last_ok_at IS NOT NULL ORDER BY name")
                .fetch_all(pool)
                .await
        })?)
    }

    /// Billing emails by status, and the age of the oldest still pending (0 when none is).
    pub async fn outbox_stats(&self, now: Timestamp) -> StoreResult<(Vec<(String, i64)>, i64)> {
        let by_status: Vec<(String, i64)> = with_db!(self, |pool| {
            sqlx::query_as("SELECT status, COUNT(*) FROM email_outbox GROUP BY status").fetch_all(pool).await
        })?;
        let (oldest,): (Option<i64>,) = with_db!(self, |pool| {
            sqlx::query_as("SELECT MIN(created_at) FROM email_outbox WHERE status = 'pending'")
                .fetch_one(pool)
                .await
        })?;
        Ok((by_status, oldest.map_or(0, |t| (now - t).max(0))))
    }

    pub async fn integrity_counts(&self) -> StoreResult<IntegrityCounts> {
        let (paid_without, shared) = with_db!(self, |pool| {
            let paid_without: (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM tenants WHERE plan_tier <> 'free' AND manual_plan_tier IS NULL \
                 AND stripe_subscription_id IS NULL",
            )
            .fetch_one(pool)
            .await?;
            let shared: (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM (SELECT stripe_customer_id FROM tenants WHERE stripe_customer_id IS NOT NULL \
                 GROUP BY stripe_customer_id HAVING COUNT(*) > 1) AS shared",
            )
            .fetch_one(pool)
            .await?;
            Ok::<_, sqlx::Error>((paid_without.0, shared.0))
        })?;
        Ok(IntegrityCounts { paid_without_subscription: paid_without, customers_shared: shared })
    }

    /// `migrate down` then `up` on a copy: the SQLite file copied aside (`VACUUM INTO`), or for
    /// PostgreSQL a scratch schema (the migrations' SQL is what is checked there). The copy goes
    /// away whatever happened.
    pub async fn rollback_round_trip_on_copy(&self) -> anyhow::Result<()> {
        let scratch = format!("hydra_preflight_{}", uuid::Uuid::new_v4().simple());
        let result: anyhow::Result<()> = async {
            let copy = match &self.db {
                Db::Sqlite(pool) => {
                    let path = std::env::temp_dir().join(format!("{scratch}.db"));
                    sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM INTO '{}'", path.display())))
                        .execute(pool)
                        .await?;
                    Store::connect(&format!("sqlite://{}", path.display())).await?
                }
                Db::Postgres(_) => self.with_new_schema(&scratch).await?,
            };
            let outcome = async {
                copy.migrate_up().await?;
                copy.migrate_down_to(0).await?;
                copy.migrate_up().await
            }
            .await;
            copy.close().await;
            outcome
        }
        .await;
        match &self.db {
            Db::Sqlite(_) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{scratch}.db{suffix}")));
                }
            }
            Db::Postgres(_) => {
                let _ = self.drop_schema(&scratch).await;
            }
        }
        result
    }
}
