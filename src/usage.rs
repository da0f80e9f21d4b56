//! Owns free-tier metering (roadmap BILL-03/04): reserve, commit and release of usage units, the
//! rolling 30-day window, and the jobs that tidy windows and stale reservations.
//!
//! A run first *reserves* a unit; the reservation holds the unit while open, so concurrent runs
//! can never overshoot a limit. Reserving locks the tenant row (a write first: PostgreSQL takes
//! the row lock, SQLite its single write lock), then counts committed units plus open
//! reservations of the current window. Every reservation, paid ones included, stays in
//! `usage_reservations` as the usage ledger.

use serde::Serialize;

use crate::access::{Tier, effective_tier};
use crate::app::AppState;
use crate::clock::{DAY, Timestamp, rfc3339_opt};
use crate::db::{Db, new_id};
use crate::error::{ApiError, ApiResult};
use crate::tenants::TenantRow;
use crate::with_db;

pub const WINDOW_SECS: i64 = 30 * DAY;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Fix,
    DocRun,
    LinearCycle,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Fix, Metric::DocRun, Metric::LinearCycle];

    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "fix" => Some(Metric::Fix),
            "doc_run" => Some(Metric::DocRun),
            "linear_cycle" => Some(Metric::LinearCycle),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Fix => "fix",
            Metric::DocRun => "doc_run",
            Metric::LinearCycle => "linear_cycle",
        }
    }

    /// Free-tier allowance per 30-day window.
    /// What pages call it.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Fix => "Fixes",
            Metric::DocRun => "Doc runs",
            Metric::LinearCycle => "Linear cycles",
        }
    }

    pub fn free_limit(self) -> i64 {
        match self {
            Metric::Fix => 5,
            Metric::DocRun => 1,
            Metric::LinearCycle => 5,
        }
    }

    pub fn committed(self, row: &TenantRow) -> i64 {
        match self {
            Metric::Fix => row.free_tier_fixes_used,
            Metric::DocRun => row.free_tier_doc_runs_used,
            Metric::LinearCycle => row.free_tier_cycles_used,
        }
    }

    /// Adds one committed unit, but only while the tenant is still in the window the unit was
    /// reserved in: a unit of a window that has since rolled belongs to that gone window.
    fn increment_sql(self) -> &'static str {
        match self {
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
}

/// The end of the window that contains `now`, given the stored one: a passed end moves on in
/// 30-day steps from its previous value (not from now) until it is in the future. `None` means
/// no metered run yet. The reset job's SQL applies the same formula to many rows at once.
pub fn current_window_end(stored: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
    stored.map(|end| if end <= now { end + WINDOW_SECS * ((now - end) / WINDOW_SECS + 1) } else { end })
}

/// Open free-tier reservations of one window, per metric.
const OPEN_FREE_UNITS_SQL: &str = "SELECT metric, COUNT(*) FROM usage_reservations \
     WHERE tenant_id = $1 AND status = 'open' AND tier = 'free' \
       AND window_reset_at = $2 AND expires_at > $3 GROUP BY metric";

fn open_units(counts: &[(String, i64)], metric: Metric) -> i64 {
    counts.iter().find(|(m, _)| m == metric.as_str()).map_or(0, |(_, n)| *n)
}

#[derive(Debug, Serialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub expires_at: Option<String>,
    /// The effective tier the run is metered under (`free` ones count against the quota).
    pub tier: Tier,
    pub metric: Metric,
}

/// Reserves one unit of `metric` for `tenant_id`, creating the tenant (free) if Hydra has not
/// announced it yet.
pub async fn reserve(
    state: &AppState,
    tenant_id: &str,
    metric: Metric,
    ttl_secs: i64,
) -> ApiResult<Reservation> {
    let now = state.clock.now();
    let access_time = state.access_time();
    let grace_days = state.config.grace_period_days;
    let expires_at = now + ttl_secs;
    let id = new_id("res");
    // An async block, so an early `return` below ends the transaction, not the function: the
    // outcome is still counted in the metrics.
    let outcome: ApiResult<Tier> = async {
        with_db!(&state.db, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ($1, '', $2, $2) \
             ON CONFLICT (id) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // The lock: every reserve of this tenant queues here until the one before commits.
            let row: TenantRow =
                sqlx::query_as(crate::tenants::LOCK_SQL).bind(tenant_id).fetch_one(&mut *tx).await?;
            let tier = effective_tier(&row.billing_state(), access_time, grace_days).tier;
            let window = if tier.is_paid() {
                None
            } else {
                let window = current_window_end(row.free_tier_reset_at, now).unwrap_or(now + WINDOW_SECS);
                let committed = if row.free_tier_reset_at == Some(window) {
                    metric.committed(&row)
                } else {
                    // First metered run, or the window has rolled: start the new one at zero.
                    sqlx::query(
                        "UPDATE tenants SET free_tier_fixes_used = 0, free_tier_doc_runs_used = 0, \
                     free_tier_cycles_used = 0, free_tier_reset_at = $2 WHERE id = $1",
                    )
                    .bind(tenant_id)
                    .bind(window)
                    .execute(&mut *tx)
                    .await?;
                    0
                };
                let counts: Vec<(String, i64)> = sqlx::query_as(OPEN_FREE_UNITS_SQL)
                    .bind(tenant_id)
                    .bind(window)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                let used = committed + open_units(&counts, metric);
                if used >= metric.free_limit() {
                    tx.commit().await?;
                    return Err(ApiError::FreeTierLimitReached {
                        metric: metric.as_str(),
                        used,
                        limit: metric.free_limit(),
                        resets_at: rfc3339_opt(Some(window)),
                        upgrade_url: state.config.upgrade_url(),
                    });
                }
                Some(window)
            };
            sqlx::query(
                "INSERT INTO usage_reservations \
             (id, tenant_id, metric, tier, window_reset_at, status, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'open', $6, $7)",
            )
            .bind(&id)
            .bind(tenant_id)
            .bind(metric.as_str())
            .bind(tier.as_str())
            .bind(window)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(tier)
        })
    }
    .await;
    let admitted = outcome.is_ok();
    metrics::counter!(
        "hydra_usage_reservations_total",
        "metric" => metric.as_str(),
        "outcome" => if admitted { "admitted" } else { "refused" }
    )
    .increment(1);
    let tier = outcome?;
    Ok(Reservation { reservation_id: id, expires_at: rfc3339_opt(Some(expires_at)), tier, metric })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Commit,
    Release,
}

#[derive(Debug, Serialize)]
pub struct Settled {
    pub reservation_id: String,
    pub status: &'static str,
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

/// Commits (the run succeeded: it counts, exactly once) or releases (it failed: it does not
/// count) a reservation. Repeating the same settlement is a no-op that answers the same.
pub async fn settle(db: &Db, id: &str, how: Settle, now: Timestamp) -> ApiResult<Settled> {
    let target = match how {
        Settle::Commit => "committed",
        Settle::Release => "released",
    };
    let settled: Option<ReservationRow> = with_db!(db, |pool| {
        let mut tx = pool.begin().await?;
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
            sqlx::query_as(sql).bind(id).bind(target).bind(now).fetch_optional(&mut *tx).await?;
        let counted = row
            .as_ref()
            .filter(|r| how == Settle::Commit && r.tier == Tier::Free.as_str())
            .and_then(|r| Some((r, Metric::parse(&r.metric)?)));
        if let Some((r, metric)) = counted {
            sqlx::query(metric.increment_sql())
                .bind(&r.tenant_id)
                .bind(r.window_reset_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok::<_, ApiError>(row)
    })?;
    if settled.is_some() {
        return Ok(Settled { reservation_id: id.to_owned(), status: target });
    }
    // Nothing changed: answer from the reservation's current state.
    let current: Option<ReservationRow> = with_db!(db, |pool| {
        sqlx::query_as(
            "SELECT tenant_id, metric, tier, window_reset_at, status, expires_at \
             FROM usage_reservations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
    })?;
    let Some(current) = current else {
        return Err(ApiError::not_found(format!("no reservation {id}")));
    };
    let status = shown_status(&current.status, current.expires_at, now);
    match (how, status) {
        (Settle::Commit, "committed") | (Settle::Release, "released") => {
            Ok(Settled { reservation_id: id.to_owned(), status })
        }
        // Releasing an expired reservation asks for what already happened: it does not count.
        (Settle::Release, "expired") => Ok(Settled { reservation_id: id.to_owned(), status }),
        (_, status) => Err(ApiError::conflict_with(
            format!("the reservation is already {status}"),
            "reservation_status",
            status,
        )),
    }
}

/// A reservation's status as callers see it: an open one past its expiry is expired already
/// (the job that marks it only tidies).
pub fn shown_status(stored: &str, expires_at: Timestamp, now: Timestamp) -> &'static str {
    match stored {
        "open" if expires_at <= now => "expired",
        "committed" => "committed",
        "released" => "released",
        "expired" => "expired",
        _ => "open",
    }
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

/// One of `tenant_id`'s reservations; another tenant's is indistinguishable from a missing one.
pub async fn reservation_of(
    db: &Db,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ReservationView>, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query_as(
            "SELECT id, metric, tier, status, created_at, expires_at, settled_at \
             FROM usage_reservations WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await
    })
}

/// Free-tier usage as the status page shows it: committed plus open units of the current window.
pub struct FreeUsage {
    pub used: [(Metric, i64); 3],
    pub resets_at: Option<Timestamp>,
}

pub async fn free_usage(db: &Db, row: &TenantRow, now: Timestamp) -> Result<FreeUsage, sqlx::Error> {
    let window = current_window_end(row.free_tier_reset_at, now);
    let rolled = window != row.free_tier_reset_at;
    let counts: Vec<(String, i64)> = match window {
        Some(w) if !rolled => with_db!(db, |pool| {
            sqlx::query_as(OPEN_FREE_UNITS_SQL).bind(&row.id).bind(w).bind(now).fetch_all(pool).await
        })?,
        _ => Vec::new(),
    };
    let used = Metric::ALL.map(|m| {
        let committed = if rolled { 0 } else { m.committed(row) };
        (m, committed + open_units(&counts, m))
    });
    Ok(FreeUsage { used, resets_at: window })
}

/// Rows per statement in the set-based jobs: large enough to be fast, small enough that SQLite's
/// write lock is never held for long.
pub const JOB_BATCH: i64 = 5_000;

/// The reset job (BILL-04): zero the counters of every window that has ended and move its end
/// on in 30-day steps from its previous value. Only tidies: `reserve` rolls a window itself, by
/// the same formula, so no answer depends on when this last ran. Returns the rows reset.
pub async fn reset_free_tier_windows(db: &Db, now: Timestamp) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let done = with_db!(db, |pool| {
            sqlx::query(
                "UPDATE tenants SET free_tier_fixes_used = 0, free_tier_doc_runs_used = 0, \
                     free_tier_cycles_used = 0, \
                     free_tier_reset_at = free_tier_reset_at + $2 * (($1 - free_tier_reset_at) / $2 + 1) \
                 WHERE id IN (SELECT id FROM tenants \
                     WHERE free_tier_reset_at IS NOT NULL AND free_tier_reset_at <= $1 LIMIT $3)",
            )
            .bind(now)
            .bind(WINDOW_SECS)
            .bind(JOB_BATCH)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        total += done;
        if done < JOB_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Marks reservations past their expiry as expired. Only tidies: an open reservation past its
/// expiry already holds no unit.
pub async fn expire_reservations(db: &Db, now: Timestamp) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let done = with_db!(db, |pool| {
            sqlx::query(
                "UPDATE usage_reservations SET status = 'expired', settled_at = $1 \
                 WHERE id IN (SELECT id FROM usage_reservations \
                     WHERE status = 'open' AND expires_at <= $1 LIMIT $2)",
            )
            .bind(now)
            .bind(JOB_BATCH)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        total += done;
        if done < JOB_BATCH as u64 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_rolls_in_steps_from_its_previous_end() {
        let end = 1_000_000;
        assert_eq!(current_window_end(None, end), None);
        assert_eq!(current_window_end(Some(end), end - 1), Some(end));
        assert_eq!(current_window_end(Some(end), end), Some(end + WINDOW_SECS));
        assert_eq!(current_window_end(Some(end), end + WINDOW_SECS - 1), Some(end + WINDOW_SECS));
        assert_eq!(current_window_end(Some(end), end + WINDOW_SECS), Some(end + 2 * WINDOW_SECS));
        assert_eq!(current_window_end(Some(end), end + 95 * DAY), Some(end + 4 * WINDOW_SECS));
    }
}
