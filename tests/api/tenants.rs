//! `PUT /api/tenants/{id}`: Hydra announces tenants; new ones are free.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_of, json, spawn_app};

#[tokio::test]
async fn a_new_tenant_is_created_free_then_updated() {
    let app = spawn_app().await;
    let r = app.put_tenant("acme", &json!({"name": "Acme", "billing_email": "billing@acme.test"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = json(r).await;
    assert_eq!(body["plan_tier"], "free");
    let r = app.put_tenant("acme", &json!({"name": "Acme Corp", "billing_email": "ap@acme.test"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let row = app.tenant("acme").await;
    assert_eq!(row.name, "Acme Corp");
    assert_eq!(row.billing_email.as_deref(), Some("ap@acme.test"));
    assert_eq!(row.plan_tier, "free");
    assert_eq!(row.free_tier_reset_at, None);
}

#[tokio::test]
async fn tenant_ids_and_bodies_are_validated() {
    let app = spawn_app().await;
    for id in ["-x", "a%20b", "%C3%BC"] {
        let e = error_of(app.put_tenant(id, &json!({"name": "x"})).await, StatusCode::BAD_REQUEST).await;
        assert!(e["message"].as_str().unwrap().contains("tenant id"), "{id}");
    }
    error_of(
        app.put_tenant("t1", &json!({"name": "x", "billing_email": "not-an-email"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    error_of(app.put_tenant("t1", &json!({"name": "x".repeat(201)})).await, StatusCode::BAD_REQUEST).await;
    error_of(app.put_tenant("t1", &json!({})).await, StatusCode::BAD_REQUEST).await;
}
