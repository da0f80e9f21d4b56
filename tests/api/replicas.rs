//! Two `serve` processes on one PostgreSQL database, as a deployment with two replicas runs:
//! checkouts and webhooks land on either, both run the event worker and the jobs, and nothing
//! is done twice or at the same time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hydra_billing::domain::clock::Clock;
use hydra_billing::http::auth::{self, MintRequest, Role};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::cli::Serve;
use crate::helpers::{AUTH_SECRET, DAY, SmtpSink, eventually, spawn_with_stripe};
use crate::stripe_proxy::StripeProxy;

/// A tenant token valid now on the wall clock (the replicas run on the system clock).
fn token(tenant: &str) -> String {
    auth::mint(
        &hydra_billing::config::Secret::new(AUTH_SECRET),
        MintRequest {
            tenant,
            uid: "user-1",
            role: Role::BillingAdmin,
            email: None,
            ttl_secs: 3600,
            now: Clock::System.now(),
        },
    )
    .unwrap()
}

/// Job runs per job name, read from one replica's `/metrics`.
async fn job_runs(client: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let text = crate::helpers::metrics_text(client, base).await;
    let mut runs = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("hydra_job_runs_total{")) {
        let job = line.split("job=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default();
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *runs.entry(job.to_owned()).or_default() += value;
    }
    runs
}

/// Two replicas on one PostgreSQL database, webhooks delivered to either at random (each twice),
/// checkouts racing across both, both running the worker and the jobs: one Customer per tenant,
/// each payment-failure email sent once, each job once per period, and no two Stripe reads for
/// one customer at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_share_the_work_and_do_nothing_twice() {
    if std::env::var("HYDRA_TEST_POSTGRES_URL").is_err() {
        return; // Several replicas are a PostgreSQL deployment.
    }
    let s = spawn_with_stripe().await;
    let sim = s.sim();
    // Stripe's round trip, so that two overlapping reads of one customer would show.
    let proxy = StripeProxy::start(&sim.base_url).await;
    proxy.set_latency(Duration::from_millis(30));
    let sink = SmtpSink::start();
    let mut env: Vec<(String, String)> = crate::helpers::stripe_env(sim, &s.prices).into_iter().collect();
    env.retain(|(k, _)| k != "STRIPE_API_BASE");
    env.push(("STRIPE_API_BASE".into(), proxy.base.clone()));
    env.push(("SMTP_URL".into(), format!("smtp://127.0.0.1:{}", sink.port)));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = s.app.shared_db().url;
    let started = Instant::now();
    let replicas = [Serve::start_on(&url, &env), Serve::start_on(&url, &env)];
    let bases: Vec<String> = replicas.iter().map(|r| format!("http://127.0.0.1:{}", r.port)).collect();
    let client = reqwest::Client::new();

    // Checkouts for the same tenant racing on both replicas: one Customer each.
    let racing: Vec<String> = (0..3).map(|i| format!("race{i}")).collect();
    for t in &racing {
        s.app.put_tenant(t, &json!({"name": t, "billing_email": format!("{t}@race.test")})).await;
    }
    let mut checkouts = tokio::task::JoinSet::new();
    for t in &racing {
        for n in 0..6 {
            let (client, base, token, price) =
                (client.clone(), bases[n % 2].clone(), token(t), s.prices.team_monthly.clone());
            checkouts.spawn(async move {
                let r = client
                    .post(format!("{base}/api/billing/checkout"))
                    .bearer_auth(token)
                    .json(&json!({"price_id": price, "quantity": 2}))
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap_or_default())
            });
        }
    }
    while let Some(done) = checkouts.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for t in &racing {
        let customers =
            s.get("/v1/customers", &[("email", &format!("{t}@race.test")), ("limit", "100")]).await;
        assert_eq!(customers["data"].as_array().unwrap().len(), 1, "one Customer for {t}");
        let id = customers["data"][0]["id"].as_str().unwrap();
        assert_eq!(s.app.tenant(t).await.stripe_customer_id.as_deref(), Some(id));
    }

    // Subscriptions whose events reach either replica, each twice; one renewal fails twice.
    let mut customers = Vec::new();
    for i in 0..4 {
        let tenant = format!("sub{i}");
        let (customer, clock) = s.tenant_with_customer(&tenant, "pm_card_visa").await;
        let sub = s.subscribe(&customer, &s.prices.team_monthly, "2").await;
        if i == 0 {
            s.post(
                &format!("/v1/customers/{customer}"),
                &[("invoice_settings[default_payment_method]", "pm_card_chargeCustomerFail")],
            )
            .await;
            let renewal = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
            s.advance(&clock, renewal + 3600 + DAY + 60).await;
        }
        customers.push((tenant, customer));
    }
    let mut events = Vec::new();
    for (_, customer) in &customers {
        events.extend(s.events_of(customer).await);
    }
    let failures = events.iter().filter(|e| e["type"] == "invoice.payment_failed").count();
    assert_eq!(failures, 2, "the failing renewal's two attempts");
    let mut rng = stripe_sim::rng::Rng::new(7);
    let mut deliveries = tokio::task::JoinSet::new();
    for event in events.iter().chain(events.iter()) {
        let base = bases[rng.below(2) as usize].clone();
        let request = crate::helpers::signed_webhook(&client, &base, event);
        deliveries.spawn(async move { request.send().await.unwrap().status() });
    }
    while let Some(status) = deliveries.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert!(
        eventually(Duration::from_secs(60), async || crate::faults::unsettled_events(&s.app.db).await == 0)
            .await,
        "both workers together process every event"
    );
    // (sub0's grace is judged on the replicas' wall clock, months past the test clock's renewal,
    // so only its Stripe status is compared.)
    assert_eq!(s.app.tenant("sub0").await.stripe_subscription_status.as_deref(), Some("past_due"));
    for (tenant, _) in &customers[1..] {
        assert_eq!(s.app.tenant(tenant).await.plan_tier, "team", "{tenant}");
    }

    // Each attempt's email once, though its event reached both replicas and both send mail.
    assert!(
        eventually(Duration::from_secs(40), async || sink.messages().len() >= failures).await,
        "the emails went out"
    );
    let runs = async || {
        let (a, b) = (job_runs(&client, &bases[0]).await, job_runs(&client, &bases[1]).await);
        let mut total = a;
        for (k, v) in b {
            *total.entry(k).or_default() += v;
        }
        total
    };
    let outbox_then = runs().await.get("outbox").copied().unwrap_or(0.0);
    assert!(
        eventually(Duration::from_secs(40), async || runs().await.get("outbox").copied().unwrap_or(0.0)
            >= outbox_then + 2.0)
        .await,
        "the sender ran again"
    );
    assert_eq!(sink.messages().len(), failures, "no email sent twice");

    // Each job ran once per period across both replicas.
    let elapsed = started.elapsed().as_secs_f64();
    let total = runs().await;
    for job in hydra_billing::billing::jobs::Job::ALL {
        let ran = total.get(job.name()).copied().unwrap_or(0.0);
        // The service's clock counts whole seconds, so one period can be a second short.
        let periods = ((elapsed + 1.0) / job.every().as_secs_f64()).floor() + 1.0;
        assert!(
            ran >= 1.0 && ran <= periods,
            "{} ran {ran} times in {elapsed:.0} s (at most {periods})",
            job.name()
        );
    }

    // A customer's events are applied by one replica at a time: its Stripe reads never overlap.
    let mut reads: HashMap<String, Vec<(Instant, Instant)>> = HashMap::new();
    for (params, start, end) in proxy.spans(Method::GET, "/v1/subscriptions") {
        if let Some((_, customer)) = params.iter().find(|(k, _)| k == "customer") {
            reads.entry(customer.clone()).or_default().push((start, end));
        }
    }
    for (_, customer) in &customers {
        let mut spans = reads.remove(customer).unwrap_or_default();
        assert!(!spans.is_empty(), "{customer} was read");
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[1].0 >= pair[0].1, "two reads of {customer} overlapped: {pair:?}");
        }
    }
    eprintln!(
        "two replicas: {} events delivered twice at random, {} emails, jobs {:?}, in {:.1} s",
        events.len(),
        sink.messages().len(),
        total,
        started.elapsed().as_secs_f64()
    );
}
