//! The billing UI over plain HTTP (issue 6): the upgrade-prompt element and its page, the session
//! cookie, and what the server renders into each page (the browser tests drive them in Chromium).

use reqwest::StatusCode;

use serde_json::json;

use crate::helpers::{DAY, START, TestApp, spawn_app, spawn_app_with};

const REASONS: [&str; 5] = ["fix_limit", "doc_run_limit", "cycle_limit", "repo_limit", "jira"];

#[tokio::test]
async fn the_upgrade_prompt_is_one_script_that_calls_nothing_and_writes_only_text() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/billing/upgrade-prompt.js")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let js = r.text().await.unwrap();
    assert!(js.contains(r#"customElements.define("hydra-upgrade-prompt""#));
    for reason in REASONS {
        assert!(js.contains(&format!("{reason}:")), "copy for {reason}");
    }
    assert!(js.contains("/billing/upgrade"), "the call to action leads to the upgrade page");
    // No credentialed API calls and no markup built from attributes.
    for forbidden in
        ["fetch(", "XMLHttpRequest", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"]
    {
        assert!(!js.contains(forbidden), "the element must not use {forbidden}");
    }
}

#[tokio::test]
async fn a_page_shows_every_prompt_variant_with_the_page_security_headers() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/billing/upgrade-prompt")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_page_headers(&r);
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<script src="/billing/upgrade-prompt.js""#));
    for reason in REASONS {
        assert!(html.contains(&format!(r#"<hydra-upgrade-prompt reason="{reason}""#)), "variant {reason}");
    }
}

#[tokio::test]
async fn a_session_post_sets_the_cookie_and_redirects_only_on_this_site() {
    let app = spawn_app().await;
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let token = app.tenant_token("t1");
    let r = no_redirect
        .post(app.url("/billing/session"))
        .form(&[("token", token.as_str()), ("next", "/billing/upgrade")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/billing/upgrade");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with(&format!("hydra_session={token};")), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "PUBLIC_URL is http in tests");
    // The cookie then authenticates tenant calls.
    let status = app
        .client
        .get(app.url("/api/billing/status"))
        .header("cookie", format!("hydra_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    // Elsewhere is never followed; a bad token sets nothing.
    let r = no_redirect
        .post(app.url("/billing/session"))
        .form(&[("token", token.as_str()), ("next", "//evil.example/x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/billing");
    let r = no_redirect.post(app.url("/billing/session")).form(&[("token", "forged")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    let r = no_redirect.post(app.url("/billing/session")).form(&[("nothing", "here")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

fn assert_page_headers(r: &reqwest::Response) {
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
}

/// A page as the tenant's billing admin (`Role::Member` when `member`) sees it.
async fn page(app: &TestApp, path: &str, tenant: &str, member: bool) -> String {
    let role = if member {
        hydra_billing::http::auth::Role::Member
    } else {
        hydra_billing::http::auth::Role::BillingAdmin
    };
    let r = app
        .client
        .get(app.url(path))
        .header("cookie", format!("hydra_session={}", app.tenant_token_with(tenant, role, 3600)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    assert_page_headers(&r);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    r.text().await.unwrap()
}

#[tokio::test]
async fn pages_without_a_session_ask_to_sign_in_and_show_nothing_else() {
    let app = spawn_app().await;
    for path in ["/billing", "/billing/upgrade", "/billing/success?session_id=cs_x"] {
        let r = app.client.get(app.url(path)).header("cookie", "hydra_session=forged").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_page_headers(&r);
        let html = r.text().await.unwrap();
        assert!(html.contains("Please sign in"), "{path}");
        assert!(!html.contains("Demo controls"), "serve never links to the demo");
    }
    // The demo's own routes do not exist outside `demo`.
    for path in ["/demo", "/"] {
        assert_eq!(
            app.client.get(app.url(path)).send().await.unwrap().status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn what_a_tenant_wrote_is_escaped_on_every_page() {
    let app = spawn_app().await;
    let name = "<script>alert(1)</script>\"&'";
    app.put_tenant("t1", &json!({"name": name})).await;
    for path in ["/billing", "/billing/upgrade"] {
        let html = page(&app, path, "t1", false).await;
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;") || html.contains("&lt;script&gt;"),
            "{path}"
        );
        assert!(!html.contains("<script>alert"), "{path}");
    }
}

#[tokio::test]
async fn a_free_page_shows_each_quota_and_when_it_resets() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.run("t1", "fix").await;
    }
    app.clock.advance(10 * DAY);
    let html = page(&app, "/billing", "t1", false).await;
    assert!(html.contains(r#"<span data-testid="usage-fix">3 / 5</span>"#));
    assert!(html.contains(r#"<span data-testid="usage-doc_run">0 / 1</span>"#));
    assert!(html.contains(r#"aria-valuenow="3""#));
    assert!(html.contains("Your free runs reset in 20 days, on 31 January 2026."), "{html}");
    assert!(html.contains(r#"href="/billing/upgrade">Upgrade</a>"#));
}

#[tokio::test]
async fn a_paid_page_shows_plan_seats_renewal_and_notices_with_dates() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Team One"})).await;
    app.store_subscription("t1", "team", "active", START + 31 * DAY).await;
    app.exec("UPDATE tenants SET stripe_interval = 'year' WHERE id = $1", "t1").await;
    let html = page(&app, "/billing", "t1", false).await;
    assert!(html.contains(r#"data-testid="plan-badge">Team</span>"#));
    assert!(html.contains(r#"data-testid="interval-badge">Annual</span>"#));
    assert!(html.contains(r#"<dd data-testid="seats">3</dd>"#));
    assert!(html.contains("Renews on</dt><dd data-testid=\"renewal\">1 February 2026</dd>"), "{html}");
    assert!(html.contains(r#"id="manage""#), "an admin can open the portal");

    // A failed payment: the tier is kept, with the date to fix it by.
    app.exec(
        "UPDATE tenants SET stripe_subscription_status = 'past_due', grace_started_at = 1767225600 WHERE id = $1",
        "t1",
    )
    .await;
    let html = page(&app, "/billing", "t1", false).await;
    assert!(
        html.contains("Your last payment didn&#39;t go through")
            || html.contains("Your last payment didn't go through")
    );
    assert!(html.contains("before 8 January 2026 to keep Team"), "{html}");
    assert!(html.contains("Pay by</dt><dd data-testid=\"renewal\">8 January 2026</dd>"), "{html}");

    // A cancellation: access until the period end, said with its date.
    app.exec(
        "UPDATE tenants SET stripe_subscription_status = 'active', grace_started_at = NULL, \
         cancel_at_period_end = TRUE WHERE id = $1",
        "t1",
    )
    .await;
    let html = page(&app, "/billing", "t1", false).await;
    assert!(html.contains("You keep Team until 1 February 2026"), "{html}");
    assert!(html.contains("Access until</dt><dd data-testid=\"renewal\">1 February 2026</dd>"));

    // A member sees the plan but cannot change it.
    let html = page(&app, "/billing", "t1", true).await;
    assert!(!html.contains(r#"id="manage""#));
    assert!(html.contains("Only a billing admin of your team can change billing."));
}

#[tokio::test]
async fn the_upgrade_page_offers_the_configured_prices_at_the_catalogue_amounts() {
    let app = spawn_app().await;
    let html = page(&app, "/billing/upgrade?tier=business&interval=year&seats=7&repos=9", "t1", false).await;
    let env = crate::helpers::test_env();
    for (price, cents) in [
        ("STRIPE_TEAM_MONTHLY_PRICE_ID", "data-monthly-cents=\"2000\""),
        ("STRIPE_TEAM_ANNUAL_PRICE_ID", "data-annual-cents=\"19200\""),
        ("STRIPE_BUSINESS_MONTHLY_PRICE_ID", "data-monthly-cents=\"4000\""),
        ("STRIPE_BUSINESS_ANNUAL_PRICE_ID", "data-annual-cents=\"38400\""),
    ] {
        assert!(html.contains(&format!("\"{}\"", env[price])), "{price}");
        assert!(html.contains(cents), "{cents}");
    }
    assert!(html.contains(r#"value="business" checked"#), "the link's tier is chosen");
    assert!(html.contains(r#"value="year" checked"#));
    assert!(html.contains(r#"value="7""#));
    assert!(html.contains("You have 9 repositories connected. Team includes 5"));
    assert!(!html.contains("disabled>Continue to checkout"), "an admin can check out");

    // Members see the prices but cannot buy; a frozen billing says so up front.
    let html = page(&app, "/billing/upgrade", "t1", true).await;
    assert!(html.contains("disabled>Continue to checkout"));
    let frozen = spawn_app_with(|e| {
        e.insert("BILLING_ENABLED".into(), "false".into());
    })
    .await;
    let html = page(&frozen, "/billing/upgrade", "t1", false).await;
    assert!(html.contains("Plan changes are paused for maintenance"));
    assert!(html.contains("disabled>Continue to checkout"));
}

#[tokio::test]
async fn a_subscriber_or_a_managed_plan_gets_the_right_upgrade_page() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "One"})).await;
    app.store_subscription("t1", "team", "active", START + 31 * DAY).await;
    let html = page(&app, "/billing/upgrade", "t1", false).await;
    assert!(html.contains(r#"id="seats-form""#) && html.contains(r#"id="preview-upgrade""#));
    assert!(!html.contains(r#"id="checkout-form""#), "no second subscription can be bought");

    app.exec("UPDATE tenants SET cancel_at_period_end = TRUE WHERE id = $1", "t1").await;
    let html = page(&app, "/billing/upgrade", "t1", false).await;
    assert!(!html.contains(r#"id="seats-form""#) && !html.contains(r#"id="checkout-form""#));
    assert!(html.contains("resumed in the"));

    app.put_tenant("t2", &json!({"name": "Two"})).await;
    let r = app.set_plan("t2", &json!({"plan_tier": "enterprise", "reason": "contract"})).await;
    assert!(r.status().is_success());
    let html = page(&app, "/billing/upgrade", "t2", false).await;
    assert!(html.contains("managed by your Hydra account team"));
    assert!(!html.contains(r#"id="checkout-form""#));
    let html = page(&app, "/billing", "t2", false).await;
    assert!(html.contains(r#"data-testid="plan-badge">Enterprise</span>"#));
}

/// Starts a Checkout for `tenant` (left open) and answers its session id and its success page path.
async fn open_checkout(s: &crate::helpers::WithStripe, tenant: &str) -> (String, String) {
    let body = json!({"price_id": s.prices.team_monthly, "quantity": 1});
    let started = crate::helpers::json(
        s.call(reqwest::Method::POST, "/api/billing/checkout", tenant, Some(body)).await,
    )
    .await;
    let session = started["session_id"].as_str().unwrap().to_owned();
    let path = format!("/billing/success?session_id={session}&plan=team");
    (session, path)
}

#[tokio::test]
async fn the_success_page_needs_a_session_id_and_says_when_checkout_did_not_finish() {
    let s = crate::helpers::spawn_with_stripe().await;
    s.app.put_tenant("t1", &json!({"name": "One"})).await;
    let token = s.app.tenant_token("t1");
    let get = |path: &str| {
        s.app.client.get(s.app.url(path)).header("cookie", format!("hydra_session={token}")).send()
    };
    assert_eq!(get("/billing/success").await.unwrap().status(), StatusCode::BAD_REQUEST);
    let (session, path) = open_checkout(&s, "t1").await;
    let r = get(&path).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("Your checkout isn&#39;t finished"));
    let r = get("/billing/success?session_id=cs_not_ours").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Paid: the page may say so (in the message it keeps for a slow provisioning).
    s.post(
        &format!("/v1/test_helpers/checkout/sessions/{session}/complete"),
        &[("payment_method", "pm_card_visa")],
    )
    .await;
    let r = get(&path).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("Your payment went through"), "{html}");
}

/// Each success page asks Stripe about the session, so reloading it spends the tenant's
/// 60-a-minute budget like the API does; past it the page skips the lookup and still waits.
#[tokio::test]
async fn reloading_the_success_page_spends_the_tenants_stripe_budget() {
    let s = crate::helpers::spawn_with_stripe().await;
    s.app.put_tenant("t1", &json!({"name": "One"})).await;
    let token = s.app.tenant_token("t1");
    let (_, path) = open_checkout(&s, "t1").await;
    let get = || s.app.client.get(s.app.url(&path)).header("cookie", format!("hydra_session={token}")).send();
    // The checkout call took one of the 60; the open session answers "isn't finished" while looked up.
    for _ in 0..59 {
        assert_eq!(get().await.unwrap().status(), StatusCode::CONFLICT);
    }
    let r = get().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "past the budget the page waits without asking Stripe");
    assert!(r.text().await.unwrap().contains("Provisioning takes a moment."));
    let r = s.call(reqwest::Method::POST, "/api/billing/portal", "t1", None).await;
    crate::helpers::error_of(r, StatusCode::TOO_MANY_REQUESTS).await;
}
