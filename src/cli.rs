//! Owns the command line: design.md's subcommands that exist so far, each a thin call into the
//! library.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{AppState, Application, shutdown_signal};
use crate::auth::{self, MintRequest, Role};
use crate::clock::Clock;
use crate::config::{self, Config, Secret};
use crate::db::{BILLING_COLUMNS_VERSION, Db, MIGRATIONS};
use crate::jobs::{self, Job};
use crate::telemetry;
use crate::tenants::validate_tenant_id;
use crate::with_db;

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
    /// Find or create the products, the 4 prices, the portal configuration and the webhook
    /// endpoint (STRIPE_SECRET_KEY with write access, STRIPE_API_BASE, PUBLIC_URL); prints the
    /// environment lines. Running it again creates nothing.
    Setup,
    /// Run the offline Stripe simulator alone (test-mode keys only; see crates/stripe-sim/README.md).
    Sim {
        #[arg(long, default_value_t = 12111)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Deliver webhooks in chaos mode with this seed (duplicates, delays, dropped first tries).
        #[arg(long)]
        chaos_seed: Option<u64>,
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
    /// Run one job now: free-tier-reset, reservation-expiry, outbox, period-end or grace-expiry.
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
        Command::Demo { port } => crate::demo::run(port).await,
        Command::Migrate { action } => migrate(action).await,
        Command::Token { tenant, email, uid, role, ttl } => {
            token(&tenant, email.as_deref(), &uid, role, &ttl)
        }
        Command::Jobs { action: JobsAction::RunOnce { name } } => run_job(&name).await,
        Command::Events { action } => events_command(action).await,
        Command::Reconcile { tenant } => reconcile(tenant.as_deref()).await,
        Command::Stripe { action: StripeAction::Setup } => stripe_setup().await,
        Command::Preflight { repo } => return preflight(&repo).await,
        Command::Stripe { action: StripeAction::Sim { port, host, chaos_seed } } => {
            run_simulator(std::net::SocketAddr::new(host, port), chaos_seed).await
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
        let db = Db::connect(&config.database_url).await?;
        let state = AppState::new(config, db, Clock::System).await?;
        let app = Application::build(state).await?;
        tracing::info!(
            port = app.port(),
            database = app.state().db.kind(),
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

async fn connect_from_env() -> anyhow::Result<Db> {
    Db::connect(&config::database_url(&config::env_map())).await
}

async fn migrate(action: MigrateAction) -> anyhow::Result<()> {
    let db = connect_from_env().await?;
    match action {
        MigrateAction::Up => {
            db.migrate_up().await?;
            println!(
                "migrations applied; now at version {}",
                db.applied_versions().await?.last().unwrap_or(&0)
            );
        }
        MigrateAction::Down { steps, force } => {
            let target = migrate_down(&db, steps, force).await?;
            println!("reverted to version {target}");
        }
        MigrateAction::Status => {
            let applied = db.applied_versions().await?;
            for (version, name, _, _) in MIGRATIONS {
                let state = if applied.contains(version) { "applied" } else { "pending" };
                println!("{version:>4}  {state:<8} {name}");
            }
        }
    }
    Ok(())
}

/// Reverts the newest `steps` migrations; refuses to cross the billing-columns migration while
/// any tenant has a Stripe customer unless `force`. Returns the version left.
pub async fn migrate_down(db: &Db, steps: usize, force: bool) -> anyhow::Result<i64> {
    let applied = db.applied_versions().await?;
    let target = migrate_down_target(&applied, steps);
    let crosses_billing = applied.contains(&BILLING_COLUMNS_VERSION) && target < BILLING_COLUMNS_VERSION;
    if crosses_billing && !force {
        let mapped = tenants_with_customers(db).await?;
        if mapped > 0 {
            bail!(
                "{mapped} tenants have a Stripe customer id; reverting the billing columns drops \
                 the only tenant-to-customer mapping. Use --force to do it anyway."
            );
        }
    }
    db.migrate_down_to(target).await?;
    Ok(target)
}

/// The version left after reverting the newest `steps` applied migrations.
pub fn migrate_down_target(applied: &[i64], steps: usize) -> i64 {
    if steps >= applied.len() { 0 } else { applied[applied.len() - steps - 1] }
}

async fn tenants_with_customers(db: &Db) -> anyhow::Result<i64> {
    let (n,): (i64,) = with_db!(db, |pool| {
        sqlx::query_as("SELECT COUNT(*) FROM tenants WHERE stripe_customer_id IS NOT NULL")
            .fetch_one(pool)
            .await
    })?;
    Ok(n)
}

fn token(tenant: &str, email: Option<&str>, uid: &str, role: RoleArg, ttl: &str) -> anyhow::Result<()> {
    validate_tenant_id(tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secret = std::env::var("HYDRA_AUTH_SECRET").context("HYDRA_AUTH_SECRET is required")?;
    if secret.len() < 32 {
        bail!("HYDRA_AUTH_SECRET must be at least 32 bytes");
    }
    let ttl_secs = parse_duration(ttl).context("--ttl is like 90s, 30m, 1h or 24h")?;
    let role = match role {
        RoleArg::BillingAdmin => Role::BillingAdmin,
        RoleArg::Member => Role::Member,
    };
    let token = auth::mint(
        &Secret::new(secret),
        MintRequest { tenant, uid, role, email, ttl_secs, now: Clock::System.now() },
    )?;
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

async fn run_job(name: &str) -> anyhow::Result<()> {
    let Some(job) = Job::parse(name) else {
        let names: Vec<_> = Job::ALL.iter().map(|j| j.name()).collect();
        bail!("no job {name:?}; jobs are {}", names.join(", "));
    };
    let vars = config::env_map();
    let db = connect_from_env().await?;
    db.migrate_up().await?;
    let smtp_url = vars.get("SMTP_URL").filter(|v| !v.is_empty()).map(Secret::new);
    let public_url =
        vars.get("PUBLIC_URL").cloned().unwrap_or_else(|| format!("http://{}", config::DEFAULT_BIND));
    // The rollback switch pauses the jobs that revoke access, from the shell too.
    let (billing_enabled, grace_period_days) =
        config::billing_switch_and_grace(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
    let billing_frozen = !billing_enabled;
    let ctx = jobs::JobContext {
        db: &db,
        now: Clock::System.now(),
        smtp_url: smtp_url.as_ref(),
        public_url: &public_url,
        grace_period_days,
        billing_frozen,
        app: None,
    };
    let rows = jobs::run_once(&ctx, job).await?;
    println!("{}: {rows} rows changed", job.name());
    Ok(())
}

async fn events_command(action: EventsAction) -> anyhow::Result<()> {
    let db = connect_from_env().await?;
    db.migrate_up().await?;
    match action {
        EventsAction::List { status, limit } => {
            if let Some(s) = status.as_deref().filter(|s| !crate::events::STATUSES.contains(s)) {
                bail!("status {s:?} is one of {}", crate::events::STATUSES.join(", "));
            }
            for e in crate::events::list(&db, status.as_deref(), limit.clamp(1, 10_000)).await? {
                println!(
                    "{}  {:<10} {:<48} attempts={} {}",
                    e.id,
                    e.status,
                    e.kind,
                    e.attempts,
                    e.last_error.as_deref().unwrap_or("")
                );
            }
        }
        EventsAction::Replay { id } => {
            if !crate::events::replay(&db, &id).await? {
                bail!("no stored event {id}");
            }
            println!("{id} queued; the running service processes it");
        }
    }
    Ok(())
}

/// Who a CLI write is attributed to in the audit log.
fn cli_actor() -> String {
    let user =
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

async fn reconcile(tenant: Option<&str>) -> anyhow::Result<()> {
    let config = Config::from_vars(&config::env_map()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = Db::connect(&config.database_url).await?;
    let state = AppState::new(config, db, Clock::System).await?;
    let (checked, repaired) = crate::sync::reconcile(&state, tenant, &cli_actor()).await?;
    println!("reconciled {checked} tenants; repaired {repaired}");
    Ok(())
}

async fn stripe_setup() -> anyhow::Result<()> {
    let vars = config::env_map();
    let key =
        vars.get("STRIPE_SECRET_KEY").filter(|k| !k.is_empty()).context("STRIPE_SECRET_KEY is required")?;
    let base =
        vars.get("STRIPE_API_BASE").cloned().unwrap_or_else(|| config::DEFAULT_STRIPE_API_BASE.to_owned());
    let public_url = vars
        .get("PUBLIC_URL")
        .map(|u| u.trim_end_matches('/').to_owned())
        .context("PUBLIC_URL is required: the webhook endpoint is PUBLIC_URL/api/webhooks/stripe")?;
    let stripe = crate::stripe::StripeClient::new(&base, Secret::new(key.clone()));
    let report = crate::setup::run(&stripe, &public_url).await?;
    for created in &report.created {
        eprintln!("created {created}");
    }
    if report.created.is_empty() {
        eprintln!("everything already existed; nothing created");
    }
    for line in &report.env {
        println!("{line}");
    }
    Ok(())
}

async fn preflight(repo: &std::path::Path) -> ExitCode {
    let result = async {
        let config = Config::from_vars(&config::env_map()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let db = Db::connect(&config.database_url).await?;
        let state = AppState::new(config, db, Clock::System).await?;
        Ok::<_, anyhow::Error>(crate::preflight::run(&state, repo).await)
    }
    .await;
    let checks = match result {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL  configuration: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for c in &checks {
        let label = match c.verdict {
            crate::preflight::Verdict::Pass => "PASS  ",
            crate::preflight::Verdict::Fail => {
                failed = true;
                "FAIL  "
            }
            crate::preflight::Verdict::Manual => "MANUAL",
        };
        println!("{label} {}: {}", c.name, c.detail);
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

async fn run_simulator(addr: std::net::SocketAddr, chaos_seed: Option<u64>) -> anyhow::Result<()> {
    let settings = stripe_sim::SimSettings {
        chaos: chaos_seed.map(stripe_sim::Chaos::with_seed),
        ..stripe_sim::SimSettings::default()
    };
    let sim = stripe_sim::Simulator::start(addr, settings)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    print_banner(&format!(
        "Stripe simulator listening; point a service at it with:\nSTRIPE_API_BASE={}\n",
        sim.base_url
    ));
    shutdown_signal().await;
    Ok(())
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
        assert_eq!(migrate_down_target(&[1, 2, 3, 4], 1), 3);
        assert_eq!(migrate_down_target(&[1, 2, 3, 4], 3), 1);
        assert_eq!(migrate_down_target(&[1, 2, 3, 4], 9), 0);
        assert_eq!(migrate_down_target(&[], 1), 0);
    }
}
