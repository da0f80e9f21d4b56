//! Who may call what: tenant tokens (bearer or cookie), service and admin tokens.

use hydra_billing::http::auth::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{SERVICE_TOKEN, error_of, json, spawn_app};

#[tokio::test]
async fn tenant_calls_without_a_token_are_unauthorized() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/api/billing/status")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await["code"], "unauthorized");
}

#[tokio::test]
async fn a_token_with_a_bad_signature_is_unauthorized() {
    let app = spawn_app().await;
    let token = app.tenant_token("t1");
    let (rest, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{rest}.{flipped}{}", &signature[1..]);
    let r = app.client.get(app.url("/api/billing/status")).bearer_auth(forged).send().await.unwrap();
    error_of(r, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn an_expired_token_is_unauthorized() {
    let app = spawn_app().await;
    let token = app.tenant_token_with("t1", Role::Member, 600);
    let ok = app.client.get(app.url("/api/billing/status")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    app.clock.advance(600 + 61);
    let r = app.client.get(app.url("/api/billing/status")).bearer_auth(&token).send().await.unwrap();
    error_of(r, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn tenant_a_reading_b_gets_not_found() {
    let app = spawn_app().await;
    let reservation = json(app.reserve("tenant-b", "fix").await).await;
    let id = reservation["reservation_id"].as_str().unwrap();
    let path = format!("/api/billing/usage/reservations/{id}");
    let own = app.client.get(app.url(&path)).bearer_auth(app.tenant_token("tenant-b")).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(json(own).await["metric"], "fix");
    let other =
        app.client.get(app.url(&path)).bearer_auth(app.tenant_token("tenant-a")).send().await.unwrap();
    error_of(other, StatusCode::NOT_FOUND).await;
    // And a status call only ever describes the caller's own tenant.
    let status = json(app.status("tenant-a").await).await;
    assert_eq!(status["tenant_id"], "tenant-a");
    assert_eq!(status["usage"]["fix"]["used"], 0);
}

#[tokio::test]
async fn the_session_cookie_authenticates_reads() {
    let app = spawn_app().await;
    let cookie = format!("other=1; hydra_session={}", app.tenant_token("t1"));
    let r = app.client.get(app.url("/api/billing/status")).header("cookie", cookie).send().await.unwrap();
    assert_eq!(json(r).await["tenant_id"], "t1");
}

#[tokio::test]
async fn service_endpoints_refuse_tenant_tokens_and_wrong_service_tokens() {
    let app = spawn_app().await;
    let url = app.url("/api/tenants/t1/usage/fix/reserve");
    let r = app.client.post(&url).bearer_auth(app.tenant_token("t1")).send().await.unwrap();
    error_of(r, StatusCode::UNAUTHORIZED).await;
    let r = app.client.post(&url).bearer_auth(format!("{SERVICE_TOKEN}x")).send().await.unwrap();
    error_of(r, StatusCode::UNAUTHORIZED).await;
    let r = app.client.put(app.url("/api/tenants/t1")).json(&json!({"name": "x"})).send().await.unwrap();
    error_of(r, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_rotated_service_token_is_accepted_alongside_the_old_one() {
    let new_token = "fake-service-token-rotated-0123456789";
    let app = crate::helpers::spawn_app_with(|env| {
        env.insert("HYDRA_SERVICE_TOKEN".into(), format!("{SERVICE_TOKEN},{new_token}"));
    })
    .await;
    for token in [SERVICE_TOKEN, new_token] {
        let r = app
            .client
            .get(app.url("/api/tenants/t1/access?feature=jira"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
