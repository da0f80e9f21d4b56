//! Owns `migrate up | down | status`: the only command besides `serve` that changes the schema.

use anyhow::bail;

use super::MigrateAction;
use crate::config;
use crate::store::{BILLING_COLUMNS_VERSION, MIGRATIONS, Store};

pub(super) async fn migrate(action: MigrateAction) -> anyhow::Result<()> {
    let store = Store::connect(&config::database_url(&config::env_map())).await?;
    match action {
        MigrateAction::Up => {
            store.migrate_up().await?;
            println!(
                "migrations applied; now at version {}",
                store.applied_versions().await?.last().unwrap_or(&0)
            );
        }
        MigrateAction::Down { steps, force } => {
            let target = migrate_down(&store, steps, force).await?;
            println!("reverted to version {target}");
        }
        MigrateAction::Status => {
            let applied = store.applied_versions().await?;
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
pub async fn migrate_down(store: &Store, steps: usize, force: bool) -> anyhow::Result<i64> {
    let applied = store.applied_versions().await?;
    let target = migrate_down_target(&applied, steps);
    let crosses_billing = applied.contains(&BILLING_COLUMNS_VERSION) && target < BILLING_COLUMNS_VERSION;
    if crosses_billing && !force {
        let mapped = store.count_tenants_with_customers().await?;
        if mapped > 0 {
            bail!(
                "{mapped} tenants have a Stripe customer id; reverting the billing columns drops \
                 the only tenant-to-customer mapping. Use --force to do it anyway."
            );
        }
    }
    store.migrate_down_to(target).await?;
    Ok(target)
}

/// The version left after reverting the newest `steps` applied migrations.
pub fn migrate_down_target(applied: &[i64], steps: usize) -> i64 {
    if steps >= applied.len() { 0 } else { applied[applied.len() - steps - 1] }
}
