//! Reversible migrations: down then up from every version, and the guard on the billing columns.

use hydra_billing::cli::migrate_down;
use hydra_billing::store::MIGRATIONS;
use serde_json::json;

use crate::helpers::{fresh_db, spawn_app};

#[tokio::test]
async fn down_then_up_works_from_every_version() {
    let test_db = fresh_db().await;
    let db = &test_db.db;
    let last = MIGRATIONS.last().unwrap().0;
    for (version, _, _, _) in MIGRATIONS {
        db.migrate_up_to(*version).await.unwrap();
        assert_eq!(db.applied_versions().await.unwrap().last(), Some(version));
        migrate_down(db, 1, false).await.unwrap();
        assert_eq!(db.applied_versions().await.unwrap().last().copied().unwrap_or(0), version - 1);
        db.migrate_up_to(*version).await.unwrap();
    }
    // The full round trip: all the way down, then all the way up.
    migrate_down(db, MIGRATIONS.len(), false).await.unwrap();
    assert!(db.applied_versions().await.unwrap().is_empty());
    db.migrate_up().await.unwrap();
    assert_eq!(db.applied_versions().await.unwrap().last(), Some(&last));
}

#[tokio::test]
async fn the_billing_columns_apply_to_a_populated_tenants_table() {
    let test_db = fresh_db().await;
    let db = &test_db.db;
    db.migrate_up_to(1).await.unwrap();
    hydra_billing::with_db!(db, |pool| {
        sqlx::query("INSERT INTO tenants (id, name, created_at, updated_at) VALUES ('old', 'Old', 1, 1)")
            .execute(pool)
            .await
            .map(|_| ())
    })
    .unwrap();
    db.migrate_up().await.unwrap();
    let row = db.tenant("old").await.unwrap().unwrap();
    assert_eq!(row.plan_tier, "free");
    assert_eq!(row.free_tier_fixes_used, 0);
    assert!(!row.cancel_at_period_end);
}

#[tokio::test]
async fn reverting_the_billing_columns_refuses_while_tenants_have_customers() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    app.store_subscription("t1", "team", "active", 0).await;
    // Down to version 1 crosses the billing columns (version 2).
    let steps = MIGRATIONS.len() - 1;
    let err = migrate_down(&app.db, steps, false).await.unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(app.db.applied_versions().await.unwrap().len(), MIGRATIONS.len(), "nothing was reverted");
    assert_eq!(migrate_down(&app.db, steps, true).await.unwrap(), 1);
}

/// Every index a migration creates exists in the database once migrated (on SQLite and
/// PostgreSQL alike), and a full revert leaves none of them.
#[tokio::test]
async fn every_index_the_migrations_declare_exists() {
    let test_db = fresh_db().await;
    let db = &test_db.db;
    let declared: Vec<String> = MIGRATIONS
        .iter()
        .flat_map(|(_, _, up, _)| up.lines())
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("CREATE ")?;
            let rest = rest.strip_prefix("UNIQUE ").unwrap_or(rest);
            Some(rest.strip_prefix("INDEX ")?.split_whitespace().next()?.to_owned())
        })
        .collect();
    assert!(declared.len() >= 10, "the migrations declare their indexes: {declared:?}");
    let present = || async {
        let rows: Vec<(String,)> = hydra_billing::with_db!(db, |pool| {
            sqlx::query_as(if db.kind() == "sqlite" {
                "SELECT name FROM sqlite_master WHERE type = 'index'"
            } else {
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            })
            .fetch_all(pool)
            .await
        })
        .unwrap();
        rows.into_iter().map(|(n,)| n).collect::<Vec<_>>()
    };
    db.migrate_up().await.unwrap();
    let indexes = present().await;
    for name in &declared {
        assert!(indexes.contains(name), "{name} is missing: {indexes:?}");
    }
    migrate_down(db, MIGRATIONS.len(), false).await.unwrap();
    let left = present().await;
    assert!(declared.iter().all(|n| !left.contains(n)), "a full revert drops them: {left:?}");
}
