//! Owns the command line: the `Command` enum (the README's subcommands) and its dispatch; each
//! command group is a module (`db`, `ops`, `admin`, `stripe`, `demo`) that calls the same use
//! cases as HTTP and the jobs. Only `serve`, `demo` and `migrate` change the schema; `jobs`, `events` and
//! `reconcile` refuse while migrations are pending, and `preflight` reports them.

mod admin;
mod db;
#[cfg(feature = "sim")]
pub mod demo;
mod ops;
mod stripe;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::billing::Billing;
use crate::config::{self, Config};
use crate::domain::clock::Clock;
use crate::domain::ids::TenantId;
use crate::http::auth::{self, MintRequest, Role};
use crate::http::{AppState, Application, shutdown_signal};
use crate::store::Store;
use crate::telemetry;

pub use db::migrate_down;

#[derive(Parser)]
#[command(name = "hydra-billing", version, about = "Hydra's billing service on Stripe")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the production server: HTTP API and background jobs (applies pending migrations first).
    Serve,
    /// Everything offline in one process: a fresh SQLite file, the Stripe simulator, demo teams
    /// and a dev sign-in page. Needs no configuration; prints the URL to open.
    #[cfg(feature = "sim")]
    Demo {
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
    /// Apply, revert or list database migrations (DATABASE_URL).
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Mint a tenant token signed with HYDRA_AUTH_SECRET; the token is the last line printed.
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long, default_value = "cli")]
        uid: String,
        #[arg(long, value_enum, default_value = "billing-admin")]
        role: RoleArg,
        /// Lifetime such as 90s, 30m, 1h (at most 24h).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Run background jobs by hand.
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Stored Stripe events: list them, or replay one (the running service processes it).
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Re-read Stripe for one tenant (or every tenant with a customer) and repair our rows.
    Reconcile {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The go-live checklist: every check PASS or FAIL with a reason; exits non-zero on a FAIL.
    Preflight {
        /// The repository to scan for committed Stripe secrets (tree and history).
        #[arg(long, default_value = ".")]
        repo: std::path::PathBuf,
    },
    /// Stripe tools.
    Stripe {
        #[command(subcommand)]
        action: StripeAction,
    },
    /// One tenant: look at it, give it a manual plan, link its Stripe customer; or announce many.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// The billing audit log: every plan or status change, who made it and why.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// The usage ledger: every committed run.
    Usage {
        #[command(subcommand)]
        action: UsageAction,
    },
    /// A consistent copy of the SQLite database while the service runs (VACUUM INTO); refuses an
    /// existing PATH. On PostgreSQL use pg_dump.
    Backup { path: std::path::PathBuf },
    /// Print the API's OpenAPI 3.1 document (as served at /api/openapi.json).
    Openapi,
}

#[derive(Subcommand)]
enum TenantAction {
    /// Stored and effective state and why, Stripe ids, free usage, recent events and audit entries.
    Show {
        id: String,
        /// Everything as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Give the tenant a manual plan (it wins over Stripe until --until), or remove it (--clear).
    SetPlan {
        id: String,
        /// free, team, business or enterprise.
        tier: Option<String>,
        #[arg(long)]
        clear: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        /// When the manual plan ends: YYYY-MM-DD (midnight UTC) or RFC 3339.
        #[arg(long)]
        until: Option<String>,
    },
    /// Link a Stripe customer to the tenant (after checking it with Stripe), then reconcile it.
    LinkCustomer {
        id: String,
        customer: String,
        #[arg(long)]
        reason: String,
    },
    /// Announce tenants in bulk from JSON lines or a .csv file (id,name,billing_email);
    /// idempotent.
    Import { file: std::path::PathBuf },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// From this date on: YYYY-MM-DD or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Subcommand)]
enum UsageAction {
    /// Committed runs, oldest first, one row per run.
    Export {
        /// Committed at or after: YYYY-MM-DD or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// Committed before.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write here instead of stdout (never overwrites).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum EventsAction {
    /// Newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue one stored event to be processed again.
    Replay { id: String },
}

#[derive(Subcommand)]
enum StripeAction {
    /// Find or create the products, the 4 prices, the Entitlements features (attached to the
    /// products whose tier has them), the portal configuration and the webhook endpoint
    /// (STRIPE_SECRET_KEY with write access, STRIPE_API_BASE, PUBLIC_URL); prints the
    /// environment lines. Running it again creates nothing.
    Setup,
    /// Run the offline Stripe simulator alone (test-mode keys only; see crates/stripe-sim/README.md).
    #[cfg(feature = "sim")]
    Sim {
        #[arg(long, default_value_t = 12111)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Deliver webhooks in chaos mode with this seed (duplicates, delays, dropped first tries);
        /// it also seeds `--fail-rate` and the latency jitter.
        #[arg(long)]
        chaos_seed: Option<u64>,
        /// Every API call waits MS milliseconds, plus up to JITTER more: `300` or `300,100`.
        #[arg(long, value_name = "MS[,JITTER]")]
        latency: Option<String>,
        /// At most N API calls a second per key (Stripe: 25 in test mode, 100 live); beyond it 429
        /// `rate_limit`, as Stripe answers.
        #[arg(long, value_name = "N")]
        rate_limit: Option<u32>,
        /// This share (0 to 1) of API calls fails: a 500 `api_error` before the request is
        /// applied, a 500 after it, or an answer held 30 s after it (a timeout), in equal parts.
        #[arg(long, value_name = "P")]
        fail_rate: Option<f64>,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the newest migrations.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: usize,
        /// Revert past the billing columns even though tenants have Stripe customers (this drops
        /// the only tenant-to-customer mapping).
        #[arg(long)]
        force: bool,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Subcommand)]
enum JobsAction {
    /// Run one job now: free-tier-reset, reservation-expiry, outbox, period-end, grace-expiry or
    /// reconcile (with the service's environment).
    RunOnce { name: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    BillingAdmin,
    Member,
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => return serve().await,
        #[cfg(feature = "sim")]
        Command::Demo { port } => demo::run(port).await,
        Command::Migrate { action } => db::migrate(action).await,
        Command::Token { tenant, email, uid, role, ttl } => {
            token(&tenant, email.as_deref(), &uid, role, &ttl)
        }
        Command::Jobs { action: JobsAction::RunOnce { name } } => ops::run_job(&name).await,
        Command::Events { action } => ops::events(action).await,
        Command::Reconcile { tenant } => ops::reconcile(tenant.as_deref()).await,
        Command::Preflight { repo } => return ops::preflight(&repo).await,
        Command::Stripe { action: StripeAction::Setup } => stripe::setup().await,
        Command::Tenant { action } => admin::tenant(action).await,
        Command::Audit { action } => admin::audit(action).await,
        Command::Usage { action } => admin::usage(action).await,
        Command::Backup { path } => admin::backup(&path).await,
        Command::Openapi => {
            print_banner(&crate::http::openapi::document_text());
            Ok(())
        }
        #[cfg(feature = "sim")]
        Command::Stripe {
            action: StripeAction::Sim { port, host, chaos_seed, latency, rate_limit, fail_rate },
        } => {
            let addr = std::net::SocketAddr::new(host, port);
            stripe::simulator(addr, chaos_seed, latency.as_deref(), rate_limit, fail_rate).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> ExitCode {
    telemetry::init_logging();
    let config = match Config::from_vars(&config::env_map()) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    let run = async {
        let store = Store::connect(&config.database_url).await?;
        store.migrate_up().await.context("cannot apply database migrations")?;
        let billing = Billing::open(config, store, Clock::System).await?;
        let app = Application::build(AppState::new(billing)).await?;
        tracing::info!(
            port = app.port(),
            database = app.state().store.kind(),
            billing_enabled = app.state().config.billing_enabled,
            "hydra-billing listening"
        );
        app.run_until(true, shutdown_signal()).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "serve failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The database of `DATABASE_URL`, with every migration applied (or an error naming the fix).
async fn migrated_store(vars: &std::collections::HashMap<String, String>) -> anyhow::Result<Store> {
    let store = Store::connect(&config::database_url(vars)).await?;
    store.require_migrated().await?;
    Ok(store)
}

/// The use cases for a one-off command: the full configuration, a migrated database.
async fn billing_for_command() -> anyhow::Result<Billing> {
    let vars = config::env_map();
    let config = Config::from_vars(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = migrated_store(&vars).await?;
    Ok(Billing::for_command(config, store, Clock::System).await)
}

fn token(tenant: &str, email: Option<&str>, uid: &str, role: RoleArg, ttl: &str) -> anyhow::Result<()> {
    TenantId::parse(tenant)?;
    // The signing key alone: minting a token must work before the rest of the service is set up.
    let secret = config::auth_secret(&config::env_map())?;
    let ttl_secs = parse_duration(ttl).context("--ttl is like 90s, 30m, 1h or 24h")?;
    let role = match role {
        RoleArg::BillingAdmin => Role::BillingAdmin,
        RoleArg::Member => Role::Member,
    };
    let token =
        auth::mint(&secret, MintRequest { tenant, uid, role, email, ttl_secs, now: Clock::System.now() })?;
    println!("{token}");
    Ok(())
}

/// `90s`, `30m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Who a CLI write is attributed to in the audit log.
fn cli_actor() -> String {
    // Under sudo (operators run commands as the service's user) the person is SUDO_USER.
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .into_iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

/// What a long-running command (`demo`, `simulate`) prints once it listens: one write, and a closed
/// stdout is not fatal. `println!` panics on a broken pipe, which killed the demo when whoever
/// launched it stopped reading after the URL line.
pub fn print_banner(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn down_steps_pick_the_version_to_keep() {
        use db::migrate_down_target;
        assert_eq!(migrate_down_target(&[1, 2, 3, 4], 1), 3);
        assert_eq!(migrate_down_target(&[1, 2, 3, 4], 3), 1);
        assert_eq!(migrate_down_target(&[1, 2, 3, 4], 9), 0);
        assert_eq!(migrate_down_target(&[], 1), 0);
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
