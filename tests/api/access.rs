//! `GET /api/tenants/{id}/access`: the rule table and feature matrix served over HTTP.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DAY, START, error_of, json, spawn_app};

#[tokio::test]
async fn an_unknown_tenant_is_answered_as_a_new_free_tenant() {
    let app = spawn_app().await;
    let body = json(app.access("never-announced", "feature=workflows").await).await;
    assert_eq!(body["allowed"], true);
    assert_eq!(body["plan_tier"], "free");
    let body = json(app.access("never-announced", "feature=jira").await).await;
    assert_eq!(body["allowed"], false);
    assert_eq!(body["reason"], "feature_not_in_plan");
    assert_eq!(body["required_tier"], "business");
    assert_eq!(body["upgrade_url"], "http://billing.test/billing/upgrade");
}

#[tokio::test]
async fn team_connects_five_repositories_not_six() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    app.store_subscription("t1", "team", "active", START + 30 * DAY).await;
    assert_eq!(json(app.access("t1", "feature=connected_repos&count=5").await).await["allowed"], true);
    let body = json(app.access("t1", "feature=connected_repos&count=6").await).await;
    assert_eq!(body["allowed"], false);
    assert_eq!(body["reason"], "repo_limit_reached");
    assert_eq!(json(app.access("t1", "feature=jira").await).await["allowed"], false);
    assert_eq!(json(app.access("t1", "feature=seats&count=3").await).await["allowed"], true);
    assert_eq!(json(app.access("t1", "feature=seats&count=4").await).await["reason"], "seat_limit_reached");
}

#[tokio::test]
async fn business_has_jira_and_enterprise_features_stay_locked() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    app.store_subscription("t1", "business", "active", START + 30 * DAY).await;
    for feature in ["jira", "audit_logs", "usage_reporting", "priority_queue"] {
        assert_eq!(
            json(app.access("t1", &format!("feature={feature}")).await).await["allowed"],
            true,
            "{feature}"
        );
    }
    for feature in ["sso", "rbac", "vpc"] {
        let body = json(app.access("t1", &format!("feature={feature}")).await).await;
        assert_eq!(body["allowed"], false, "{feature}");
        assert_eq!(body["required_tier"], "enterprise");
    }
}

#[tokio::test]
async fn past_due_keeps_access_through_grace_then_falls_to_free() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    app.store_subscription("t1", "business", "past_due", START + 30 * DAY).await;
    app.exec("UPDATE tenants SET grace_started_at = 1767225600 WHERE id = $1", "t1").await;
    app.clock.advance(7 * DAY - 1);
    let body = json(app.access("t1", "feature=jira").await).await;
    assert_eq!(body["allowed"], true);
    assert_eq!(body["grace_ends_at"], "2026-01-08T00:00:00Z");
    app.clock.advance(1);
    let body = json(app.access("t1", "feature=jira").await).await;
    assert_eq!(body["allowed"], false);
    assert_eq!(body["plan_tier"], "free");
    assert_eq!(body["reason"], "past_due_grace_ended");
    let status = json(app.status("t1").await).await;
    assert_eq!(status["access"]["allowed"], false);
    assert_eq!(status["access"]["reason"], "past_due_grace_ended");
    assert_eq!(status["usage"]["fix"]["limit"], 5, "free quotas apply again");
}

#[tokio::test]
async fn bad_access_queries_get_clear_errors() {
    let app = spawn_app().await;
    let e = error_of(app.access("t1", "feature=teleport").await, StatusCode::BAD_REQUEST).await;
    assert!(e["message"].as_str().unwrap().contains("workflows"));
    error_of(app.access("t1", "").await, StatusCode::BAD_REQUEST).await;
    error_of(app.access("t1", "feature=connected_repos").await, StatusCode::BAD_REQUEST).await;
    error_of(app.access("t1", "feature=seats&count=-1").await, StatusCode::BAD_REQUEST).await;
    error_of(app.access("t1", "feature=seats&count=many").await, StatusCode::BAD_REQUEST).await;
}

/// Stripe's Entitlements at work: a feature attached in Stripe to the Team product opens it for
/// Team tenants (no deploy), and a Business tenant whose entitlements list is empty keeps every
/// feature the tier table gives it.
#[tokio::test]
async fn a_feature_stripe_grants_to_a_plan_opens_it_and_an_empty_grant_takes_nothing_away() {
    let s = crate::helpers::spawn_with_stripe().await;
    let team_product = s.get(&format!("/v1/prices/{}", s.prices.team_monthly), &[]).await["product"]
        .as_str()
        .unwrap()
        .to_owned();
    let jira =
        s.post("/v1/entitlements/features", &[("name", "Jira integration"), ("lookup_key", "jira")]).await;
    s.post(
        &format!("/v1/products/{team_product}/features"),
        &[("entitlement_feature", jira["id"].as_str().unwrap())],
    )
    .await;
    let (team_customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let (business_customer, _) = s.tenant_with_customer("b1", "pm_card_visa").await;
    assert_eq!(json(s.app.access("t1", "feature=jira").await).await["allowed"], false, "free: nothing yet");
    s.subscribe(&team_customer, &s.prices.team_monthly, "2").await;
    s.subscribe(&business_customer, &s.prices.business_monthly, "2").await;
    for customer in [&team_customer, &business_customer] {
        for event in s.events_of(customer).await {
            assert_eq!(s.app.deliver(&event).await, StatusCode::OK);
        }
    }
    // A late summary for the Business customer, empty: it is synced, and takes nothing away.
    let late = json!({
        "id": "evt_late_summary", "object": "event", "type": "entitlements.active_entitlement_summary.updated",
        "created": START, "livemode": false,
        "data": {"object": {"object": "entitlements.active_entitlement_summary", "customer": business_customer,
                            "entitlements": {"object": "list", "data": [], "has_more": false}}},
    });
    assert_eq!(s.app.deliver(&late).await, StatusCode::OK);
    s.app.drain().await;
    assert_eq!(s.app.tenant("t1").await.entitlements.as_deref(), Some(r#"["jira"]"#));
    assert_eq!(s.app.tenant("b1").await.entitlements.as_deref(), Some("[]"));
    let team_jira = json(s.app.access("t1", "feature=jira").await).await;
    assert_eq!((team_jira["allowed"].as_bool(), team_jira["plan_tier"].as_str()), (Some(true), Some("team")));
    assert_eq!(
        json(s.app.access("t1", "feature=audit_logs").await).await["allowed"],
        false,
        "only what is granted"
    );
    for feature in ["jira", "audit_logs", "usage_reporting", "priority_queue"] {
        let answer = json(s.app.access("b1", &format!("feature={feature}")).await).await;
        assert_eq!(answer["allowed"], true, "Business keeps {feature} with an empty grant");
    }
    // A summary event that never arrived: reconciliation reads the entitlements too.
    let (lost_customer, _) = s.tenant_with_customer("r1", "pm_card_visa").await;
    s.subscribe(&lost_customer, &s.prices.team_monthly, "1").await;
    assert_eq!(
        json(s.app.access("r1", "feature=jira").await).await["allowed"],
        false,
        "nothing delivered yet"
    );
    s.app.state.reconcile(Some("r1"), "test").await.unwrap();
    assert_eq!(s.app.tenant("r1").await.entitlements.as_deref(), Some(r#"["jira"]"#));
    assert_eq!(json(s.app.access("r1", "feature=jira").await).await["allowed"], true);
}
