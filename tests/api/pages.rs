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
