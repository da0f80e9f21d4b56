//! Owns the operational tables and checks: the rollback switch's timestamp, the jobs' last runs,
//! preflight's integrity counts and its migration round trip on a copy of the database; and what
//! only the operators' commands read: the audit log and the usage ledger as exports, and SQLite
//! backups.

use std::path::Path;

use anyhow::Context;

use super::{AuditRow, Db, Store, StoreResult};
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

/// One committed run of the usage ledger.
#[derive(Debug, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub tenant_id: String,
    pub metric: String,
    pub tier: String,
    pub settled_at: i64,
}

impl Store {
    /// Audit entries, newest first, of one tenant or all, from `since` on.
    pub async fn audit_entries(
        &self,
        tenant: Option<&str>,
        since: Option<Timestamp>,
        limit: i64,
    ) -> StoreResult<Vec<AuditRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT tenant_id, actor, action, before_state, after_state, reason, created_at \
                 FROM billing_audit_log WHERE ($1 IS NULL OR tenant_id = $1) AND created_at >= $2 \
                 ORDER BY created_at DESC, id DESC LIMIT $3",
            )
            .bind(tenant)
            .bind(since.unwrap_or(i64::MIN))
            .bind(limit)
            .fetch_all(pool)
            .await
        })?)
    }

    /// One page of committed runs settled in `[since, until)`, oldest first, after the run
    /// `after` (the last of the previous page): the ledger is read in pages so an export of
    /// millions of runs holds one page in memory.
    pub async fn committed_runs(
        &self,
        since: Timestamp,
        until: Timestamp,
        after: Option<(Timestamp, &str)>,
        limit: i64,
    ) -> StoreResult<Vec<RunRow>> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, ""));
        Ok(with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT id, tenant_id, metric, tier, settled_at FROM usage_reservations \
                 WHERE status = 'committed' AND settled_at >= $1 AND settled_at < $2 \
                   AND (settled_at > $3 OR (settled_at = $3 AND id > $4)) \
                 ORDER BY settled_at, id LIMIT $5",
            )
            .bind(since)
            .bind(until)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?)
    }

    /// A consistent copy of the SQLite database at `path` while the service runs (`VACUUM INTO`
    /// reads one snapshot and writes a compact file); PostgreSQL has its own tools.
    pub async fn backup_to(&self, path: &Path) -> anyhow::Result<()> {
        if path.exists() {
            anyhow::bail!("{} exists already; a backup never overwrites a file", path.display());
        }
        let Some(target) = path.to_str() else {
            anyhow::bail!("the backup path must be valid UTF-8");
        };
        match self.db() {
            Db::Sqlite(pool) => {
                sqlx::query("VACUUM INTO $1").bind(target).execute(pool).await?;
                Ok(())
            }
            Db::Postgres(_) => anyhow::bail!(
                "backup copies SQLite databases; for PostgreSQL use pg_dump (docs/operations.md)"
            ),
        }
    }
}
