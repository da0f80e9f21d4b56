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
        assert!(html.contains("Your session has ended"), "a session was sent: {path}");
        assert!(!html.contains("Demo controls"), "serve never links to the demo");
        // Someone who never signed in is not told a session ended.
        let first = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(first.status(), StatusCode::UNAUTHORIZED, "{path}");
        let html = first.text().await.unwrap();
        assert!(html.contains("choose Billing to sign in") && !html.contains("session has ended"), "{path}");
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
    assert!(html.contains(r#"data-testid="past-due-badge">Past due</span>"#), "{html}");

    // A cancellation: access until the period end, said with its date.
    app.exec(
        "UPDATE tenants SET stripe_subscription_status = 'active', grace_started_at = NULL, \
         cancel_at_period_end = TRUE WHERE id = $1",
        "t1",
    )
    .await;
    let html = page(&app, "/billing", "t1", false).await;
    assert!(html.contains("Your subscription ends on 1 February 2026: you keep Team until then"), "{html}");
    assert!(html.contains("Cancels on</dt><dd data-testid=\"renewal\">1 February 2026</dd>"), "{html}");
    assert!(html.contains(r#"id="resume""#), "a scheduled cancellation can be taken back: {html}");
    assert!(!html.contains("Change seats or plan"), "no dead end while it is set to cancel");

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
    assert!(
        html.contains("resumed (Plan &#38; usage, Resume subscription)")
            || html.contains("resumed (Plan &amp; usage"),
        "{html}"
    );

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

/// A checkout reference that is not one: a page that says so in plain words, not an error code.
#[tokio::test]
async fn a_bad_checkout_reference_says_there_is_nothing_to_confirm() {
    let app = spawn_app().await;
    app.put_tenant("t1", &serde_json::json!({"name": "Acme"})).await;
    let r = app
        .client
        .get(app.url("/billing/success?session_id=bogus123&plan=team"))
        .header("cookie", format!("hydra_session={}", app.tenant_token("t1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(
        html.contains("We couldn&#39;t find that checkout")
            || html.contains("We couldn't find that checkout"),
        "{html}"
    );
    assert!(!html.contains("bogus123"), "the reference is not echoed back as an error");
}

/// After a plan ended: when and why in the notice, and one action that sets the upgrade page to
/// what the team had (its tier, interval and seats).
#[tokio::test]
async fn a_lapsed_team_is_told_when_its_plan_ended_and_can_restore_it_in_one_step() {
    let app = spawn_app().await;
    app.put_tenant("gone", &serde_json::json!({"name": "Gone Inc"})).await;
    app.exec(
        "UPDATE tenants SET stripe_customer_id = 'cus_gone', stripe_subscription_id = 'sub_gone', \
         stripe_subscription_status = 'canceled', plan_tier = 'business', stripe_seat_count = 12, \
         stripe_interval = 'year', stripe_current_period_end = 1767139200 WHERE id = $1",
        "gone",
    )
    .await;
    let html = page(&app, "/billing", "gone", false).await;
    assert!(
        html.contains("Your Business subscription ended on 31 December 2025; your team is on Free."),
        "{html}"
    );
    assert!(
        html.contains(r#"href="/billing/upgrade?tier=business&#38;interval=year&#38;seats=12" data-testid="restore">Restore Business, 12 seats</a>"#),
        "{html}"
    );
    let upgrade = page(&app, "/billing/upgrade?tier=business&interval=year&seats=12", "gone", false).await;
    assert!(upgrade.contains(r#"value="business" "#) || upgrade.contains(r#"value="business""#));
    assert!(upgrade.contains(r#"value="12""#), "the seats it had: {upgrade}");
    assert!(upgrade.contains(r#"value="year" checked"#), "{upgrade}");

    // Cancelled by Stripe after payments failed: the notice says so.
    app.exec("UPDATE tenants SET cancellation_reason = 'payment_failed' WHERE id = $1", "gone").await;
    let html = page(&app, "/billing", "gone", false).await;
    assert!(html.contains("was cancelled because its payments failed"), "{html}");

    // Still past due, a week after the first failure: on Free since the grace period ended.
    app.exec(
        "UPDATE tenants SET stripe_subscription_status = 'past_due', cancellation_reason = NULL, \
         grace_started_at = 1766361600 WHERE id = $1",
        "gone",
    )
    .await;
    let html = page(&app, "/billing", "gone", false).await;
    assert!(html.contains("kept failing, so your team is on Free since 29 December 2025."), "{html}");
}

/// A subscriber's page says what it pays: price, next charge (less any credit), the card, the
/// billing email and the last invoices with Stripe's links; a failed renewal shows what is owed;
/// with Stripe slow the page still answers in time, says what it cannot show, and loses nothing
/// else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_page_shows_what_it_pays_and_copes_without_stripe() {
    // Through a proxy that can make Stripe slow; the rows follow Stripe by reconciling.
    let (mut s, proxy) = crate::helpers::spawn_with_stripe_proxy().await;
    s.observe_by_reconcile = true;
    let (customer, clock) = s.tenant_with_customer("acct", "pm_card_visa").await;
    let sub = s.subscribe(&customer, &s.prices.team_monthly, "3").await;
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    s.settle("acct", "subscribed", |r| r.plan_tier == "team").await;
    let end = s.app.tenant("acct").await.stripe_current_period_end.unwrap();
    let renews = chrono::DateTime::from_timestamp(end, 0).unwrap().format("%-d %B %Y").to_string();
    let html = page(&s.app, "/billing", "acct", false).await;
    for shown in [
        r#"data-testid="price">$60.00 per month (3 × $20.00)</dd>"#.to_owned(),
        format!(r#"data-testid="next-charge">$60.00 on {renews}</dd>"#),
        r#"data-testid="card">Visa •4242</dd>"#.to_owned(),
        r#"data-testid="billing-email">billing@acct.test</dd>"#.to_owned(),
        "<td class=\"num\">$60.00</td><td>Paid</td>".to_owned(),
    ] {
        assert!(html.contains(&shown), "{shown} missing from {html}");
    }
    assert!(html.contains(r#"rel="noopener" target="_blank""#), "each invoice links to Stripe's page");

    // Fewer seats: the unused time comes back as a credit, and the next charge is smaller.
    let item = sub["items"]["data"][0]["id"].as_str().unwrap().to_owned();
    s.post(
        &format!("/v1/subscriptions/{sub_id}"),
        &[("items[0][id]", &item), ("items[0][quantity]", "1"), ("proration_behavior", "always_invoice")],
    )
    .await;
    s.settle("acct", "1 seat", |r| r.stripe_seat_count == Some(1)).await;
    let html = page(&s.app, "/billing", "acct", false).await;
    assert!(html.contains("credit, taken off your next invoices."), "{html}");
    assert!(
        html.contains(&format!(
            r#"data-testid="next-charge">$0.00 on {renews} (after your $20.00 credit)</dd>"#
        )),
        "{html}"
    );

    // A renewal that fails: the amount owed.
    s.card_starts_failing(&customer, &sub_id).await;
    s.post(
        &format!("/v1/subscriptions/{sub_id}"),
        &[("items[0][id]", &item), ("items[0][quantity]", "4"), ("proration_behavior", "none")],
    )
    .await;
    s.advance(&clock, end + 3600 + 60).await;
    s.app.clock.set(end + 3600 + 60);
    s.settle("acct", "past due", |r| r.stripe_subscription_status.as_deref() == Some("past_due")).await;
    let html = page(&s.app, "/billing", "acct", false).await;
    assert!(html.contains(r#"data-testid="past-due-badge">Past due</span>"#), "{html}");
    assert!(html.contains(r#"data-testid="owed">$"#), "what the failed renewal asks for: {html}");
    assert!(html.contains(r#"id="update-card""#), "and the way to pay it");

    // Stripe answering in 5 s: the page answers within its 2 s deadline, without the card and
    // invoices.
    proxy.set_latency(std::time::Duration::from_secs(5));
    let started = std::time::Instant::now();
    let html = page(&s.app, "/billing", "acct", false).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(html.contains(r#"data-testid="account-unavailable""#), "{html}");
    assert!(html.contains(r#"data-testid="plan-badge">Team</span>"#), "the plan still shows");
    assert!(html.contains(r#"data-testid="billing-email">billing@acct.test</dd>"#));
}
