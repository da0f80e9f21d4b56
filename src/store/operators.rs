//! Owns what only the operators' commands read: the audit log and the usage ledger as exports,
//! a customer's recent events, and SQLite backups.

use std::path::Path;

use super::{AuditRow, EventRow, Store, StoreResult};
use crate::domain::clock::Timestamp;
use crate::with_db;

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

    /// A customer's stored Stripe events, newest first.
    pub async fn customer_events(&self, customer: &str, limit: i64) -> StoreResult<Vec<EventRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT id, type, status, customer_id, attempts, last_error, created, received_at, processed_at \
                 FROM stripe_events WHERE customer_id = $1 ORDER BY received_at DESC, created DESC LIMIT $2",
            )
            .bind(customer)
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
            super::Db::Sqlite(pool) => {
                sqlx::query("VACUUM INTO $1").bind(target).execute(pool).await?;
                Ok(())
            }
            super::Db::Postgres(_) => anyhow::bail!(
                "backup copies SQLite databases; for PostgreSQL use pg_dump (docs/operations.md)"
            ),
        }
    }
}
