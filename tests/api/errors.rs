//! Bad input always gets the error shape with a 4xx, never a 500.

use reqwest::StatusCode;

use crate::helpers::{SERVICE_TOKEN, error_of, spawn_app};

#[tokio::test]
async fn bad_input_gets_the_error_shape_not_a_500() {
    let app = spawn_app().await;
    let huge_id = "a".repeat(10_000);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        // a bad body
        (
            app.client
                .put(app.url("/api/tenants/t1"))
                .bearer_auth(SERVICE_TOKEN)
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.client
                .put(app.url("/api/tenants/t1"))
                .bearer_auth(SERVICE_TOKEN)
                .json(&serde_json::json!({"name": 7})),
            StatusCode::BAD_REQUEST,
        ),
        // a field no route knows (as everywhere else)
        (
            app.client
                .put(app.url("/api/tenants/t1"))
                .bearer_auth(SERVICE_TOKEN)
                .json(&serde_json::json!({"name": "Acme", "billing_emial": "typo@acme.test"})),
            StatusCode::BAD_REQUEST,
        ),
        // over the 1 MiB body limit: still our shape
        (
            app.client
                .post(app.url("/api/webhooks/stripe"))
                .header("stripe-signature", "t=1,v1=00")
                .body(vec![b'x'; 1024 * 1024 + 1]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            app.client.put(app.url("/api/tenants/t1")).bearer_auth(SERVICE_TOKEN).body("name=x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.client
                .post(app.url("/api/tenants/t1/usage/fix/reserve"))
                .bearer_auth(SERVICE_TOKEN)
                .body("[1,2"),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.client
                .post(app.url("/api/tenants/t1/usage/fix/reserve"))
                .bearer_auth(SERVICE_TOKEN)
                .body(r#"{"ttl_seconds": 5}"#),
            StatusCode::BAD_REQUEST,
        ),
        // a wrong metric name
        (
            app.client.post(app.url("/api/tenants/t1/usage/deploy/reserve")).bearer_auth(SERVICE_TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        // a huge id
        (
            app.client
                .post(app.url(&format!("/api/tenants/{huge_id}/usage/fix/reserve")))
                .bearer_auth(SERVICE_TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.client
                .put(app.url(&format!("/api/tenants/{huge_id}")))
                .bearer_auth(SERVICE_TOKEN)
                .json(&serde_json::json!({"name": "x"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.client
                .post(app.url(&format!("/api/usage/reservations/{huge_id}/commit")))
                .bearer_auth(SERVICE_TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        // an unknown reservation id
        (
            app.client
                .post(app.url("/api/usage/reservations/res_doesnotexist/commit"))
                .bearer_auth(SERVICE_TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            app.client
                .post(app.url("/api/usage/reservations/res_doesnotexist/release"))
                .bearer_auth(SERVICE_TOKEN),
            StatusCode::NOT_FOUND,
        ),
        // an unknown route and a wrong method
        (app.client.get(app.url("/api/nothing-here")), StatusCode::NOT_FOUND),
        (app.client.get(app.url("/api/webhooks/stripe")), StatusCode::METHOD_NOT_ALLOWED),
        // `.` is resolved by the client: this is `/api/tenants/access`, a PUT-only path.
        (app.client.get(app.url("/api/tenants/./access")), StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (request, status) in cases {
        let request = request.build().unwrap();
        let what =
            format!("{} {}", request.method(), &request.url().path()[..request.url().path().len().min(60)]);
        let response = app.client.execute(request).await.unwrap();
        assert_eq!(response.status(), status, "{what}");
        let error = error_of(response, status).await;
        assert_ne!(error["code"], "internal_error", "{what}");
    }
}

/// A path that exists under another method keeps HTTP's 405 and `Allow`, in the one error shape.
#[tokio::test]
async fn a_wrong_method_gets_405_with_allow_in_the_error_shape() {
    let app = spawn_app().await;
    let response = app.client.delete(app.url("/api/webhooks/stripe")).send().await.unwrap();
    let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
    let error = error_of(response, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(error["code"], "invalid_request");
    assert_eq!(error["message"], "this endpoint does not accept DELETE");
    assert_eq!(allow.as_deref(), Some("POST"));
}

/// A body over the 1 MiB limit is answered 413 in the one error shape (`invalid_request`: the
/// caller must change the request), on a JSON route and on the webhook route alike.
#[tokio::test]
async fn an_oversized_body_is_refused_cleanly() {
    let app = spawn_app().await;
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let json_route = app
        .client
        .put(app.url("/api/tenants/t1"))
        .bearer_auth(SERVICE_TOKEN)
        .header("content-type", "application/json")
        .body(big.clone());
    let webhook = app
        .client
        .post(app.url("/api/webhooks/stripe"))
        .header("stripe-signature", "t=1,v1=00")
        .header("content-type", "application/json")
        .body(big);
    for (what, request) in [("POST /api/webhooks/stripe", webhook), ("PUT /api/tenants/t1", json_route)] {
        let r = request.send().await.unwrap();
        let status = r.status();
        let json_answer = r.headers().get("content-type").is_some_and(|v| v == "application/json");
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{what}: {text}");
        assert!(json_answer, "{what}: {text}");
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{what}: {text}");
        assert!(body["error"]["message"].is_string(), "{what}: {text}");
    }
    assert!(app.db.tenant("t1").await.unwrap().is_none(), "nothing stored");
    assert!(app.db.list_events(None, 10).await.unwrap().is_empty(), "nothing stored");
}

/// An admin's reason is written to the audit log: one with a NUL (which PostgreSQL cannot store)
/// is refused with 400 in the error shape, and neither the plan nor the audit log changes.
#[tokio::test]
async fn an_admin_reason_with_a_nul_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    app.put_tenant("t1", &serde_json::json!({"name": "Acme"})).await;
    let before = app.snapshot("t1").await;
    for body in [
        serde_json::json!({"plan_tier": "enterprise", "reason": "contract\u{0}2027"}),
        serde_json::json!({"plan_tier": "enterprise", "reason": "\u{0}"}),
        serde_json::json!({"plan_tier": "enterprise", "reason": "contract 2027\u{0}",
                           "contract_ends_at": "2027-01-01T00:00:00Z"}),
        serde_json::json!({"plan_tier": null, "reason": "\u{0}removed"}),
    ] {
        let r = app.set_plan("t1", &body).await;
        let error = error_of(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(error["code"], "invalid_request", "{body}");
        assert!(error["message"].as_str().unwrap().contains("reason"), "{body}: {error}");
        assert_eq!(app.snapshot("t1").await, before, "nothing written for {body}");
    }
    // The same request without the NUL is written: the snapshot sees the audit log change.
    let r =
        app.set_plan("t1", &serde_json::json!({"plan_tier": "enterprise", "reason": "contract 2027"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(app.snapshot("t1").await, before);
}

/// Text a database cannot hold (a NUL) is refused at the edge with 400 (or 401 for a token), on
/// SQLite and PostgreSQL alike, never stored and never a 5xx.
#[tokio::test]
async fn a_nul_byte_anywhere_is_refused_at_the_edge() {
    let app = spawn_app().await;
    let named = app
        .client
        .put(app.url("/api/tenants/t1"))
        .bearer_auth(SERVICE_TOKEN)
        .json(&serde_json::json!({"name": "Ac\u{0}me"}))
        .send()
        .await
        .unwrap();
    error_of(named, StatusCode::BAD_REQUEST).await;
    let reservation = app
        .client
        .get(app.url("/api/billing/usage/reservations/res%00x"))
        .bearer_auth(app.tenant_token("t1"))
        .send()
        .await
        .unwrap();
    error_of(reservation, StatusCode::BAD_REQUEST).await;
    let token = app.tenant_token("t\u{0}1");
    let status = app.client.get(app.url("/api/billing/status")).bearer_auth(token).send().await.unwrap();
    error_of(status, StatusCode::UNAUTHORIZED).await;
    let event = serde_json::json!({"id": "evt_\u{0}", "type": "invoice.paid", "created": 1, "livemode": false,
                                   "data": {"object": {"object": "invoice", "customer": "cus_1"}}});
    assert_eq!(app.deliver(&event).await, StatusCode::BAD_REQUEST, "not 503: Stripe would retry for days");
    // The customer an event names is stored beside it: a NUL there is no more Stripe's.
    let event = serde_json::json!({"id": "evt_nul_customer", "type": "invoice.paid", "created": 1,
                                   "livemode": false,
                                   "data": {"object": {"object": "invoice", "customer": "cus_\u{0}1"}}});
    assert_eq!(app.deliver(&event).await, StatusCode::BAD_REQUEST, "not 503: Stripe would retry for days");
    assert!(app.db.list_events(None, 10).await.unwrap().is_empty(), "nothing stored");
}
