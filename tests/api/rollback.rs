//! `BILLING_ENABLED=false`: billing freezes and nobody loses a tier meanwhile.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DAY, START, json, spawn_app, spawn_app_on};

#[tokio::test]
async fn disabling_billing_freezes_access_and_enabling_resumes_it() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    app.store_subscription("t1", "team", "past_due", START + 30 * DAY).await;
    app.exec("UPDATE tenants SET grace_started_at = 1767225600 WHERE id = $1", "t1").await;
    app.clock.advance(DAY);
    let (db, clock) = app.into_db();

    // Restart with the switch off: the clock of the access rules stops here.
    let frozen = spawn_app_on(db, clock, |env| {
        env.insert("BILLING_ENABLED".into(), "false".into());
    })
    .await;
    frozen.clock.advance(30 * DAY);
    let body = json(frozen.access("t1", "feature=workflows").await).await;
    assert_eq!(body["plan_tier"], "team", "grace does not run out while billing is frozen");
    // Free quotas still apply to free tenants.
    for _ in 0..5 {
        frozen.run("free-one", "fix").await;
    }
    assert_eq!(frozen.reserve("free-one", "fix").await.status(), StatusCode::PAYMENT_REQUIRED);

    // A second start while still disabled keeps the first freeze time.
    let (db, clock) = frozen.into_db();
    let again = spawn_app_on(db, clock, |env| {
        env.insert("BILLING_ENABLED".into(), "false".into());
    })
    .await;
    assert_eq!(again.state.billing_disabled_since, Some(START + DAY));
    assert_eq!(json(again.access("t1", "feature=workflows").await).await["plan_tier"], "team");

    // Enabled again: the real clock applies and the grace period is over.
    let (db, clock) = again.into_db();
    let enabled = spawn_app_on(db, clock, |_| {}).await;
    let body = json(enabled.access("t1", "feature=workflows").await).await;
    assert_eq!(body["plan_tier"], "free");
    assert_eq!(body["reason"], serde_json::Value::Null, "workflows stay allowed on free");
}
