//! Operations and go-live (issue 8): Stripe set-up as code, the preflight checklist with each
//! seeded fault caught by name, and the reconcile job.

use std::path::Path;
use std::process::Command;

use hydra_billing::billing::preflight::{Check, Verdict};
use serde_json::json;

use crate::helpers::{TestApp, fresh_db, sim_call, spawn_app_listening};

/// A git repository with one clean commit, standing in for a checkout of the service.
fn throwaway_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@example.test", "-C"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(dir.path().join("README.md"), "test keys look like sk_test_fake_0123456789abcdefghij\n")
        .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "clean"]);
    dir
}

fn commit(repo: &Path, file: &str, text: &str) {
    std::fs::write(repo.join(file), text).unwrap();
    for args in [vec!["add", "."], vec!["commit", "-q", "-m", "change"]] {
        let status = Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@example.test", "-C"])
            .arg(repo)
            .args(&args)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The simulator after `stripe setup`, and the service configured from the lines it printed.
async fn set_up() -> (stripe_sim::Simulator, TestApp, hydra_billing::stripe::setup::SetupReport) {
    let sim =
        stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), stripe_sim::SimSettings::default())
            .await
            .unwrap();
    let stripe = hydra_billing::stripe::StripeClient::new(
        &sim.base_url,
        hydra_billing::config::Secret::new("sk_test_fake_setup"),
    );
    let report = hydra_billing::stripe::setup::run(&stripe, "http://billing.test").await.unwrap();
    let base = sim.base_url.clone();
    let env: Vec<(String, String)> = report
        .env
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let app = spawn_app_listening(
        fresh_db().await,
        hydra_billing::domain::clock::Clock::manual(crate::helpers::START),
        move |e| {
            e.insert("STRIPE_API_BASE".into(), base);
            e.extend(env);
        },
        None,
    )
    .await;
    (sim, app, report)
}

fn verdict_of<'a>(checks: &'a [Check], name: &str) -> Vec<&'a Check> {
    checks.iter().filter(|c| c.name == name).collect()
}

fn failed(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect()
}

#[tokio::test]
async fn stripe_setup_twice_creates_each_object_once() {
    let (sim, _app, first) = set_up().await;
    assert_eq!(
        first.created.len(),
        2 + 4 + 5 + 5 + 2,
        "2 products, 4 prices, 5 features, 5 attached to Business, portal, webhook: {:?}",
        first.created
    );
    assert!(
        first.env.iter().any(|l| l.starts_with("STRIPE_WEBHOOK_SECRET=whsec_")),
        "the secret is printed once"
    );
    let stripe = hydra_billing::stripe::StripeClient::new(
        &sim.base_url,
        hydra_billing::config::Secret::new("sk_test_fake_setup"),
    );
    let second = hydra_billing::stripe::setup::run(&stripe, "http://billing.test").await.unwrap();
    assert!(second.created.is_empty(), "{:?}", second.created);
    assert!(!second.env.iter().any(|l| l.starts_with("STRIPE_WEBHOOK_SECRET=")), "not shown again");
    let without_secret: Vec<&String> =
        first.env.iter().filter(|l| !l.starts_with("STRIPE_WEBHOOK_SECRET=")).collect();
    assert_eq!(without_secret, second.env.iter().collect::<Vec<_>>());
    for (path, want) in [
        ("/v1/products", 2),
        ("/v1/prices", 4),
        ("/v1/webhook_endpoints", 1),
        ("/v1/billing_portal/configurations", 1),
    ] {
        let list = sim_call(&sim, reqwest::Method::GET, path, &[("limit", "100")]).await;
        assert_eq!(list["data"].as_array().unwrap().len(), want, "{path}");
    }
    let prices =
        sim_call(&sim, reqwest::Method::GET, "/v1/prices", &[("lookup_keys[]", "hydra_business_annual")])
            .await;
    assert_eq!(
        (prices["data"][0]["unit_amount"].as_i64(), prices["data"][0]["recurring"]["interval"].as_str()),
        (Some(38400), Some("year"))
    );
}

#[tokio::test]
async fn preflight_passes_on_a_clean_setup_and_names_each_seeded_fault() {
    let (sim, app, report) = set_up().await;
    let repo = throwaway_repo();
    let checks = hydra_billing::billing::preflight::run(&app.state, repo.path()).await;
    assert!(failed(&checks).is_empty(), "a clean set-up passes: {:?}", failed(&checks));
    assert!(
        checks.iter().any(|c| c.verdict == Verdict::Manual),
        "Dashboard-only settings are listed as MANUAL"
    );

    // A real-looking key committed, then removed: still in history. Built at run time so this
    // test's own source holds no such string.
    let key = format!("sk_{}_{}", "live", "4eC39HqLyjWDarjtT1zdp7dc");
    commit(repo.path(), "config.txt", &format!("STRIPE_SECRET_KEY={key}\n"));
    commit(repo.path(), "config.txt", "STRIPE_SECRET_KEY=from-the-environment\n");
    let checks = hydra_billing::billing::preflight::run(&app.state, repo.path()).await;
    let scan = verdict_of(&checks, "no Stripe secret in the repository");
    assert_eq!(scan[0].verdict, Verdict::Fail);
    assert!(scan[0].detail.contains("commit"), "{}", scan[0].detail);
    assert!(!scan[0].detail.contains(&key), "the secret itself is never printed");
    let clean = throwaway_repo();

    // A paid tenant without a subscription id.
    app.put_tenant("ghost", &json!({"name": "Ghost"})).await;
    app.exec("UPDATE tenants SET plan_tier = 'team' WHERE id = $1", "ghost").await;
    let checks = hydra_billing::billing::preflight::run(&app.state, clean.path()).await;
    assert_eq!(failed(&checks).len(), 1, "{:?}", failed(&checks));
    assert_eq!(verdict_of(&checks, "no paid tenant without a subscription id")[0].verdict, Verdict::Fail);
    app.exec("UPDATE tenants SET plan_tier = 'free' WHERE id = $1", "ghost").await;

    // A missing price (archived in Stripe).
    let price = report.env.iter().find_map(|l| l.strip_prefix("STRIPE_TEAM_ANNUAL_PRICE_ID=")).unwrap();
    sim_call(&sim, reqwest::Method::POST, &format!("/v1/prices/{price}"), &[("active", "false")]).await;
    let checks = hydra_billing::billing::preflight::run(&app.state, clean.path()).await;
    assert_eq!(failed(&checks).len(), 1, "{:?}", failed(&checks));
    assert!(failed(&checks)[0].contains("STRIPE_TEAM_ANNUAL_PRICE_ID"), "{:?}", failed(&checks));
    sim_call(&sim, reqwest::Method::POST, &format!("/v1/prices/{price}"), &[("active", "true")]).await;

    // A webhook endpoint missing an event.
    let endpoints = sim_call(&sim, reqwest::Method::GET, "/v1/webhook_endpoints", &[]).await;
    let endpoint = endpoints["data"][0]["id"].as_str().unwrap().to_owned();
    let seven: Vec<(&str, &str)> = hydra_billing::stripe::HANDLED_EVENTS
        .iter()
        .filter(|t| **t != "invoice.payment_failed")
        .map(|t| ("enabled_events[]", *t))
        .collect();
    sim_call(&sim, reqwest::Method::POST, &format!("/v1/webhook_endpoints/{endpoint}"), &seven).await;
    let checks = hydra_billing::billing::preflight::run(&app.state, clean.path()).await;
    let hook = verdict_of(&checks, "webhook endpoint with all 8 events");
    assert_eq!(hook[0].verdict, Verdict::Fail);
    assert!(hook[0].detail.contains("invoice.payment_failed"), "{}", hook[0].detail);
    assert_eq!(failed(&checks).len(), 1);
    sim_call(
        &sim,
        reqwest::Method::POST,
        &format!("/v1/webhook_endpoints/{endpoint}"),
        &[("enabled_events[]", "*")],
    )
    .await;

    // A gated feature taken off the Business product in Stripe.
    let attached = sim_call(&sim, reqwest::Method::GET, "/v1/products/hydra_business/features", &[]).await;
    let jira = attached["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["entitlement_feature"]["lookup_key"] == "jira")
        .expect("setup attached jira to Business");
    let path = format!("/v1/products/hydra_business/features/{}", jira["id"].as_str().unwrap());
    sim_call(&sim, reqwest::Method::DELETE, &path, &[]).await;
    let checks = hydra_billing::billing::preflight::run(&app.state, clean.path()).await;
    let features = verdict_of(&checks, "Entitlements features attached to the products");
    assert_eq!(features[0].verdict, Verdict::Fail);
    assert!(features[0].detail.contains("jira on hydra_business"), "{}", features[0].detail);
    assert_eq!(failed(&checks).len(), 1, "{:?}", failed(&checks));
    sim_call(
        &sim,
        reqwest::Method::POST,
        "/v1/products/hydra_business/features",
        &[("entitlement_feature", jira["entitlement_feature"]["id"].as_str().unwrap())],
    )
    .await;

    // The portal prorating without an invoice (a preview would no longer be the charge), and
    // cancelling at once.
    let portal = report.env.iter().find_map(|l| l.strip_prefix("STRIPE_PORTAL_CONFIG_ID=")).unwrap();
    let path = format!("/v1/billing_portal/configurations/{portal}");
    sim_call(
        &sim,
        reqwest::Method::POST,
        &path,
        &[
            ("features[subscription_update][proration_behavior]", "create_prorations"),
            ("features[subscription_cancel][mode]", "immediately"),
        ],
    )
    .await;
    let checks = hydra_billing::billing::preflight::run(&app.state, clean.path()).await;
    let check = verdict_of(&checks, "customer portal configured (features, proration, products)");
    assert_eq!(check[0].verdict, Verdict::Fail);
    for named in ["create_prorations, not always_invoice", "cancellation is not at period end"] {
        assert!(check[0].detail.contains(named), "{named}: {}", check[0].detail);
    }
    assert_eq!(failed(&checks).len(), 1, "{:?}", failed(&checks));
}

#[test]
fn the_secret_scan_ignores_exactly_the_fake_marker() {
    use hydra_billing::billing::preflight::secret_like;
    let real = format!("key = {}_{}_{}", "rk", "live", "51Habcdefghijklmnopqrstu");
    assert_eq!(secret_like(&real).len(), 1);
    assert!(secret_like("key = sk_test_fake_abcdefghijklmnopqrstuvwxyz").is_empty());
    assert!(secret_like("key = whsec_fake_abcdefghijklmnopqrstuvwxyz").is_empty());
    assert_eq!(secret_like(&format!("{}_{}", "whsec", "abcdefghijklmnopqrstuvwxyz0123")).len(), 1);
    assert!(secret_like("mentions sk_live_ in prose").is_empty(), "a prefix alone is not a key");
    assert!(secret_like("key = rk_live_fake_0123456789abcdefghij").is_empty());
}

#[tokio::test]
async fn the_reconcile_job_repairs_a_row_altered_by_hand_once() {
    let s = crate::helpers::spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    s.subscribe(&customer, &s.prices.team_monthly, "3").await;
    assert_eq!(s.app.run_job("reconcile").await, 1, "provisioned from Stripe");
    let before = s.app.db.audit_log("t1").await.unwrap().len();
    s.app.exec("UPDATE tenants SET plan_tier = 'business', stripe_seat_count = 99 WHERE id = $1", "t1").await;
    assert_eq!(s.app.run_job("reconcile").await, 1);
    assert_eq!(s.app.run_job("reconcile").await, 0, "nothing left to repair");
    let audit = s.app.db.audit_log("t1").await.unwrap();
    assert_eq!(audit.len(), before + 1);
    assert_eq!(audit.last().unwrap().actor, "job:reconcile");
    let row = s.app.tenant("t1").await;
    assert_eq!((row.plan_tier.as_str(), row.stripe_seat_count), ("team", Some(3)));
    let metrics = s.app.metrics_text().await;
    assert!(metrics.contains("hydra_reconcile_drift_total"), "drift is counted");
}
