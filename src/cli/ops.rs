//! Owns the operators' commands: `jobs run-once`, `events list | replay`, `reconcile` and
//! `preflight`. Each runs the same use case as the service, on a migrated database.

use std::process::ExitCode;

use anyhow::bail;

use super::{EventsAction, billing_for_command, cli_actor, migrated_store};
use crate::billing::events::STATUSES;
use crate::billing::jobs::Job;
use crate::billing::preflight::{self, Verdict};
use crate::config;
use crate::domain::ids::EventId;

pub(super) async fn run_job(name: &str) -> anyhow::Result<()> {
    let Some(job) = Job::parse(name) else {
        let names: Vec<_> = Job::ALL.iter().map(|j| j.name()).collect();
        bail!("no job {name:?}; jobs are {}", names.join(", "));
    };
    let billing = billing_for_command().await?;
    let rows = billing.run_job(job).await?;
    println!("{}: {rows} rows changed", job.name());
    Ok(())
}

pub(super) async fn events(action: EventsAction) -> anyhow::Result<()> {
    let store = migrated_store(&config::env_map()).await?;
    match action {
        EventsAction::List { status, limit } => {
            if let Some(s) = status.as_deref().filter(|s| !STATUSES.contains(s)) {
                bail!("status {s:?} is one of {}", STATUSES.join(", "));
            }
            for e in store.list_events(status.as_deref(), limit.clamp(1, 10_000)).await? {
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
            let id = EventId::parse(&id)?;
            if !store.replay_event(id.as_str()).await? {
                bail!("no stored event {id}");
            }
            println!("{id} queued; the running service processes it");
        }
    }
    Ok(())
}

pub(super) async fn reconcile(tenant: Option<&str>) -> anyhow::Result<()> {
    let billing = billing_for_command().await?;
    let (checked, repaired) = billing.reconcile(tenant, &cli_actor()).await?;
    println!("reconciled {checked} tenants; repaired {repaired}");
    Ok(())
}

/// Never migrates: pending migrations are one of its FAIL lines.
pub(super) async fn preflight(repo: &std::path::Path) -> ExitCode {
    let result = async {
        let vars = config::env_map();
        let config = config::Config::from_vars(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
        let store = crate::store::Store::connect(&config.database_url).await?;
        let billing =
            crate::billing::Billing::for_command(config, store, crate::domain::clock::Clock::System).await;
        Ok::<_, anyhow::Error>(preflight::run(&billing, repo).await)
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
            Verdict::Pass => "PASS  ",
            Verdict::Fail => {
                failed = true;
                "FAIL  "
            }
            Verdict::Manual => "MANUAL",
        };
        println!("{label} {}: {}", c.name, c.detail);
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
