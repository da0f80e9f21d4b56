//! Owns the database: the only module with SQL. It holds the connection to SQLite or PostgreSQL,
//! the reversible migrations, and one typed function per question or change the other layers
//! need; it answers with its own error ([`StoreError`]), never an HTTP one.
//!
//! sqlx's `Any` driver cannot carry our types and its macros cannot target it, so the store holds
//! one of two concrete pools. Every query is written once, with `$n` placeholders and portable SQL
//! (times are Unix seconds in BIGINT columns), and [`with_db!`] expands the same block for
//! each pool type. A transaction is opened the same way, so code inside reads as plain sqlx.

mod cache;
mod checkpoint;
mod events;
mod group;
mod intake;
mod ops;
mod outbox;
mod quotes;
mod tenants;
mod usage;

pub use cache::AccessFacts;
pub use events::{EventRow, EventStats, StoredEvent};
pub use intake::NewEvent;
pub use ops::{IntegrityCounts, RunRow};
pub use outbox::{NewMail, PendingMail};
pub use quotes::{NewQuote, QuoteRow};
pub use tenants::{AuditRow, BillingColumns, Link, ManualPlan, SyncWrite, TenantRow};
pub use usage::{FreeCounts, ReservationView, Reserved, Settle, SettleOutcome};

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// What can go wrong in the store, as the layers above need to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// No connection could be had, or no write could commit: retryable, and `/readyz` fails.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Io(_) => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(ref db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if db.is_unique_violation() {
                    StoreError::Conflict(db.message().to_owned())
                } else if unavailable_code(&code) {
                    StoreError::Unavailable(format!("database error {code}"))
                } else {
                    StoreError::Other(e.into())
                }
            }
            other => StoreError::Other(other.into()),
        }
    }
}

/// Codes that mean "the database cannot take this now" rather than "this statement is wrong":
/// SQLite busy/locked/I/O/full, PostgreSQL connection, resource and shutdown classes.
fn unavailable_code(code: &str) -> bool {
    matches!(code, "5" | "6" | "10" | "13" | "517" | "261")
        || ["08", "53", "57P"].iter().any(|class| code.starts_with(class))
}

/// Whether a connection coming back to the pool may be lent again. A transaction that failed is
/// rolled back when it is dropped (sqlx queues the ROLLBACK); the ping runs it now, and a
/// connection still inside a transaction afterwards (its rollback failed, as after SQLITE_FULL
/// when SQLite had already ended the transaction itself) is closed rather than lent: a later
/// request on it would write into a transaction that never commits, or wait on its lock.
async fn settled_after_use<C: sqlx::Connection>(conn: &mut C) -> Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    let settled = !conn.is_in_transaction();
    if !settled {
        tracing::warn!("a connection whose rollback failed is closed, not reused");
        metrics::counter!("hydra_db_connections_discarded_total").increment(1);
    }
    Ok(settled)
}

/// The first row a writing statement returned, from all its rows. A statement with `RETURNING`
/// outside a transaction commits on its last step: SQLite reports a failed commit (a full disk)
/// only there, so such a statement is always read to the end (`fetch_all`), never with
/// `fetch_one`/`fetch_optional`, which stop at the first row and would answer success for a
/// write that never committed.
pub(crate) fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// Whether SQLite could add a page: below its page limit, or with free pages to reuse.
async fn has_room(conn: &mut sqlx::SqliteConnection) -> bool {
    let mut read = async |pragma: &'static str| -> Option<i64> {
        sqlx::query_as::<_, (i64,)>(pragma).fetch_one(&mut *conn).await.ok().map(|(n,)| n)
    };
    let (Some(pages), Some(limit), Some(free)) = (
        read("PRAGMA page_count").await,
        read("PRAGMA max_page_count").await,
        read("PRAGMA freelist_count").await,
    ) else {
        return false;
    };
    pages < limit || free > 0
}

/// Space the file system holding the database must have free for `/readyz` to pass.
///
/// The write probe alone is not enough on a full disk: right after a checkpoint SQLite writes
/// its log from the start of a file that already has the space, so a small commit succeeds while
/// the next page the log or the database needs does not. Below this much (a few hundred webhook
/// events) the replica says it is not ready, so traffic moves elsewhere before writes fail.
const DISK_RESERVE_BYTES: u64 = 1024 * 1024;

/// Whether the file system holding `database` has [`DISK_RESERVE_BYTES`] free for us. Where it
/// cannot be asked (an in-memory database, a platform without statvfs) the write probe decides.
fn disk_has_room(database: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        let dir = match database.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => std::path::Path::new("."),
        };
        match rustix::fs::statvfs(dir) {
            Ok(fs) => fs.f_bavail.saturating_mul(fs.f_frsize) >= DISK_RESERVE_BYTES,
            Err(_) => true,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = database;
        true
    }
}

/// The store: SQLite by default, PostgreSQL when several replicas share one database; clones
/// share the pool and the access cache.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// Where the hot write paths run (see [`with_writer!`]): on SQLite a pool of one connection,
    /// on PostgreSQL the same pool as `db`.
    writer: Db,
    cache: std::sync::Arc<cache::AccessCache>,
    /// The webhook intake's group commit (see `intake`), shared by clones.
    intake: std::sync::Arc<group::Batcher<intake::Pending>>,
    /// When the intake last found the database unreachable (see `intake`).
    intake_outage: intake::Outage,
    /// SQLite's group commit for metering (see `group`), shared by clones.
    group: std::sync::Arc<group::Batcher<group::Op>>,
}

/// The database a store talks to.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Itself: so [`with_db!`] takes a bare `Db` (the intake task holds one) as well as a store.
    pub fn db(&self) -> &Db {
        self
    }
}

/// Runs one block against whichever pool `$db` holds, binding it to `$pool`.
/// The block is compiled once per database; its SQL text is shared.
#[macro_export]
macro_rules! with_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db.db() {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

/// One transaction on `$pool` around `$body` (which reaches it as `&mut *$tx`): committed when
/// the body returns `Ok`, rolled back explicitly when it returns `Err` (a `return` inside the
/// body ends the body, not the caller). Rolling back at once, rather than when the dropped
/// transaction's connection is next used, lets the connection go back to the pool clean; one
/// whose rollback fails is closed there, never lent again (`settled_after_use`).
#[macro_export]
macro_rules! in_transaction {
    ($pool:expr, |$tx:ident| $body:expr) => {{
        let mut $tx = $pool.begin().await?;
        let result = async { $body }.await;
        $crate::store::end_transaction($tx, result).await
    }};
}

/// Commits `tx` if `result` is `Ok`, else rolls it back explicitly; see [`in_transaction!`].
pub async fn end_transaction<DB: sqlx::Database, T, E: From<sqlx::Error>>(
    tx: sqlx::Transaction<'_, DB>,
    result: Result<T, E>,
) -> Result<T, E> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(failed) = tx.rollback().await {
                tracing::warn!(error = %failed, "a failed transaction could not be rolled back; its connection is closed");
            }
            Err(e)
        }
    }
}

/// Like [`with_db!`], for the hot write transactions (reserve, settle, webhook intake). SQLite
/// takes one writer at a time; with several pooled connections the others wait in SQLite's busy
/// handler, which sleeps in growing steps (up to 100 ms) and wakes in no order: at 32 callers
/// that was a 90 ms p99. One writer connection makes them queue in the pool instead, first come
/// first served, and each waits only for the transactions ahead of it. PostgreSQL locks rows,
/// not the database, so there it is the ordinary pool.
#[macro_export]
macro_rules! with_writer {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.writer() {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

impl Store {
    fn new(db: Db, writer: Db) -> Store {
        // One process writes a SQLite file, so its own forgets suffice; PostgreSQL replicas turn
        // the cache on only while they hear each other's (see `listen_for_changes`).
        let on = matches!(db, Db::Sqlite(_));
        Store {
            db,
            writer,
            cache: std::sync::Arc::new(cache::AccessCache::new(on)),
            intake: std::sync::Arc::default(),
            intake_outage: intake::Outage::default(),
            group: std::sync::Arc::default(),
        }
    }

    /// The database behind the store ([`with_db!`] matches on it).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The hot write paths' database ([`with_writer!`] matches on it).
    pub fn writer(&self) -> &Db {
        &self.writer
    }

    /// Closes every connection (both SQLite pools); later calls fail as with a database gone.
    pub async fn close(&self) {
        with_db!(self, |pool| pool.close().await);
        with_writer!(self, |pool| pool.close().await);
    }

    /// Connects to `sqlite://PATH` (created if missing, WAL) or `postgres://…`.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("DATABASE_URL is not a valid sqlite URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                // Writers queue on SQLite's single write lock; wait for it rather than fail.
                .busy_timeout(Duration::from_secs(30));
            // As on PostgreSQL, a request waits about 2 s for a connection, then answers 503
            // database_unavailable with Retry-After rather than hang.
            // No ping before a connection is lent (sqlx's default): a SQLite connection is a
            // file this process holds, not a socket a server can drop, and each ping is a round
            // trip to the connection's worker thread. A dead worker still fails the statement
            // itself (503 database_unavailable), and the ping on release retires the connection.
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(2))
                .after_release(|conn, _| Box::pin(settled_after_use(conn)))
                .connect_with(options.clone())
                .await
                .context("cannot open the SQLite database")?;
            // The writer's checkpoints are taken on a connection of their own (see `checkpoint`),
            // opened at the first one: on the shared pool a checkpoint kept a reader waiting.
            let own = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2))
                .connect_lazy_with(options.clone());
            let checkpoints = checkpoint::Checkpoints::default();
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(2))
                .after_release(move |conn, _| {
                    checkpoints.writer_released(&own);
                    Box::pin(settled_after_use(conn))
                })
                .connect_with(options.pragma("wal_autocheckpoint", checkpoint::WRITER_BACKSTOP_PAGES))
                .await
                .context("cannot open the SQLite database")?;
            Ok(Store::new(Db::Sqlite(pool), Db::Sqlite(writer)))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options =
                PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid postgres URL")?;
            Self::connect_postgres(options).await
        } else {
            bail!("DATABASE_URL must start with sqlite:// or postgres://")
        }
    }

    /// Connects with ready-made options (tests use this to pin a per-test schema).
    pub async fn connect_postgres(options: PgConnectOptions) -> anyhow::Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A request waits about 2 s for a connection, then answers 503 database_unavailable
            // with Retry-After (the pool keeps reconnecting on its own).
            .acquire_timeout(Duration::from_secs(2))
            .after_release(|conn, _| Box::pin(settled_after_use(conn)))
            .connect_with(options)
            .await
            .context("cannot connect to PostgreSQL")?;
        Ok(Store::new(Db::Postgres(pool.clone()), Db::Postgres(pool)))
    }

    /// A new PostgreSQL schema in this database and a store whose connections work inside it: an
    /// isolated database within a shared one (preflight's scratch copy, each test, each bench).
    pub async fn with_new_schema(&self, schema: &str) -> anyhow::Result<Store> {
        let Db::Postgres(pool) = &self.db else { bail!("schemas are a PostgreSQL feature") };
        if schema.is_empty()
            || !schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("a schema name is lowercase letters, digits and '_'");
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(pool).await?;
        let options = (*pool.connect_options()).clone().options([("search_path", schema)]);
        Store::connect_postgres(options).await
    }

    /// Drops a schema [`Store::with_new_schema`] made, with everything in it.
    pub async fn drop_schema(&self, schema: &str) -> anyhow::Result<()> {
        let Db::Postgres(pool) = &self.db else { bail!("schemas are a PostgreSQL feature") };
        if !schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            bail!("a schema name is lowercase letters, digits and '_'");
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
            .execute(pool)
            .await?;
        Ok(())
    }

    pub fn kind(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// True when a write could commit now, answered within about 2 s: what `/readyz` reports
    /// (a database that answers reads but takes no write is not ready). SQLite commits a real
    /// write (one row in `billing_settings`): a full disk lets SQLite take its lock but not
    /// append to its log, so nothing less proves it; and it asks the file system for a small
    /// reserve of free space (see [`DISK_RESERVE_BYTES`]). PostgreSQL assigns a transaction id, which
    /// a read-only or recovering server refuses.
    pub async fn can_write(&self) -> bool {
        const WITHIN: Duration = Duration::from_secs(2);
        match &self.db {
            Db::Sqlite(pool) => {
                // The free-space check and the wait for a connection share one deadline, so the
                // probe's bound stays WITHIN (plus SQLite's own lock wait below) however it is
                // spent. The check runs on a blocking thread: a hung network file system must
                // neither stall a runtime worker nor keep `/readyz` from answering.
                let deadline = tokio::time::Instant::now() + WITHIN;
                let database = pool.connect_options().get_filename().to_owned();
                let room = tokio::task::spawn_blocking(move || disk_has_room(&database));
                if !matches!(tokio::time::timeout_at(deadline, room).await, Ok(Ok(true))) {
                    return false;
                }
                let Ok(Ok(mut conn)) = tokio::time::timeout_at(deadline, pool.acquire()).await else {
                    return false;
                };
                // The wait for the lock is bounded by SQLite itself, never by cancelling a future
                // that may already hold it.
                if sqlx::query("PRAGMA busy_timeout = 2000").execute(&mut *conn).await.is_err() {
                    conn.detach();
                    return false;
                }
                let locked = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.is_ok();
                // A database at its page limit takes the lock and small writes but no new page.
                let wrote = locked
                    && has_room(&mut conn).await
                    && sqlx::query(
                        "INSERT INTO billing_settings (key, value) VALUES ('readiness_probe', '') \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .execute(&mut *conn)
                    .await
                    .is_ok();
                let committed = wrote && sqlx::query("COMMIT").execute(&mut *conn).await.is_ok();
                let ended = committed || !locked || sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok();
                let restored = sqlx::query("PRAGMA busy_timeout = 30000").execute(&mut *conn).await.is_ok();
                if !(ended && restored) {
                    // A connection that may still hold the lock never goes back to the pool.
                    conn.detach();
                }
                committed
            }
            Db::Postgres(pool) => matches!(
                tokio::time::timeout(WITHIN, sqlx::query("SELECT txid_current()").execute(pool)).await,
                Ok(Ok(_))
            ),
        }
    }

    /// Migrations not yet applied, as `(version, name)`: `preflight` reports them, and commands
    /// other than `serve` and `migrate` refuse to run past them instead of migrating.
    pub async fn pending_migrations(&self) -> anyhow::Result<Vec<(i64, &'static str)>> {
        let applied = self.applied_versions().await?;
        Ok(MIGRATIONS.iter().filter(|m| !applied.contains(&m.0)).map(|m| (m.0, m.1)).collect())
    }

    /// Fails with a sentence naming the fix when migrations are pending.
    pub async fn require_migrated(&self) -> anyhow::Result<()> {
        let pending = self.pending_migrations().await?;
        if let Some((version, name)) = pending.first() {
            bail!(
                "{} migration(s) pending, from {version} ({name}); run `hydra-billing migrate up` first",
                pending.len()
            );
        }
        Ok(())
    }

    /// Applies every pending migration.
    pub async fn migrate_up(&self) -> anyhow::Result<()> {
        let migrator = migrator();
        with_db!(self, |pool| migrator.run(pool).await)?;
        Ok(())
    }

    /// Applies pending migrations up to and including `version`.
    pub async fn migrate_up_to(&self, version: i64) -> anyhow::Result<()> {
        let migrator = migrator();
        with_db!(self, |pool| migrator.run_to(version, pool).await)?;
        Ok(())
    }

    /// Reverts applied migrations newer than `target` (0 reverts all).
    pub async fn migrate_down_to(&self, target: i64) -> anyhow::Result<()> {
        let migrator = migrator();
        with_db!(self, |pool| migrator.undo(pool, target).await)?;
        Ok(())
    }

    /// Versions applied so far, oldest first.
    pub async fn applied_versions(&self) -> anyhow::Result<Vec<i64>> {
        // The bookkeeping table only exists once a migration has run.
        let rows: Result<Vec<(i64,)>, sqlx::Error> = with_db!(self, |pool| {
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(pool)
                .await
        });
        match rows {
            Ok(rows) => Ok(rows.into_iter().map(|(v,)| v).collect()),
            Err(sqlx::Error::Database(e)) if is_missing_table(e.message()) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

fn is_missing_table(message: &str) -> bool {
    message.contains("no such table") || message.contains("does not exist")
}

/// One entry per migration: the same SQL serves both databases (see the module comment).
macro_rules! migration_files {
    ($($version:literal => $name:literal),* $(,)?) => {
        &[$(
            (
                $version,
                $name,
                include_str!(concat!("../../migrations/", $name, ".up.sql")),
                include_str!(concat!("../../migrations/", $name, ".down.sql")),
            ),
        )*]
    };
}

/// (version, name, up, down) of every migration, in order.
pub const MIGRATIONS: &[(i64, &str, &str, &str)] = migration_files![
    1 => "0001_tenants",
    2 => "0002_billing_columns",
    3 => "0003_subscription_state",
    4 => "0004_usage_audit_jobs",
    5 => "0005_webhook_events_outbox",
    6 => "0006_checkout_quotes",
    7 => "0007_leases",
    8 => "0008_job_last_ok",
    9 => "0009_sync_lease_token",
    10 => "0010_event_received_ms",
];

/// The version that adds `stripe_customer_id`: reverting it drops the tenant-to-customer map.
pub const BILLING_COLUMNS_VERSION: i64 = 2;

pub fn migrator() -> Migrator {
    let mut migrations = Vec::with_capacity(MIGRATIONS.len() * 2);
    for (version, name, up, down) in MIGRATIONS {
        let description = Cow::Borrowed(name.split_once('_').map_or(*name, |(_, d)| d));
        migrations.push(Migration::new(
            *version,
            description.clone(),
            MigrationType::ReversibleUp,
            up.into_sql_str(),
            false,
        ));
        migrations.push(Migration::new(
            *version,
            description,
            MigrationType::ReversibleDown,
            down.into_sql_str(),
            false,
        ));
    }
    Migrator::with_migrations(migrations)
}

/// The one insert into the billing audit log, inside the caller's transaction.
macro_rules! insert_audit {
    ($conn:expr, tenant = $tenant:expr, actor = $actor:expr, action = $action:expr,
     before = $before:expr, after = $after:expr, reason = $reason:expr, at = $now:expr) => {
        sqlx::query(
            "INSERT INTO billing_audit_log \
             (id, tenant_id, actor, action, before_state, after_state, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind($crate::store::new_ordered_id("aud"))
        .bind($tenant)
        .bind($actor)
        .bind($action)
        .bind($before)
        .bind($after)
        .bind($reason)
        .bind($now)
        .execute($conn)
        .await
    };
}
pub(crate) use insert_audit;

/// The claim of both database queues (Stripe events, billing emails): the oldest due row, or one
/// whose claim has lapsed, is taken until `$2` and its attempt counted, in one statement, so two
/// workers (or replicas) never hold the same row. `$1` is now.
macro_rules! claim_sql {
    (table = $table:literal, ready = $ready:literal, claimed = $claimed:literal, order = $order:literal,
     returning = $cols:literal) => {
        claim_sql!(
            table = $table,
            ready = $ready,
            claimed = $claimed,
            order = $order,
            returning = $cols,
            only_if = "TRUE"
        )
    };
    (table = $table:literal, ready = $ready:literal, claimed = $claimed:literal, order = $order:literal,
     returning = $cols:literal, only_if = $only_if:literal) => {
        [
            claim_sql!(@one $table, $ready, $claimed, $order, $cols, $only_if, ""),
            // PostgreSQL: workers racing for the oldest row would all wait on its lock, then find
            // it taken and report the queue empty; SKIP LOCKED sends each to the next free row.
            // (SQLite runs one write at a time, and has no such clause.)
            claim_sql!(@one $table, $ready, $claimed, $order, $cols, $only_if, " FOR UPDATE SKIP LOCKED"),
        ]
    };
    (@one $table:literal, $ready:literal, $claimed:literal, $order:literal, $cols:literal, $only_if:literal,
     $lock:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET status = '",
            $claimed,
            "', locked_until = $2, next_attempt_at = $2, \
             attempts = attempts + 1 WHERE id = (SELECT id FROM ",
            $table,
            " \
                 WHERE ((status = '",
            $ready,
            "' AND (next_attempt_at IS NULL OR next_attempt_at <= $1)) \
                    OR (status = '",
            $claimed,
            "' AND locked_until < $1)) AND (",
            $only_if,
            ") \
                 ORDER BY ",
            $order,
            " LIMIT 1",
            $lock,
            ") \
               AND ((status = '",
            $ready,
            "' AND (next_attempt_at IS NULL OR next_attempt_at <= $1)) \
                    OR (status = '",
            $claimed,
            "' AND locked_until < $1)) \
             RETURNING ",
            $cols
        )
    };
}
pub(crate) use claim_sql;

/// The end of queue rows' attempts: their new status `$1`, error `$2` and next attempt `$3`;
/// `$4` stamps the done column when the status is final. It ends in `WHERE id IN `: the caller
/// appends the rows' ids as `($5, $6, …)`, so rows ending alike end in one statement.
macro_rules! finish_sql {
    (table = $table:literal, done_column = $done:literal, done_statuses = $statuses:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET status = $1, last_error = $2, next_attempt_at = $3, locked_until = NULL, ",
            $done,
            " = CASE WHEN $1 IN (",
            $statuses,
            ") THEN $4 ELSE ",
            $done,
            " END WHERE id IN "
        )
    };
}
pub(crate) use finish_sql;

/// One database queue (Stripe events, billing emails): its claim and finish statements, both
/// made by the macros above, so the two queues share one claim rule and one finish rule.
pub(crate) struct Queue {
    /// For SQLite, then for PostgreSQL.
    claim: [&'static str; 2],
    finish: &'static str,
}

/// What a queue's `finish` records: the new status, the error, when to try again.
pub struct QueueAttempt<'a> {
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub next_attempt_at: Option<i64>,
}

impl Store {
    /// Claims the queue's oldest due row (or one whose claim lapsed) until `until`.
    async fn claim_from<T>(&self, queue: &Queue, now: i64, until: i64) -> StoreResult<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let claim = queue.claim[usize::from(self.kind() == "postgres")];
        Ok(with_writer!(self, |pool| {
            sqlx::query_as(claim).bind(now).bind(until).fetch_all(pool).await.map(first)
        })?)
    }

    /// Ends the attempt on a claimed row.
    async fn finish_in(
        &self,
        queue: &Queue,
        id: &str,
        attempt: QueueAttempt<'_>,
        now: i64,
    ) -> StoreResult<()> {
        self.finish_all_in(queue, &[(id, attempt)], now).await
    }

    /// Ends several claimed rows' attempts in one transaction (one commit for a group the worker
    /// applied together).
    async fn finish_all_in(
        &self,
        queue: &Queue,
        attempts: &[(&str, QueueAttempt<'_>)],
        now: i64,
    ) -> StoreResult<()> {
        // Rows ending alike (a burst's events are mostly "processed", no error) end in one
        // statement each instead of a statement (on PostgreSQL a round trip) per row.
        const MAX_IDS: usize = 100;
        let mut alike: Vec<(&QueueAttempt<'_>, Vec<&str>)> = Vec::new();
        for (id, attempt) in attempts {
            let same = |a: &QueueAttempt<'_>| {
                (a.status, a.error, a.next_attempt_at)
                    == (attempt.status, attempt.error, attempt.next_attempt_at)
            };
            match alike.iter_mut().find(|(a, ids)| same(a) && ids.len() < MAX_IDS) {
                Some((_, ids)) => ids.push(id),
                None => alike.push((attempt, vec![id])),
            }
        }
        with_writer!(self, |pool| {
            crate::in_transaction!(pool, |tx| {
                for (attempt, ids) in &alike {
                    let places: Vec<String> = (5..ids.len() + 5).map(|n| format!("${n}")).collect();
                    let sql = format!("{}({})", queue.finish, places.join(", "));
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(attempt.status)
                        .bind(attempt.error)
                        .bind(attempt.next_attempt_at)
                        .bind(now);
                    for id in ids {
                        query = query.bind(*id);
                    }
                    query.execute(&mut *tx).await?;
                }
                Ok::<_, StoreError>(())
            })
        })
    }
}

/// Fresh id for rows keyed by text (reservations, quotes, emails).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Fresh id that sorts after every id this process made before (UUIDv7: milliseconds, then a
/// counter): audit entries written in the same second still list in the order they happened.
pub fn new_ordered_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A migrated SQLite store in `dir`, file `name`: the store's own tests' database.
#[cfg(test)]
pub(crate) async fn migrated_sqlite(dir: &std::path::Path, name: &str) -> Store {
    let store =
        Store::connect(&format!("sqlite://{}", dir.join(name).display())).await.expect("a SQLite store");
    store.migrate_up().await.expect("migrations");
    store
}
