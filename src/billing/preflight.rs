//! Owns `hydra-billing preflight`: the go-live checklist as checks that pass or fail with a reason
//! (and MANUAL lines for what only Stripe's Dashboard can set). Any FAIL makes the command exit
//! non-zero.

use std::path::Path;
use std::process::Command;

use super::Billing;
use crate::domain::catalogue::{PLANS, PRODUCTS, product_features};
use crate::stripe::setup::{attached_features, missing_events, portal_problems, webhook_url};
use crate::stripe::{STRIPE_API_VERSION, SubscriptionView};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Manual,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
        Check { name, verdict: if ok { Verdict::Pass } else { Verdict::Fail }, detail: detail.into() }
    }
}

/// Prefixes of Stripe secrets (restricted keys are always `rk_test_` or `rk_live_`); an
/// occurrence followed by `fake_` is a test fixture, by design.
const SECRET_PREFIXES: [&str; 5] = ["sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_"];

/// Lines holding something that looks like a Stripe secret (at least 16 key characters after the
/// prefix, not the `fake_` marker).
pub fn secret_like(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let hit = SECRET_PREFIXES.iter().any(|prefix| {
            line.match_indices(prefix).any(|(at, _)| {
                let before_ok = line[..at].chars().last().is_none_or(|c| !c.is_ascii_alphanumeric());
                let rest = &line[at + prefix.len()..];
                let key: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                before_ok
                    && !rest.starts_with("fake_")
                    && key.chars().filter(char::is_ascii_alphanumeric).count() >= 16
            })
        });
        if hit {
            // Never print the secret itself: where it is is enough.
            found.push(line.chars().take(24).collect::<String>());
        }
    }
    found
}

/// Scans the files git tracks and every version in the history of `repo`.
fn scan_repository(repo: &Path) -> Check {
    let git = |args: &[&str]| Command::new("git").arg("-C").arg(repo).args(args).output();
    let tree = match git(&["ls-files", "-z"]) {
        Ok(out) if out.status.success() => out.stdout,
        _ => {
            return Check::new(
                "no Stripe secret in the repository",
                false,
                format!("{} is not a git repository", repo.display()),
            );
        }
    };
    let mut hits = Vec::new();
    for file in tree.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let name = String::from_utf8_lossy(file).into_owned();
        if let Ok(text) = std::fs::read_to_string(repo.join(&name)) {
            hits.extend(secret_like(&text).into_iter().map(|_| format!("{name} (working tree)")));
        }
    }
    // Every change ever committed, on every branch.
    if let Ok(out) = git(&["log", "--all", "-p", "--no-color", "--format=commit %H"]) {
        let history = String::from_utf8_lossy(&out.stdout);
        let mut commit = "";
        for line in history.lines() {
            if let Some(c) = line.strip_prefix("commit ") {
                commit = c;
            } else if line.starts_with('+') && !secret_like(line).is_empty() {
                hits.push(format!("commit {}", &commit[..commit.len().min(12)]));
            }
        }
    }
    hits.sort();
    hits.dedup();
    let ok = hits.is_empty();
    Check::new(
        "no Stripe secret in the repository",
        ok,
        if ok { "tree and history clean".into() } else { format!("found in {}", hits.join(", ")) },
    )
}

/// Runs every check.
pub async fn run(state: &Billing, repo: &Path) -> Vec<Check> {
    let mut checks = vec![scan_repository(repo)];
    let config = &state.config;
    let live = config.stripe.is_live();
    let publishable_mode_ok = config
        .stripe
        .publishable_key
        .as_deref()
        .is_none_or(|k| k.starts_with(if live { "pk_live_" } else { "pk_test_" }));
    checks.push(Check::new(
        "configuration complete, keys of one mode",
        publishable_mode_ok,
        if publishable_mode_ok {
            format!("{} mode", if live { "live" } else { "test" })
        } else {
            "the publishable key is of the other mode".into()
        },
    ));
    checks.push(Check::new(
        "billing emails go out over SMTP",
        config.smtp_url.is_some() || !live,
        if config.smtp_url.is_some() { "SMTP_URL set" } else { "SMTP_URL unset: emails are only logged" },
    ));
    checks.extend(check_prices(state).await);
    checks.push(check_webhook_endpoint(state).await);
    checks.push(check_portal(state).await);
    checks.push(check_features(state).await);
    checks.push(check_migrations(state).await);
    checks.extend(check_database(state).await);
    checks.push(check_rollback(state).await);
    for (name, detail) in [
        (
            "Smart Retries window",
            "Dashboard → Billing → Revenue recovery: retries within GRACE_PERIOD_DAYS, then cancel the subscription",
        ),
        ("Stripe's own failed-payment and 3DS emails", "turn off: hydra-billing sends both, per attempt"),
        ("receipts", "on"),
        ("Stripe Tax and Adaptive Pricing", "off in v1 (either breaks preview = charge)"),
    ] {
        checks.push(Check { name, verdict: Verdict::Manual, detail: detail.into() });
    }
    checks
}

async fn check_prices(state: &Billing) -> Vec<Check> {
    let prices = &state.config.stripe.prices;
    let mut checks = Vec::new();
    for plan in &PLANS {
        let (env, id, amount, interval) =
            (plan.env_var, prices.id_of(plan), plan.unit_amount, plan.interval.as_str());
        let check = match state.stripe.get(&format!("/v1/prices/{id}"), &[]).await {
            Ok(p) => {
                let ok = p["unit_amount"] == amount
                    && p["recurring"]["interval"] == interval
                    && p["currency"] == "usd"
                    && p["active"] == true;
                Check::new(
                    "price exists with the right amount and interval",
                    ok,
                    format!(
                        "{env}: {} {} per {}{}",
                        p["unit_amount"],
                        p["currency"].as_str().unwrap_or("?"),
                        p["recurring"]["interval"].as_str().unwrap_or("?"),
                        if p["active"] == true { "" } else { ", inactive" }
                    ),
                )
            }
            Err(e) => {
                Check::new("price exists with the right amount and interval", false, format!("{env}: {e}"))
            }
        };
        checks.push(check);
    }
    checks
}

/// The portal configuration customers are sent to: STRIPE_PORTAL_CONFIG_ID, or (unset) the one
/// `stripe setup` made, which is what Stripe's default would not be.
async fn check_portal(state: &Billing) -> Check {
    let name = "customer portal configured (features, proration, products)";
    let found = match state.config.stripe.portal_config_id.as_deref() {
        Some(id) => state.stripe.get(&format!("/v1/billing_portal/configurations/{id}"), &[]).await.map(Some),
        None => state
            .stripe
            .list_all("/v1/billing_portal/configurations", &[])
            .await
            .map(|all| all.into_iter().find(|c| c["metadata"]["hydra"] == "billing")),
    };
    let config = match found {
        Ok(Some(c)) => c,
        Ok(None) => return Check::new(name, false, "no configuration made by stripe setup; run it"),
        Err(e) => return Check::new(name, false, e.to_string()),
    };
    let prices = &state.config.stripe.prices;
    let pairs: Vec<(&str, &str)> = PLANS.iter().map(|p| (p.product().id, prices.id_of(p))).collect();
    let problems = portal_problems(&config, &pairs);
    let id = config["id"].as_str().unwrap_or("?");
    if problems.is_empty() {
        Check::new(name, true, format!("{id}: cancel at period end, always_invoice, all 4 prices"))
    } else {
        Check::new(name, false, format!("{id}: {}", problems.join("; ")))
    }
}

async fn check_webhook_endpoint(state: &Billing) -> Check {
    let url = webhook_url(&state.config.public_url);
    let name = "webhook endpoint with all 8 events";
    match state.stripe.list_all("/v1/webhook_endpoints", &[]).await {
        Ok(list) => match list.iter().find(|e| e["url"] == url.as_str()) {
            None => Check::new(name, false, format!("no endpoint for {url}")),
            Some(e) => {
                let missing = missing_events(e);
                let version_ok = e["api_version"].as_str().is_none_or(|v| v == STRIPE_API_VERSION);
                let enabled = e["status"] == "enabled";
                let ok = missing.is_empty() && version_ok && enabled;
                let detail = if ok {
                    format!("{url}, api_version {STRIPE_API_VERSION}")
                } else if !missing.is_empty() {
                    format!("missing {}", missing.join(", "))
                } else if !enabled {
                    "the endpoint is disabled".into()
                } else {
                    format!("api_version is {}, not {STRIPE_API_VERSION}", e["api_version"])
                };
                Check::new(name, ok, detail)
            }
        },
        Err(e) => Check::new(name, false, e.to_string()),
    }
}

async fn check_database(state: &Billing) -> Vec<Check> {
    let counts =
        state.store.integrity_counts().await.map(|c| (c.paid_without_subscription, c.customers_shared));
    let mut checks = Vec::new();
    match counts {
        Ok((paid_without, shared)) => {
            checks.push(Check::new(
                "no paid tenant without a subscription id",
                paid_without == 0,
                format!("{paid_without} found"),
            ));
            checks.push(Check::new(
                "no customer shared by two tenants",
                shared == 0,
                format!("{shared} found"),
            ));
        }
        Err(e) => checks.push(Check::new("database integrity", false, e.to_string())),
    }
    let mut doubles = Vec::new();
    if let Ok(tenants) = state.store.tenants_with_customers().await {
        for t in tenants {
            let Some(customer) = t.stripe_customer_id.as_deref() else { continue };
            if let Ok(list) =
                state.stripe.list_all("/v1/subscriptions", &[("customer", customer), ("status", "all")]).await
            {
                let live =
                    list.iter().filter_map(SubscriptionView::read).filter(SubscriptionView::is_live).count();
                if live > 1 {
                    doubles.push(t.id.clone());
                }
            }
        }
    }
    checks.push(Check::new(
        "no tenant with two live subscriptions",
        doubles.is_empty(),
        if doubles.is_empty() { "none".into() } else { doubles.join(", ") },
    ));
    let manual: Vec<String> = state.store.manual_plans().await.unwrap_or_default();
    checks.push(Check {
        name: "tenants on a manual plan",
        verdict: Verdict::Manual,
        detail: if manual.is_empty() { "none".into() } else { manual.join(", ") },
    });
    checks
}

/// Each product carries the Entitlements features its tier has (what `stripe setup` attaches).
async fn check_features(state: &Billing) -> Check {
    let name = "Entitlements features attached to the products";
    let mut missing = Vec::new();
    for product in &PRODUCTS {
        match attached_features(&state.stripe, product.id).await {
            Ok(attached) => missing.extend(
                product_features(product.tier)
                    .filter(|f| !attached.iter().any(|a| a == f.lookup_key))
                    .map(|f| format!("{} on {}", f.lookup_key, product.id)),
            ),
            Err(e) => return Check::new(name, false, format!("{}: {e:#}", product.id)),
        }
    }
    if missing.is_empty() {
        Check::new(name, true, "every gated feature on the plans that have it")
    } else {
        Check::new(name, false, format!("missing {} (run `hydra-billing stripe setup`)", missing.join(", ")))
    }
}

/// `migrate down` then `up` on a copy of the database (the store makes and removes the copy).
async fn check_rollback(state: &Billing) -> Check {
    let name = "migration rollback works on a copy";
    match state.store.rollback_round_trip_on_copy().await {
        Ok(()) => Check::new(name, true, "down to 0 and up again"),
        Err(e) => Check::new(name, false, format!("{e:#}")),
    }
}

/// Preflight never migrates: it says what is pending, and `migrate up` applies it.
async fn check_migrations(state: &Billing) -> Check {
    let name = "database migrations applied";
    match state.store.pending_migrations().await {
        Ok(pending) if pending.is_empty() => Check::new(name, true, "none pending"),
        Ok(pending) => {
            let names: Vec<String> = pending.iter().map(|(v, n)| format!("{v} {n}")).collect();
            Check::new(name, false, format!("pending: {}; run `hydra-billing migrate up`", names.join(", ")))
        }
        Err(e) => Check::new(name, false, format!("{e:#}")),
    }
}
