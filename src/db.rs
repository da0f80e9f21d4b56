//! Owns the connection to SQLite or PostgreSQL and the reversible migrations.
//!
//! sqlx's `Any` driver cannot carry our types and its macros cannot target it, so the store holds
//! one of two concrete pools. Every query is written once, with `$n` placeholders and portable SQL
//! (times are Unix seconds in BIGINT columns), and [`with_db!`] expands the same block for
//! each pool type. A transaction is opened the same way, so code inside reads as plain sqlx.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// The store: SQLite by default, PostgreSQL when several replicas share one database.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs one block against whichever pool `$db` holds, binding it to `$pool`.
/// The block is compiled once per database; its SQL text is shared.
#[macro_export]
macro_rules! with_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    /// Connects to `sqlite://PATH` (created if missing, WAL) or `postgres://…`.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("DATABASE_URL is not a valid sqlite URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                // Writers queue on SQLite's single write lock; wait for it rather than fail.
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .context("cannot open the SQLite database")?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options =
                PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid postgres URL")?;
            Self::connect_postgres(options).await
        } else {
            bail!("DATABASE_URL must start with sqlite:// or postgres://")
        }
    }

    /// Connects with ready-made options (tests use this to pin a per-test schema).
    pub async fn connect_postgres(options: PgConnectOptions) -> anyhow::Result<Db> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("cannot connect to PostgreSQL")?;
        Ok(Db::Postgres(pool))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// True when a trivial query answers: what `/readyz` reports.
    pub async fn ping(&self) -> bool {
        with_db!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.is_ok())
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
                include_str!(concat!("../migrations/", $name, ".up.sql")),
                include_str!(concat!("../migrations/", $name, ".down.sql")),
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

/// Fresh id for rows keyed by text (reservations, audit entries).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
