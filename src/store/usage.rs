//! Owns the usage tables: reserving a unit under the tenant's row lock (so concurrent runs can
//! never overshoot a quota), settling it exactly once, the reads pages and the API show, and the
//! set-based tidy jobs. Every reservation, paid ones included, stays as the usage ledger.

use serde::Serialize;

use super::tenants::{ENSURE_SQL, LOCK_SQL, TenantRow};
use super::{Store, StoreError, StoreResult};
use crate::domain::access::Tier;
use crate::domain::catalogue::Metric;
use crate::domain::clock::Timestamp;
use crate::domain::usage::{Admit, WINDOW_SECS, admit, current_window_end, shown_status};
use crate::with_db;

/// Open free-tier reservations of one window, per metric.
const OPEN_FREE_UNITS_SQL: &str = "SELECT metric, COUNT(*) FROM usage_reservations \
     WHERE tenant_id = $1 AND status = 'open' AND tier = 'free' \
       AND window_reset_at = $2 AND expires_at > $3 GROUP BY metric";

const RESERVATION_COLUMNS: &str = "tenant_id, metric, tier, window_reset_at, status, expires_at";

/// Rows per statement in the set-based jobs: large enough to be fast, small enough that SQLite's
/// write lock is never held for long.
pub const JOB_BATCH: i64 = 5_000;

fn open_units(counts: &[(String, i64)], metric: Metric) -> i64 {
    counts.iter().find(|(m, _)| m == metric.as_str()).map_or(0, |(_, n)| *n)
}

fn committed(row: &TenantRow, metric: Metric) -> i64 {
    match metric {
        Metric::Fix => row.free_tier_fixes_used,
        Metric::DocRun => row.free_tier_doc_runs_used,
        Metric::LinearCycle => row.free_tier_cycles_used,
    }
}

/// Adds one committed unit, but only while the tenant is still in the window the unit was
/// reserved in: a unit of a window that has since rolled belongs to that gone window.
fn increment_sql(metric: Metric) -> &'static str {
    match metric {
        Metric::Fix => {
            "UPDATE tenants SET free_tier_fixes_used = free_tier_fixes_used + 1 \
             WHERE id = $1 AND free_tier_reset_at = $2"
        }
        Metric::DocRun => {
            "UPDATE tenants SET free_tier_doc_runs_used = free_tier_doc_runs_used + 1 \
             WHERE id = $1 AND free_tier_reset_at = $2"
        }
        Metric::LinearCycle => {
            "UPDATE tenants SET free_tier_cycles_used = free_tier_cycles_used + 1 \
             WHERE id = $1 AND free_tier_reset_at = $2"
        }
    }
}

/// What a reserve did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// Metered under `tier` (free ones count against the quota).
    Admitted {
        tier: Tier,
    },
    LimitReached {
        used: i64,
        limit: i64,
        resets_at: Timestamp,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Commit,
    Release,
}

/// What a settle found: the reservation's status after it, or that it is settled otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The status asked for (newly, or already): `committed`, `released`, or `expired` for a
    /// release of an expired reservation.
    Settled(&'static str),
    /// Already in another state (`committed`, `released`, `expired`).
    Conflict(&'static str),
}

#[derive(sqlx::FromRow)]
struct ReservationRow {
    tenant_id: String,
    metric: String,
    tier: String,
    window_reset_at: Option<i64>,
    status: String,
    expires_at: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ReservationView {
    #[sqlx(rename = "id")]
    pub reservation_id: String,
    pub metric: String,
    pub tier: String,
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub settled_at: Option<i64>,
}

/// A free tenant's counts in its current window: committed plus open units per metric.
pub struct FreeCounts {
    pub used: [(Metric, i64); 3],
    pub resets_at: Option<Timestamp>,
}

/// Runs one metering write, `$body` (an expression of `Result<_, sqlx::Error>` using `$conn`, a
/// connection inside a transaction, and owning what it reads): on SQLite in the group commit
/// (see `group`), on PostgreSQL in a transaction of its own. Written once, compiled per database.
macro_rules! metering_write {
    ($store:expr, $($single:ident)? |$conn:ident| $body:expr) => {
        match $store.writer() {
            super::Db::Sqlite(pool) => {
                $store
                    .grouped(pool, move |$conn: &mut sqlx::SqliteConnection| Box::pin(async move { $body }))
                    .await
            }
            super::Db::Postgres(pool) => metering_write!(@postgres $($single)? pool, $conn, $body),
        }
    };
    // One statement (`single`): on PostgreSQL it commits by itself, so it runs without BEGIN and
    // COMMIT (two round trips fewer on the hottest write, a paid reserve).
    (@postgres single $pool:ident, $conn:ident, $body:expr) => {{
        let mut connection = $pool.acquire().await?;
        let $conn: &mut sqlx::PgConnection = &mut *connection;
        let value: Result<_, sqlx::Error> = $body;
        Ok(value?)
    }};
    (@postgres $pool:ident, $conn:ident, $body:expr) => {{
        let value: Result<_, sqlx::Error> = $crate::in_transaction!($pool, |tx| {
            let $conn: &mut sqlx::PgConnection = &mut *tx;
            $body
        });
        Ok(value?)
    }};
}

impl Store {
    /// Reserves one unit of `metric` for `tenant_id` (created free if unknown) with id `id`,
    /// under the tenant's row lock: `tier_of` names the tier the row is metered under, and on
    /// free the domain's admit rule decides against committed plus open units of the window.
    pub async fn reserve(
        &self,
        tenant_id: &str,
        metric: Metric,
        id: &str,
        now: Timestamp,
        expires_at: Timestamp,
        tier_of: impl FnOnce(&TenantRow) -> Tier + Send + 'static,
    ) -> StoreResult<Reserved> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        metering_write!(self, |conn| {
            sqlx::query(ENSURE_SQL).bind(&tenant_id).bind(now).execute(&mut *conn).await?;
            // The lock: every reserve of this tenant queues here until the one before commits.
            let row: TenantRow = sqlx::query_as(LOCK_SQL).bind(&tenant_id).fetch_one(&mut *conn).await?;
            let tier = tier_of(&row);
            let window = if tier.is_paid() {
                None
            } else {
                let window = current_window_end(row.free_tier_reset_at, now).unwrap_or(now + WINDOW_SECS);
                let done = if row.free_tier_reset_at == Some(window) {
                    committed(&row, metric)
                } else {
                    // First metered run, or the window has rolled: start the new one at zero.
                    sqlx::query(
                        "UPDATE tenants SET free_tier_fixes_used = 0, free_tier_doc_runs_used = 0, \
                         free_tier_cycles_used = 0, free_tier_reset_at = $2 WHERE id = $1",
                    )
                    .bind(&tenant_id)
                    .bind(window)
                    .execute(&mut *conn)
                    .await?;
                    0
                };
                let counts: Vec<(String, i64)> = sqlx::query_as(OPEN_FREE_UNITS_SQL)
                    .bind(&tenant_id)
                    .bind(window)
                    .bind(now)
                    .fetch_all(&mut *conn)
                    .await?;
                if let Admit::LimitReached { used, limit } = admit(metric, done, open_units(&counts, metric))
                {
                    return Ok(Reserved::LimitReached { used, limit, resets_at: window });
                }
                Some(window)
            };
            sqlx::query(
                "INSERT INTO usage_reservations \
                 (id, tenant_id, metric, tier, window_reset_at, status, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, 'open', $6, $7)",
            )
            .bind(&id)
            .bind(&tenant_id)
            .bind(metric.as_str())
            .bind(tier.as_str())
            .bind(window)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
            Ok(Reserved::Admitted { tier })
        })
    }

    /// Records a unit metered under a paid `tier`, known already (from the access facts): a paid
    /// unit counts against no quota, so it needs neither the row lock nor the window's counts,
    /// and is one insert. The tenant must exist (a paid tier comes from its row).
    pub async fn reserve_paid(
        &self,
        tenant_id: &str,
        metric: Metric,
        id: &str,
        tier: Tier,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        metering_write!(
            self,
            single | conn | {
                sqlx::query(
                    "INSERT INTO usage_reservations \
                 (id, tenant_id, metric, tier, window_reset_at, status, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, NULL, 'open', $5, $6)",
                )
                .bind(&id)
                .bind(&tenant_id)
                .bind(metric.as_str())
                .bind(tier.as_str())
                .bind(now)
                .bind(expires_at)
                .execute(&mut *conn)
                .await
                .map(|_| ())
            }
        )
    }

    /// Commits (it counts, exactly once) or releases (it does not) a reservation; repeating the
    /// same settlement answers the same. `NotFound` for an unknown id.
    pub async fn settle(&self, id: &str, how: Settle, now: Timestamp) -> StoreResult<SettleOutcome> {
        let target = match how {
            Settle::Commit => "committed",
            Settle::Release => "released",
        };
        let owned_id = id.to_owned();
        let settled: Option<ReservationRow> = metering_write!(self, |conn| {
            let sql = match how {
                // An expired reservation no longer holds a unit, so committing it could overshoot.
                Settle::Commit => concat!(
                    "UPDATE usage_reservations SET status = $2, settled_at = $3 \
                     WHERE id = $1 AND status = 'open' AND expires_at > $3 RETURNING ",
                    "tenant_id, metric, tier, window_reset_at, status, expires_at"
                ),
                Settle::Release => concat!(
                    "UPDATE usage_reservations SET status = $2, settled_at = $3 \
                     WHERE id = $1 AND status = 'open' RETURNING ",
                    "tenant_id, metric, tier, window_reset_at, status, expires_at"
                ),
            };
            let row: Option<ReservationRow> =
                sqlx::query_as(sql).bind(&owned_id).bind(target).bind(now).fetch_optional(&mut *conn).await?;
            let counted = row
                .as_ref()
                .filter(|r| how == Settle::Commit && r.tier == Tier::Free.as_str())
                .and_then(|r| Some((r, Metric::parse(&r.metric)?)));
            if let Some((r, metric)) = counted {
                sqlx::query(increment_sql(metric))
                    .bind(&r.tenant_id)
                    .bind(r.window_reset_at)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok::<_, sqlx::Error>(row)
        })?;
        if settled.is_some() {
            return Ok(SettleOutcome::Settled(target));
        }
        // Nothing changed: answer from the reservation's current state.
        let current: Option<ReservationRow> = with_db!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {RESERVATION_COLUMNS} FROM usage_reservations WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        let current = current.ok_or(StoreError::NotFound)?;
        let status = shown_status(&current.status, current.expires_at, now);
        Ok(match (how, status) {
            (Settle::Commit, "committed") | (Settle::Release, "released" | "expired") => {
                SettleOutcome::Settled(status)
            }
            (_, status) => SettleOutcome::Conflict(status),
        })
    }

    /// One of `tenant_id`'s reservations; another tenant's is indistinguishable from a missing one.
    pub async fn reservation_of(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ReservationView>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT id, metric, tier, status, created_at, expires_at, settled_at \
                 FROM usage_reservations WHERE id = $1 AND tenant_id = $2",
            )
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Free-tier usage as the status page shows it: committed plus open units of the window.
    pub async fn free_counts(&self, row: &TenantRow, now: Timestamp) -> StoreResult<FreeCounts> {
        let window = current_window_end(row.free_tier_reset_at, now);
        let rolled = window != row.free_tier_reset_at;
        let counts: Vec<(String, i64)> = match window {
            Some(w) if !rolled => with_db!(self, |pool| {
                sqlx::query_as(OPEN_FREE_UNITS_SQL).bind(&row.id).bind(w).bind(now).fetch_all(pool).await
            })?,
            _ => Vec::new(),
        };
        let used = Metric::ALL.map(|m| {
            let done = if rolled { 0 } else { committed(row, m) };
            (m, done + open_units(&counts, m))
        });
        Ok(FreeCounts { used, resets_at: window })
    }

    /// The reset job (BILL-04): zero the counters of every window that has ended and move its
    /// end on in 30-day steps from its previous value. Only tidies: `reserve` rolls a window
    /// itself by the same formula. Returns the rows reset.
    pub async fn reset_free_tier_windows(&self, now: Timestamp) -> StoreResult<u64> {
        self.in_batches(
            "UPDATE tenants SET free_tier_fixes_used = 0, free_tier_doc_runs_used = 0, \
                 free_tier_cycles_used = 0, \
                 free_tier_reset_at = free_tier_reset_at + $3 * (($1 - free_tier_reset_at) / $3 + 1) \
             WHERE id IN (SELECT id FROM tenants \
                 WHERE free_tier_reset_at IS NOT NULL AND free_tier_reset_at <= $1 LIMIT $2)",
            now,
            Some(WINDOW_SECS),
        )
        .await
    }

    /// Marks reservations past their expiry as expired. Only tidies: an open reservation past
    /// its expiry already holds no unit.
    pub async fn expire_reservations(&self, now: Timestamp) -> StoreResult<u64> {
        self.in_batches(
            "UPDATE usage_reservations SET status = 'expired', settled_at = $1 \
             WHERE id IN (SELECT id FROM usage_reservations \
                 WHERE status = 'open' AND expires_at <= $1 LIMIT $2)",
            now,
            None,
        )
        .await
    }

    /// Repeats a set-based statement (`$1` now, `$2` the batch size, `$3` `extra` if given)
    /// until a batch comes back short, so SQLite's write lock is never held for long. Returns the
    /// rows changed in all.
    async fn in_batches(&self, sql: &'static str, now: Timestamp, extra: Option<i64>) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let done = with_db!(self, |pool| {
                let query = sqlx::query(sql).bind(now).bind(JOB_BATCH);
                let query = match extra {
                    Some(value) => query.bind(value),
                    None => query,
                };
                query.execute(pool).await.map(|r| r.rows_affected())
            })?;
            total += done;
            if done < JOB_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
