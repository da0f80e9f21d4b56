//! Owns the usage tables: reserving a unit under the tenant's row lock (so concurrent runs can
//! never overshoot a quota), settling it exactly once, the reads pages and the API show, and the
//! set-based tidy jobs. Every reservation, paid ones included, stays as the usage ledger.

use serde::Serialize;
use sqlx::SqliteConnection;
use tokio::sync::oneshot;

use super::group::{Done, Op, answer_after_commit, end_savepoint, savepoint};
use super::tenants::{ENSURE_SQL, LOCK_SQL, TenantRow};
use super::{Db, Store, StoreError, StoreResult};
use crate::domain::access::Tier;
use crate::domain::catalogue::Metric;
use crate::domain::clock::Timestamp;
use crate::domain::usage::{Admit, WINDOW_SECS, admit, current_window_end, shown_status};
use crate::with_db;

/// Open free-tier reservations of one window, per metric.
const OPEN_FREE_UNITS_SQL: &str = "SELECT metric, COUNT(*) FROM usage_reservations \
     WHERE tenant_id = $1 AND status = 'open' AND tier = 'free' \
       AND window_reset_at = $2 AND expires_at > $3 GROUP BY metric";

const RESERVATION_COLUMNS: &str = "id, tenant_id, metric, tier, window_reset_at, status, expires_at";

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
pub(super) struct ReservationRow {
    id: String,
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
    ($store:expr, |$conn:ident| $body:expr) => {
        match $store.writer() {
            Db::Sqlite(pool) => {
                $store
                    .grouped(pool, move |$conn: &mut sqlx::SqliteConnection| Box::pin(async move { $body }))
                    .await
            }
            Db::Postgres(pool) => {
                let value: Result<_, sqlx::Error> = $crate::in_transaction!(pool, |tx| {
                    let $conn: &mut sqlx::PgConnection = &mut *tx;
                    $body
                });
                Ok(value?)
            }
        }
    };
}

/// A paid unit to record (see [`Store::reserve_paid`]).
pub(super) struct PaidUnit {
    id: String,
    tenant_id: String,
    metric: Metric,
    tier: Tier,
    now: Timestamp,
    expires_at: Timestamp,
}

/// A settle asked for (see [`Store::settle`]).
pub(super) struct SettleAsk {
    id: String,
    how: Settle,
    now: Timestamp,
}

impl Settle {
    fn target(self) -> &'static str {
        match self {
            Settle::Commit => "committed",
            Settle::Release => "released",
        }
    }
}

/// A metering write SQLite's group commit makes together with the group's others of its kind.
pub(super) enum SetWrite {
    Paid(PaidUnit, oneshot::Sender<StoreResult<()>>),
    Settle(SettleAsk, oneshot::Sender<StoreResult<Option<ReservationRow>>>),
}

/// Records paid units in one multi-row insert (`$conn` a connection of either database). One
/// statement: it needs no transaction of its own.
macro_rules! insert_paid {
    ($conn:expr, $units:expr) => {{
        let units: &[PaidUnit] = $units;
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO usage_reservations \
             (id, tenant_id, metric, tier, window_reset_at, status, created_at, expires_at) ",
        );
        insert.push_values(units, |mut row, u| {
            row.push_bind(&u.id)
                .push_bind(&u.tenant_id)
                .push_bind(u.metric.as_str())
                .push_bind(u.tier.as_str())
                .push("NULL")
                .push("'open'")
                .push_bind(u.now)
                .push_bind(u.expires_at);
        });
        // A group's size varies: only the one-row shape is worth a prepared statement.
        insert.build().persistent(units.len() == 1).execute($conn).await.map(|_| ())
    }};
}

/// Settles reservations in one update (`$conn` a connection of either database, inside a
/// transaction): each open one becomes what its ask says (a commit only while unexpired: an
/// expired reservation no longer holds a unit, so committing it could overshoot), and a free
/// unit committed counts in its window. Answers, per ask in order, the row it changed.
macro_rules! settle_set {
    ($conn:expr, $asks:expr) => {{
        let asks: &[SettleAsk] = $asks;
        let mut update = sqlx::QueryBuilder::new("WITH asked (ask_id, target, at, unexpired_only) AS (");
        update.push_values(asks, |mut row, a| {
            row.push_bind(&a.id)
                .push_bind(a.how.target())
                .push_bind(a.now)
                .push_bind(a.how == Settle::Commit);
        });
        update.push(
            ") UPDATE usage_reservations SET status = asked.target, settled_at = asked.at FROM asked \
             WHERE id = asked.ask_id AND status = 'open' \
               AND (NOT asked.unexpired_only OR expires_at > asked.at) \
             RETURNING id, tenant_id, metric, tier, window_reset_at, status, expires_at",
        );
        let changed: Result<Vec<ReservationRow>, sqlx::Error> =
            update.build_query_as().persistent(asks.len() == 1).fetch_all(&mut *$conn).await;
        match changed {
            Err(e) => Err(e),
            Ok(rows) => {
                let mut counted = Ok(());
                for r in rows.iter().filter(|r| r.status == "committed" && r.tier == Tier::Free.as_str()) {
                    let Some(metric) = Metric::parse(&r.metric) else { continue };
                    counted = sqlx::query(increment_sql(metric))
                        .bind(&r.tenant_id)
                        .bind(r.window_reset_at)
                        .execute(&mut *$conn)
                        .await
                        .map(|_| ());
                    if counted.is_err() {
                        break;
                    }
                }
                counted.map(|()| each_ask_its_row(asks, rows))
            }
        }
    }};
}

/// The changed rows handed to the asks they answer: a row goes to the first ask for its id that
/// wanted its new status. Two asks for one reservation in one statement change it once, so the
/// other finds it settled already (and is answered from its state, as if it came after).
fn each_ask_its_row(asks: &[SettleAsk], rows: Vec<ReservationRow>) -> Vec<Option<ReservationRow>> {
    let mut rows: Vec<Option<ReservationRow>> = rows.into_iter().map(Some).collect();
    asks.iter()
        .map(|ask| {
            rows.iter_mut()
                .find(|r| r.as_ref().is_some_and(|r| r.id == ask.id && r.status == ask.how.target()))
                .and_then(Option::take)
        })
        .collect()
}

/// SQLite's group commit's set-based writes (see `group`): the group's paid units in one insert
/// and its settles in one update, inside a savepoint; answered after the group's commit. If
/// either statement fails, they are undone and each write runs alone in a savepoint of its own,
/// so a write the database refuses fails only itself. An error here means the transaction is
/// gone (every caller of the group is answered with it).
pub(super) async fn write_sets(
    conn: &mut SqliteConnection,
    writes: Vec<SetWrite>,
    answers: &mut Vec<Done>,
) -> Result<(), sqlx::Error> {
    let (mut units, mut paid_replies, mut asks, mut settle_replies) = (vec![], vec![], vec![], vec![]);
    for write in writes {
        match write {
            SetWrite::Paid(unit, reply) => {
                units.push(unit);
                paid_replies.push(reply);
            }
            SetWrite::Settle(ask, reply) => {
                asks.push(ask);
                settle_replies.push(reply);
            }
        }
    }
    savepoint(&mut *conn).await?;
    let together = async {
        if !units.is_empty() {
            insert_paid!(&mut *conn, &units)?;
        }
        if asks.is_empty() { Ok(Vec::new()) } else { settle_set!(conn, &asks) }
    }
    .await;
    end_savepoint(&mut *conn, together.is_ok()).await?;
    if let Ok(settled) = together {
        answers.extend(paid_replies.into_iter().map(|reply| answer_after_commit(reply, Ok(()))));
        answers.extend(
            settle_replies.into_iter().zip(settled).map(|(reply, row)| answer_after_commit(reply, Ok(row))),
        );
        return Ok(());
    }
    for (unit, reply) in units.iter().zip(paid_replies) {
        savepoint(&mut *conn).await?;
        let result = insert_paid!(&mut *conn, std::slice::from_ref(unit));
        end_savepoint(&mut *conn, result.is_ok()).await?;
        answers.push(answer_after_commit(reply, result));
    }
    for (ask, reply) in asks.iter().zip(settle_replies) {
        savepoint(&mut *conn).await?;
        let result =
            settle_set!(conn, std::slice::from_ref(ask)).map(|rows| rows.into_iter().next().flatten());
        end_savepoint(&mut *conn, result.is_ok()).await?;
        answers.push(answer_after_commit(reply, result));
    }
    Ok(())
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
        let unit =
            PaidUnit { id: id.to_owned(), tenant_id: tenant_id.to_owned(), metric, tier, now, expires_at };
        match self.writer() {
            Db::Sqlite(pool) => {
                let (reply, answer) = oneshot::channel();
                self.submit_grouped(pool, Op::Set(SetWrite::Paid(unit, reply)), answer).await
            }
            // One statement commits by itself: no BEGIN and COMMIT (two round trips fewer on
            // the hottest write).
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                Ok(insert_paid!(&mut *conn, std::slice::from_ref(&unit))?)
            }
        }
    }

    /// Commits (it counts, exactly once) or releases (it does not) a reservation; repeating the
    /// same settlement answers the same. `NotFound` for an unknown id.
    pub async fn settle(&self, id: &str, how: Settle, now: Timestamp) -> StoreResult<SettleOutcome> {
        let ask = SettleAsk { id: id.to_owned(), how, now };
        let settled: Option<ReservationRow> = match self.writer() {
            Db::Sqlite(pool) => {
                let (reply, answer) = oneshot::channel();
                self.submit_grouped(pool, Op::Set(SetWrite::Settle(ask, reply)), answer).await?
            }
            Db::Postgres(pool) => {
                let value: Result<_, sqlx::Error> = crate::in_transaction!(pool, |tx| {
                    let conn: &mut sqlx::PgConnection = &mut tx;
                    settle_set!(conn, std::slice::from_ref(&ask))
                });
                value?.into_iter().next().flatten()
            }
        };
        if settled.is_some() {
            return Ok(SettleOutcome::Settled(how.target()));
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        let store = crate::store::migrated_sqlite(dir.path(), "usage.db").await;
        store.ensure_tenant("t1", 0).await.expect("tenant t1");
        store
    }

    fn unit(id: &str, tenant: &str) -> PaidUnit {
        PaidUnit {
            id: id.to_owned(),
            tenant_id: tenant.to_owned(),
            metric: Metric::Fix,
            tier: Tier::Team,
            now: 10,
            expires_at: 1_000,
        }
    }

    fn paid(u: PaidUnit) -> (Op, oneshot::Receiver<StoreResult<()>>) {
        let (reply, answer) = oneshot::channel();
        (Op::Set(SetWrite::Paid(u, reply)), answer)
    }

    fn settle(id: &str, how: Settle) -> (Op, oneshot::Receiver<StoreResult<Option<ReservationRow>>>) {
        let (reply, answer) = oneshot::channel();
        (Op::Set(SetWrite::Settle(SettleAsk { id: id.to_owned(), how, now: 20 }, reply)), answer)
    }

    fn pool(store: &Store) -> SqlitePool {
        match store.writer() {
            Db::Sqlite(pool) => pool.clone(),
            Db::Postgres(_) => unreachable!("a SQLite store"),
        }
    }

    use sqlx::sqlite::SqlitePool;

    async fn status_of(store: &Store, id: &str) -> Option<String> {
        with_db!(store, |pool| {
            sqlx::query_as::<_, (String,)>("SELECT status FROM usage_reservations WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .expect("a read")
        .map(|(s,)| s)
    }

    /// A paid unit the database refuses (its tenant does not exist) fails alone: the group's
    /// other units and settles, written in the same statements at first, are still committed.
    #[tokio::test]
    async fn a_write_the_database_refuses_fails_alone_and_the_rest_of_its_group_commits() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = sqlite_store(&dir).await;
        store.reserve_paid("t1", Metric::Fix, "r-open", Tier::Team, 10, 1_000).await.expect("a unit");
        let (ops, answers): (Vec<_>, Vec<_>) =
            [paid(unit("r-1", "t1")), paid(unit("r-ghost", "nobody")), paid(unit("r-2", "t1"))]
                .into_iter()
                .unzip();
        let (settle_op, settled) = settle("r-open", Settle::Commit);
        let mut ops = ops;
        ops.push(settle_op);
        super::super::group::write_group(&pool(&store), ops, None).await;
        let results: Vec<bool> = {
            let mut out = Vec::new();
            for answer in answers {
                out.push(answer.await.expect("answered").is_ok());
            }
            out
        };
        assert_eq!(results, [true, false, true], "only the unit of an unknown tenant fails");
        let row =
            settled.await.expect("answered").expect("the settle succeeded").expect("it changed the row");
        assert_eq!(row.status, "committed");
        assert_eq!(status_of(&store, "r-1").await.as_deref(), Some("open"));
        assert_eq!(status_of(&store, "r-2").await.as_deref(), Some("open"));
        assert_eq!(status_of(&store, "r-ghost").await, None);
        assert_eq!(status_of(&store, "r-open").await.as_deref(), Some("committed"));
    }

    /// Two settles of one reservation in one statement change it once: one ask gets the row (the
    /// first of two alike; of a commit and a release, whichever the database applied), the other
    /// none (it is answered from the reservation's state, as if it came after), and a free unit
    /// committed twice counts once.
    #[tokio::test]
    async fn settles_of_one_reservation_in_one_group_change_it_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = sqlite_store(&dir).await;
        let reserved = store.reserve("t1", Metric::Fix, "r-free", 10, 1_000, |_| Tier::Free).await;
        assert!(matches!(reserved, Ok(Reserved::Admitted { tier: Tier::Free })));
        store.reserve_paid("t1", Metric::Fix, "r-paid", Tier::Team, 10, 1_000).await.expect("a unit");
        let asks = [
            settle("r-free", Settle::Commit),
            settle("r-free", Settle::Commit),
            settle("r-paid", Settle::Release),
            settle("r-paid", Settle::Commit),
        ];
        let (ops, answers): (Vec<_>, Vec<_>) = asks.into_iter().unzip();
        super::super::group::write_group(&pool(&store), ops, None).await;
        let mut changed = Vec::new();
        for answer in answers {
            changed.push(answer.await.expect("answered").expect("no error").map(|r| r.status));
        }
        assert_eq!(changed[..2], [Some("committed".to_owned()), None]);
        let row = store.tenant("t1").await.expect("a read").expect("t1");
        assert_eq!(row.free_tier_fixes_used, 1, "a unit committed twice counts once");
        let winners: Vec<&String> = changed[2..].iter().flatten().collect();
        assert_eq!(winners.len(), 1, "one of the commit and the release changed r-paid: {changed:?}");
        assert_eq!(status_of(&store, "r-paid").await.as_ref(), Some(winners[0]));
    }
}
