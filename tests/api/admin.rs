//! The admin override: a manual plan, always written to the billing audit log.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DAY, error_of, json, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_enterprise_plan_by_hand_grants_enterprise_features_and_is_audited() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    let r = app.set_plan("t1", &json!({"plan_tier": "enterprise", "reason": "contract #42"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json(r).await["plan_tier"], "enterprise");
    assert_eq!(json(app.access("t1", "feature=sso").await).await["allowed"], true);
    let audit = app.db.audit_log("t1").await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "ops@hydra.test");
    assert_eq!(audit[0].action, "manual_plan_set");
    assert_eq!(audit[0].reason.as_deref(), Some("contract #42"));
    let before: Value = serde_json::from_str(audit[0].before_state.as_deref().unwrap()).unwrap();
    let after: Value = serde_json::from_str(audit[0].after_state.as_deref().unwrap()).unwrap();
    assert!(before["manual_plan_tier"].is_null());
    assert_eq!(after["manual_plan_tier"], "enterprise");
}

#[tokio::test]
async fn a_manual_plan_ends_with_its_contract_and_can_be_removed() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    app.set_plan(
        "t1",
        &json!({"plan_tier": "business", "reason": "pilot", "contract_ends_at": "2026-01-11T00:00:00Z"}),
    )
    .await;
    let body = json(app.access("t1", "feature=jira").await).await;
    assert_eq!(body["access_until"], "2026-01-11T00:00:00Z");
    app.clock.advance(10 * DAY);
    let body = json(app.access("t1", "feature=jira").await).await;
    assert_eq!(body["allowed"], false);
    assert_eq!(body["reason"], "manual_plan_ended");
    let r = app.set_plan("t1", &json!({"plan_tier": null, "reason": "pilot over"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(app.tenant("t1").await.manual_plan_tier.is_none());
    let audit = app.db.audit_log("t1").await.unwrap();
    assert_eq!(
        audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        ["manual_plan_set", "manual_plan_removed"]
    );
}

#[tokio::test]
async fn plan_requests_are_validated() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    for body in [
        json!({"reason": "no tier given"}),
        json!({"plan_tier": "platinum", "reason": "x"}),
        json!({"plan_tier": "team", "reason": "  "}),
        json!({"plan_tier": "team", "reason": "x", "contract_ends_at": "tomorrow"}),
        json!({"plan_tier": "team", "reason": "x", "typo": 1}),
    ] {
        error_of(app.set_plan("t1", &body).await, StatusCode::BAD_REQUEST).await;
    }
    error_of(
        app.set_plan("nobody", &json!({"plan_tier": "team", "reason": "x"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(app.db.audit_log("t1").await.unwrap().is_empty());
}

#[tokio::test]
async fn admin_calls_need_the_admin_token() {
    let app = spawn_app().await;
    let url = app.url("/api/admin/tenants/t1/plan");
    let body = json!({"plan_tier": "team", "reason": "x"});
    let r = app.client.post(&url).json(&body).send().await.unwrap();
    error_of(r, StatusCode::UNAUTHORIZED).await;
    let r =
        app.client.post(&url).bearer_auth(crate::helpers::SERVICE_TOKEN).json(&body).send().await.unwrap();
    error_of(r, StatusCode::UNAUTHORIZED).await;
    // Without HYDRA_ADMIN_TOKEN the admin API is off for everyone.
    let off = spawn_app_with(|env| {
        env.remove("HYDRA_ADMIN_TOKEN");
    })
    .await;
    error_of(off.set_plan("t1", &body).await, StatusCode::UNAUTHORIZED).await;
}
