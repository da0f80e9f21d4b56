//! The parts of the billing UI served so far (issue 6): the upgrade-prompt element and its page.

use reqwest::StatusCode;

use crate::helpers::spawn_app;

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
    assert_eq!(r.headers()["content-security-policy"], "frame-ancestors 'none'");
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
