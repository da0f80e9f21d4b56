//! Webhooks (issue 4): verified, stored before answering, processed by fetch-and-sync, and
//! proof against repeats, any order, both API shapes and a database that refuses writes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use hydra_billing::domain::clock::Clock;

use crate::helpers::{DAY, START, WEBHOOK_SECRET, WithStripe, spawn_with_stripe};

/// A complete lifecycle on the simulator for tenant `t1`: checkout (entitlements too), a seat
/// change, a failed renewal, recovery, cancellation at period end, deletion. Returns the events
/// Stripe recorded for the customer, oldest first.
async fn lifecycle(s: &WithStripe) -> Vec<Value> {
    let product = s.get(&format!("/v1/prices/{}", s.prices.team_monthly), &[]).await["product"]
        .as_str()
        .unwrap()
        .to_owned();
    let feature =
        s.post("/v1/entitlements/features", &[("name", "Team repos"), ("lookup_key", "team_repos")]).await;
    s.post(
        &format!("/v1/products/{product}/features"),
        &[("entitlement_feature", feature["id"].as_str().unwrap())],
    )
    .await;
    let (customer, clock) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let session = s
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", &customer),
                ("client_reference_id", "t1"),
                ("line_items[0][price]", &s.prices.team_monthly),
                ("line_items[0][quantity]", "3"),
                ("success_url", "http://billing.test/billing/success?session_id={CHECKOUT_SESSION_ID}"),
                ("subscription_data[metadata][hydra_tenant_id]", "t1"),
                ("subscription_data[billing_mode][type]", "classic"),
            ],
        )
        .await;
    let done = s
        .post(
            &format!("/v1/test_helpers/checkout/sessions/{}/complete", session["id"].as_str().unwrap()),
            &[],
        )
        .await;
    let sub_id = done["subscription"].as_str().unwrap().to_owned();
    let sub = s.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await;
    let item = sub["items"]["data"][0]["id"].as_str().unwrap().to_owned();
    s.post(
        &format!("/v1/subscriptions/{sub_id}"),
        &[("items[0][id]", &item), ("items[0][quantity]", "5"), ("proration_behavior", "always_invoice")],
    )
    .await;
    // Checkout made 4242 the subscription's card; it now fails (0341 attaches, then declines).
    s.post(
        &format!("/v1/subscriptions/{sub_id}"),
        &[("default_payment_method", "pm_card_chargeCustomerFail")],
    )
    .await;
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    s.advance(&clock, end + 3600 + DAY + 60).await;
    let open = s.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["latest_invoice"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post(&format!("/v1/invoices/{open}/pay"), &[("payment_method", "pm_card_visa")]).await;
    s.post(&format!("/v1/subscriptions/{sub_id}"), &[("cancel_at_period_end", "true")]).await;
    let next_end =
        s.get(&format!("/v1/subscriptions/{sub_id}"), &[]).await["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap();
    s.advance(&clock, next_end + 60).await;
    s.events_of(&customer).await
}

#[tokio::test]
async fn the_lifecycle_produces_every_handled_event_and_ends_canceled() {
    let s = spawn_with_stripe().await;
    let events = lifecycle(&s).await;
    let kinds: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in hydra_billing::stripe::HANDLED_EVENTS {
        if kind != "invoice.payment_action_required" {
            assert!(kinds.contains(kind), "the lifecycle lacks {kind}: {kinds:?}");
        }
    }
    for e in &events {
        assert_eq!(s.app.deliver(e).await, StatusCode::OK);
    }
    s.app.drain().await;
    let row = s.app.tenant("t1").await;
    assert_eq!(row.stripe_subscription_status.as_deref(), Some("canceled"));
    assert_eq!(row.plan_tier, "team");
    assert_eq!(row.stripe_seat_count, Some(5));
    assert!(row.grace_started_at.is_none(), "recovered: grace cleared");
    assert_eq!(row.entitlements.as_deref(), Some("[]"), "entitlements end with the subscription");
    // Our clock reaches the end of the last paid period: access ends there.
    let end = row.stripe_current_period_end.unwrap();
    s.app.clock.set(end - 1);
    assert_eq!(
        crate::helpers::json(s.app.status("t1").await).await["plan_tier"],
        "team",
        "paid until the period end"
    );
    s.app.clock.set(end);
    let status = crate::helpers::json(s.app.status("t1").await).await;
    assert_eq!(status["plan_tier"], "free", "canceled and its period is over");
    assert_eq!(status["access"]["reason"], "canceled");
}

#[tokio::test]
async fn each_event_delivered_twice_or_replayed_changes_nothing_the_second_time() {
    let s = spawn_with_stripe().await;
    let events = lifecycle(&s).await;
    for e in &events {
        s.app.deliver(e).await;
        s.app.drain().await;
        let before = s.app.snapshot("t1").await;
        assert_eq!(s.app.deliver(e).await, StatusCode::OK, "a repeat is still acknowledged");
        s.app.drain().await;
        assert_eq!(s.app.snapshot("t1").await, before, "repeat of {}", e["type"]);
        // A replay processes it again, and still changes nothing.
        assert!(s.app.db.replay_event(e["id"].as_str().unwrap()).await.unwrap());
        s.app.drain().await;
        assert_eq!(s.app.snapshot("t1").await, before, "replay of {}", e["type"]);
    }
}

/// Clears what the events wrote, so the same tenant can take another delivery order.
async fn reset(s: &WithStripe) {
    for sql in [
        "DELETE FROM stripe_events",
        "DELETE FROM email_outbox",
        "DELETE FROM billing_audit_log",
        "UPDATE tenants SET stripe_subscription_id = NULL, stripe_subscription_status = NULL, stripe_price_id = NULL, \
         plan_tier = 'free', stripe_current_period_end = NULL, stripe_seat_count = NULL, stripe_interval = NULL, \
         cancel_at_period_end = FALSE, cancel_at = NULL, cancellation_reason = NULL, grace_started_at = NULL, entitlements = NULL",
    ] {
        hydra_billing::with_db!(&s.app.db, |pool| sqlx::query(sql).execute(pool).await.map(|_| ())).unwrap();
    }
}

/// Shuffles with duplicates, from a seed (a local generator: the orders must not change between
/// library versions).
fn shuffled(events: &[Value], seed: u64) -> Vec<Value> {
    let mut rng = stripe_sim::rng::Rng::new(seed);
    let mut out: Vec<Value> = events.to_vec();
    for e in events {
        if rng.chance(0.3) {
            out.push(e.clone());
        }
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

#[tokio::test]
async fn the_lifecycle_in_order_reversed_and_in_200_random_orders_ends_the_same() {
    let s = spawn_with_stripe().await;
    let events = lifecycle(&s).await;
    let mut orders: Vec<(String, Vec<Value>)> = vec![("in order".into(), events.clone())];
    orders.push(("reversed".into(), events.iter().rev().cloned().collect()));
    for seed in 0..200 {
        orders.push((format!("seed {seed}"), shuffled(&events, seed)));
    }
    let mut expected: Option<String> = None;
    for (name, order) in orders {
        reset(&s).await;
        for e in &order {
            assert_eq!(s.app.deliver(e).await, StatusCode::OK);
        }
        s.app.drain().await;
        let mut row = s.app.tenant("t1").await;
        row.updated_at = 0;
        let emails: Vec<(String,)> = hydra_billing::with_db!(&s.app.db, |pool| {
            sqlx::query_as("SELECT dedupe_key FROM email_outbox ORDER BY dedupe_key").fetch_all(pool).await
        })
        .unwrap();
        let state = format!("{row:?} {emails:?}");
        match &expected {
            None => expected = Some(state),
            Some(want) => assert_eq!(&state, want, "delivery {name} ended differently"),
        }
    }
}

#[tokio::test]
async fn a_failed_payment_starts_grace_once_emails_each_attempt_and_recovery_clears_it() {
    let s = spawn_with_stripe().await;
    let (customer, clock) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let sub = s.subscribe(&customer, &s.prices.business_monthly, "2").await;
    let end = sub["items"]["data"][0]["current_period_end"].as_i64().unwrap();
    s.post(
        &format!("/v1/customers/{customer}"),
        &[("invoice_settings[default_payment_method]", "pm_card_chargeCustomerFail")],
    )
    .await;
    s.advance(&clock, end + 3600 + 3 * DAY + 60).await;
    let events = s.events_of(&customer).await;
    let failures: Vec<&Value> = events.iter().filter(|e| e["type"] == "invoice.payment_failed").collect();
    assert_eq!(failures.len(), 3, "the first attempt and the retries at +1 and +3 days");
    // The later attempt first: grace still starts at the first failure's event time.
    for e in events.iter().rev() {
        s.app.deliver(e).await;
    }
    s.app.drain().await;
    let row = s.app.tenant("t1").await;
    assert_eq!(row.stripe_subscription_status.as_deref(), Some("past_due"));
    assert_eq!(row.grace_started_at, failures[0]["created"].as_i64());
    let access = crate::helpers::json(s.app.access("t1", "feature=jira").await).await;
    assert_eq!(access["allowed"], true, "access kept during grace");
    let emails: Vec<(String, String)> = hydra_billing::with_db!(&s.app.db, |pool| {
        sqlx::query_as("SELECT dedupe_key, to_address FROM email_outbox ORDER BY dedupe_key")
            .fetch_all(pool)
            .await
    })
    .unwrap();
    assert_eq!(emails.len(), 3, "one email per failed attempt: {emails:?}");
    assert!(emails.iter().all(|(_, to)| to == "billing@t1.test"));
    // Recovery: paying the invoice makes the subscription active; grace is cleared.
    let invoice = failures[0]["data"]["object"]["id"].as_str().unwrap();
    s.post(&format!("/v1/invoices/{invoice}/pay"), &[("payment_method", "pm_card_visa")]).await;
    for e in s.events_of(&customer).await {
        s.app.deliver(&e).await;
    }
    s.app.drain().await;
    let row = s.app.tenant("t1").await;
    assert_eq!(row.stripe_subscription_status.as_deref(), Some("active"));
    assert_eq!(row.grace_started_at, None);
    let audit = s.app.db.audit_log("t1").await.unwrap();
    assert!(audit.iter().any(|a| a.actor.starts_with("stripe:evt_") && a.action == "stripe_sync"));
}

#[tokio::test]
async fn a_renewal_needing_authentication_emails_the_hosted_link_once() {
    let s = spawn_with_stripe().await;
    let (_, events) = s.renewal_needing_authentication("t1").await;
    let action: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "invoice.payment_action_required").collect();
    assert_eq!(action.len(), 1);
    for e in &events {
        s.app.deliver(e).await;
    }
    s.app.drain().await;
    // Delivered again, then replayed: the row, the audit log and the emails stay as they are.
    let before = s.app.snapshot("t1").await;
    assert_eq!(s.app.deliver(action[0]).await, StatusCode::OK);
    assert!(s.app.db.replay_event(action[0]["id"].as_str().unwrap()).await.unwrap());
    s.app.drain().await;
    assert_eq!(s.app.snapshot("t1").await, before);
    assert_eq!(s.app.tenant("t1").await.stripe_subscription_status.as_deref(), Some("past_due"));
    let emails: Vec<(String, String)> = hydra_billing::with_db!(&s.app.db, |pool| {
        sqlx::query_as("SELECT dedupe_key, body FROM email_outbox WHERE dedupe_key LIKE 'action_required:%'")
            .fetch_all(pool)
            .await
    })
    .unwrap();
    assert_eq!(emails.len(), 1);
    // The email sends the customer to Stripe's own page for that invoice, where they authenticate.
    let link =
        action[0]["data"]["object"]["hosted_invoice_url"].as_str().expect("the invoice has a hosted page");
    assert!(link.starts_with("http"), "{link}");
    assert!(emails[0].1.contains(link), "the email carries {link}: {}", emails[0].1);
}

#[tokio::test]
async fn signatures_are_checked_and_a_refused_event_is_not_stored() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let event = json!({"id": "evt_sig_1", "type": "invoice.paid", "created": START, "livemode": false,
                       "data": {"object": {"object": "invoice", "id": "in_x", "customer": customer}}});
    let body = serde_json::to_vec(&event).unwrap();
    // Signatures are judged in wall-clock time.
    let now = hydra_billing::domain::clock::Clock::System.now();
    let sign = |secret: &str, t: i64, body: &[u8]| stripe_sim::signature_header(secret, t, body);
    let v1 = |h: String| h.split(",v1=").nth(1).unwrap().to_owned();
    let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        ("missing header", None, body.clone()),
        ("wrong secret", Some(sign("whsec_fake_other", now, &body)), body.clone()),
        ("tampered body", Some(sign(WEBHOOK_SECRET, now, &body)), [&body[..], b" "].concat()),
        ("301 s old", Some(sign(WEBHOOK_SECRET, now - 301, &body)), body.clone()),
        ("only v0", Some(format!("t={now},v0={}", v1(sign(WEBHOOK_SECRET, now, &body)))), body.clone()),
        ("not a header", Some("nonsense".into()), body.clone()),
    ];
    for (name, header, body) in cases {
        assert_eq!(s.app.deliver_raw(&body, header.as_deref()).await, StatusCode::BAD_REQUEST, "{name}");
    }
    assert!(s.app.db.list_events(None, 10).await.unwrap().is_empty(), "nothing stored");
    // The simulator's signer is an implementation independent of ours: accepted.
    assert_eq!(s.app.deliver_raw(&body, Some(&sign(WEBHOOK_SECRET, now, &body))).await, StatusCode::OK);
}

#[tokio::test]
async fn during_a_secret_roll_both_secrets_are_accepted() {
    let sim =
        stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), stripe_sim::SimSettings::default())
            .await
            .unwrap();
    let base = sim.base_url.clone();
    let app = crate::helpers::spawn_app_with(move |env| {
        env.insert("STRIPE_API_BASE".into(), base);
        env.insert("STRIPE_WEBHOOK_SECRET".into(), "whsec_fake_old,whsec_fake_new".into());
    })
    .await;
    for (i, secret) in ["whsec_fake_old", "whsec_fake_new"].iter().enumerate() {
        let body = serde_json::to_vec(&json!({"id": format!("evt_roll_{i}"), "type": "customer.created", "livemode": false, "created": START, "data": {"object": {"object": "customer", "id": "cus_x"}}})).unwrap();
        let header =
            stripe_sim::signature_header(secret, hydra_billing::domain::clock::Clock::System.now(), &body);
        assert_eq!(app.deliver_raw(&body, Some(&header)).await, StatusCode::OK, "{secret}");
    }
    let stored = app.db.list_events(Some("ignored"), 10).await.unwrap();
    assert_eq!(stored.len(), 2, "types we do not handle are stored as ignored");
}

#[tokio::test]
async fn a_database_refusing_writes_gets_a_5xx_and_the_redelivery_is_processed_once() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    s.subscribe(&customer, &s.prices.team_monthly, "1").await;
    let paid = s.events_of(&customer).await.into_iter().find(|e| e["type"] == "invoice.paid").unwrap();
    let (refuse, allow): (&[&str], &[&str]) = match s.app.db.kind() {
        "sqlite" => (
            &[
                "CREATE TRIGGER refuse_events BEFORE INSERT ON stripe_events BEGIN SELECT RAISE(ABORT, 'refused'); END",
            ],
            &["DROP TRIGGER refuse_events"],
        ),
        _ => (
            &[
                "CREATE FUNCTION refuse_events() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse_events BEFORE INSERT ON stripe_events FOR EACH ROW EXECUTE FUNCTION refuse_events()",
            ],
            &["DROP TRIGGER refuse_events ON stripe_events", "DROP FUNCTION refuse_events()"],
        ),
    };
    for sql in refuse {
        hydra_billing::with_db!(&s.app.db, |pool| sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(pool)
            .await
            .map(|_| ()))
        .unwrap();
    }
    assert_eq!(s.app.deliver(&paid).await, StatusCode::SERVICE_UNAVAILABLE);
    for sql in allow {
        hydra_billing::with_db!(&s.app.db, |pool| sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(pool)
            .await
            .map(|_| ()))
        .unwrap();
    }
    assert_eq!(s.app.deliver(&paid).await, StatusCode::OK);
    assert_eq!(s.app.deliver(&paid).await, StatusCode::OK);
    assert_eq!(s.app.drain().await, 1, "stored once, processed once");
    assert_eq!(s.app.tenant("t1").await.plan_tier, "team");
}

#[tokio::test]
async fn both_api_shapes_provision_identically() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let sub = s.subscribe(&customer, &s.prices.business_annual, "7").await;
    s.post(&format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()), &[("metadata[note]", "x")]).await;
    let events = s.events_of(&customer).await;
    let mut snapshots = Vec::new();
    for version in ["2024-06-20", stripe_sim::world::CURRENT_API_VERSION] {
        reset(&s).await;
        for kind in ["invoice.paid", "customer.subscription.updated"] {
            let e = events.iter().find(|e| e["type"] == kind).unwrap();
            let mut shaped = stripe_sim::world::render(e, version);
            shaped["api_version"] = json!(version);
            if version < "2025" {
                assert!(
                    shaped["data"]["object"].get("current_period_end").is_some() || kind == "invoice.paid"
                );
            }
            assert_eq!(s.app.deliver(&shaped).await, StatusCode::OK);
        }
        s.app.drain().await;
        let mut row = s.app.tenant("t1").await;
        row.updated_at = 0;
        assert_eq!(
            (row.plan_tier.as_str(), row.stripe_seat_count, row.stripe_interval.as_deref()),
            ("business", Some(7), Some("year"))
        );
        snapshots.push(format!("{row:?}"));
    }
    assert_eq!(snapshots[0], snapshots[1]);
}

#[tokio::test]
async fn events_for_unknown_tenants_or_prices_are_parked_and_replayable() {
    let s = spawn_with_stripe().await;
    let customer =
        s.post("/v1/customers", &[("email", "nobody@x.test"), ("payment_method", "pm_card_visa")]).await;
    let customer = customer["id"].as_str().unwrap().to_owned();
    s.subscribe(&customer, &s.prices.team_monthly, "1").await;
    let paid = s.events_of(&customer).await.into_iter().find(|e| e["type"] == "invoice.paid").unwrap();
    assert_eq!(s.app.deliver(&paid).await, StatusCode::OK, "answered 200, never dropped");
    s.app.drain().await;
    let admin = |path: &str| s.app.client.get(s.app.url(path)).bearer_auth(crate::helpers::ADMIN_TOKEN);
    let parked = crate::helpers::json(admin("/api/admin/events?status=parked").send().await.unwrap()).await;
    assert_eq!(parked["data"][0]["id"], paid["id"]);
    assert_eq!(parked["data"][0]["last_error"], "no tenant has this customer");
    // The tenant appears later (announced, then linked to the customer).
    s.app.put_tenant("late", &json!({"name": "Late"})).await;
    hydra_billing::with_db!(&s.app.db, |pool| {
        sqlx::query("UPDATE tenants SET stripe_customer_id = $1 WHERE id = 'late'")
            .bind(&customer)
            .execute(pool)
            .await
            .map(|_| ())
    })
    .unwrap();
    // Reconciliation picks the tenant up and settles its parked events...
    assert_eq!(s.app.state.reconcile(Some("late"), "cli:test").await.unwrap(), (1, 1));
    assert_eq!(s.app.tenant("late").await.plan_tier, "team");
    assert!(s.app.db.list_events(Some("parked"), 10).await.unwrap().is_empty());
    // ...and an operator can still replay any stored event: it changes nothing now.
    let before = s.app.snapshot("late").await;
    let r = s
        .app
        .client
        .post(s.app.url(&format!("/api/admin/events/{}/replay", paid["id"].as_str().unwrap())))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.app.drain().await, 1);
    assert_eq!(s.app.snapshot("late").await, before);
    let r = s
        .app
        .client
        .post(s.app.url("/api/admin/events/evt_missing/replay"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = admin("/api/admin/events?status=nonsense").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s.app.client.get(s.app.url("/api/admin/events")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let metrics = s.app.metrics_text().await;
    assert!(metrics.contains("hydra_stripe_events{status="), "{metrics}");
    assert!(metrics.contains("hydra_stripe_event_oldest_unprocessed_age_seconds"), "{metrics}");

    // A price that is not one of the four configured is never guessed into a tier.
    let other = s.post("/v1/products", &[("name", "Other")]).await;
    let stray = s
        .post(
            "/v1/prices",
            &[
                ("product", other["id"].as_str().unwrap()),
                ("unit_amount", "999"),
                ("currency", "usd"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let (c2, _) = s.tenant_with_customer("t2", "pm_card_visa").await;
    s.post("/v1/subscriptions", &[("customer", &c2), ("items[0][price]", stray["id"].as_str().unwrap())])
        .await;
    for e in s.events_of(&c2).await {
        s.app.deliver(&e).await;
    }
    s.app.drain().await;
    assert_eq!(s.app.tenant("t2").await.plan_tier, "free");
    let parked = s.app.db.list_events(Some("parked"), 50).await.unwrap();
    assert!(parked.iter().any(|e| e.last_error.as_deref().is_some_and(|m| m.starts_with("unknown price"))));
}

#[tokio::test]
async fn an_event_from_the_other_mode_is_stored_as_failed_and_never_applied() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    s.subscribe(&customer, &s.prices.team_monthly, "1").await;
    let mut paid = s.events_of(&customer).await.into_iter().find(|e| e["type"] == "invoice.paid").unwrap();
    paid["livemode"] = json!(true);
    assert_eq!(s.app.deliver(&paid).await, StatusCode::OK);
    assert_eq!(s.app.drain().await, 0);
    let failed = s.app.db.list_events(Some("failed"), 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(s.app.tenant("t1").await.plan_tier, "free");
}

#[tokio::test]
async fn reconcile_repairs_a_row_altered_by_hand_and_audits_it_once() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    s.subscribe(&customer, &s.prices.team_monthly, "4").await;
    // Paid, but no webhook ever arrived (runbook: customer paid, no access).
    assert_eq!(s.app.tenant("t1").await.plan_tier, "free");
    let (checked, repaired) = s.app.state.reconcile(None, "cli:test").await.unwrap();
    assert_eq!((checked, repaired), (1, 1));
    let row = s.app.tenant("t1").await;
    assert_eq!((row.plan_tier.as_str(), row.stripe_seat_count), ("team", Some(4)));
    s.app.exec("UPDATE tenants SET plan_tier = 'business', stripe_seat_count = 40 WHERE id = $1", "t1").await;
    let before = s.app.db.audit_log("t1").await.unwrap().len();
    assert_eq!(s.app.state.reconcile(Some("t1"), "cli:test").await.unwrap(), (1, 1));
    assert_eq!(
        s.app.state.reconcile(Some("t1"), "cli:test").await.unwrap(),
        (1, 0),
        "nothing left to repair"
    );
    let audit = s.app.db.audit_log("t1").await.unwrap();
    assert_eq!(audit.len(), before + 1, "one audit entry for the repair");
    assert_eq!(audit.last().unwrap().actor, "cli:test");
    assert_eq!(s.app.tenant("t1").await.plan_tier, "team");
}

#[tokio::test]
async fn billing_disabled_stores_events_and_processes_them_when_enabled_again() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    s.subscribe(&customer, &s.prices.team_monthly, "1").await;
    let events = s.events_of(&customer).await;
    let sim_base = s.sim().base_url.clone();
    let prices = [
        s.prices.team_monthly.clone(),
        s.prices.team_annual.clone(),
        s.prices.business_monthly.clone(),
        s.prices.business_annual.clone(),
    ];
    let (db, clock) = s.app.into_db();
    let env = move |disabled: bool| {
        let (sim_base, prices) = (sim_base.clone(), prices.clone());
        move |env: &mut std::collections::HashMap<String, String>| {
            env.insert("STRIPE_API_BASE".into(), sim_base);
            for (k, v) in [
                "STRIPE_TEAM_MONTHLY_PRICE_ID",
                "STRIPE_TEAM_ANNUAL_PRICE_ID",
                "STRIPE_BUSINESS_MONTHLY_PRICE_ID",
                "STRIPE_BUSINESS_ANNUAL_PRICE_ID",
            ]
            .iter()
            .zip(prices)
            {
                env.insert((*k).into(), v);
            }
            if disabled {
                env.insert("BILLING_ENABLED".into(), "false".into());
            }
        }
    };
    let frozen = crate::helpers::spawn_app_on(db, clock, env(true)).await;
    for e in &events {
        assert_eq!(frozen.deliver(e).await, StatusCode::OK);
    }
    assert_eq!(frozen.drain().await, 0, "nothing is processed while billing is disabled");
    assert_eq!(frozen.db.list_events(Some("received"), 100).await.unwrap().len(), events.len());
    let (db, clock) = frozen.into_db();
    let enabled = crate::helpers::spawn_app_on(db, clock, env(false)).await;
    enabled.drain().await;
    assert_eq!(enabled.tenant("t1").await.plan_tier, "team");
}

#[tokio::test]
async fn payment_failure_emails_go_out_over_smtp_exactly_once_each() {
    let sink = crate::helpers::SmtpSink::start();
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let s = crate::helpers::spawn_with_stripe_and(move |env| {
        env.insert("SMTP_URL".into(), url);
        env.insert("EMAIL_FROM".into(), "Acme Billing <billing@acme.test>".into());
    })
    .await;
    let (customer, clock) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let sub = s.subscribe(&customer, &s.prices.team_monthly, "1").await;
    s.post(
        &format!("/v1/customers/{customer}"),
        &[("invoice_settings[default_payment_method]", "pm_card_chargeCustomerFail")],
    )
    .await;
    s.advance(&clock, sub["items"]["data"][0]["current_period_end"].as_i64().unwrap() + 3600 + DAY + 60)
        .await;
    let events = s.events_of(&customer).await;
    // Every event twice, then processed, then the sender run twice: still one email per attempt.
    for e in events.iter().chain(events.iter()) {
        s.app.deliver(e).await;
    }
    s.app.drain().await;
    assert_eq!(s.app.run_job("outbox").await, 2);
    assert_eq!(s.app.run_job("outbox").await, 0);
    let received =
        crate::helpers::eventually(std::time::Duration::from_secs(10), async || sink.messages().len() >= 2)
            .await;
    assert!(received, "the SMTP server did not receive 2 messages");
    let messages = sink.messages();
    assert_eq!(messages.len(), 2);
    for m in &messages {
        assert!(m.contains("To: billing@t1.test"), "{m}");
        let from = m.lines().find(|l| l.starts_with("From:")).unwrap_or_default();
        assert!(from.contains("Acme Billing") && from.contains("<billing@acme.test>"), "EMAIL_FROM: {m}");
        assert!(m.contains("Subject: Hydra: your payment of $20.00 failed"), "{m}");
        assert!(m.contains("http://billing.test/billing"), "{m}");
    }
    assert!(messages[0].contains("attempt 1") && messages[1].contains("attempt 2"));
}

/// A Stripe stand-in that refuses everything with a 400 (a non-retryable error) and records
/// what it was sent.
async fn refusing_stripe() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"type": "invalid_request_error", "message": "no"}})),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn an_event_that_keeps_failing_is_retried_with_back_off_then_marked_failed() {
    let base = refusing_stripe().await;
    let app = crate::helpers::spawn_app_with(move |env| {
        env.insert("STRIPE_API_BASE".into(), base);
    })
    .await;
    app.put_tenant("t1", &json!({"name": "T"})).await;
    app.exec("UPDATE tenants SET stripe_customer_id = 'cus_t1' WHERE id = $1", "t1").await;
    let event = json!({"id": "evt_fail_1", "type": "invoice.paid", "livemode": false, "created": START,
                       "data": {"object": {"object": "invoice", "id": "in_1", "customer": "cus_t1"}}});
    assert_eq!(app.deliver(&event).await, StatusCode::OK);
    assert_eq!(app.drain().await, 1);
    let row = &app.db.list_events(Some("received"), 10).await.unwrap()[0];
    assert_eq!(row.attempts, 1);
    assert!(row.last_error.as_deref().unwrap_or_default().contains("Stripe refused"), "{row:?}");
    // Not before its back-off has passed.
    assert_eq!(app.drain().await, 0);
    for _ in 1..hydra_billing::billing::events::MAX_ATTEMPTS {
        app.clock.advance(3600);
        assert_eq!(app.drain().await, 1);
    }
    let failed = app.db.list_events(Some("failed"), 10).await.unwrap();
    assert_eq!(failed.len(), 1, "visible as failed after its last attempt");
    // A replay puts it back in the queue.
    assert!(app.db.replay_event("evt_fail_1").await.unwrap());
    assert_eq!(app.db.list_events(Some("received"), 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_stripe_client_pins_the_version_retries_with_one_key_and_maps_errors() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let app = {
        let seen = seen.clone();
        axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.push((get("idempotency-key"), get("stripe-version")));
                    s.len()
                };
                if n < 3 {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": {"type": "api_error"}})),
                    )
                } else {
                    (axum::http::StatusCode::OK, axum::Json(json!({"id": "cus_1", "object": "customer"})))
                }
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = hydra_billing::stripe::StripeClient::new(
        &base,
        hydra_billing::config::Secret::new("sk_test_fake_client"),
    );
    let created = client
        .post(
            "/v1/customers",
            &hydra_billing::stripe::params(&[("email", "a@b.test")]),
            Some("tenant-t1-customer".into()),
        )
        .await
        .unwrap();
    assert_eq!(created["id"], "cus_1");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two 500s retried");
    assert!(
        seen.iter().all(|(key, version)| key == "tenant-t1-customer"
            && version == hydra_billing::stripe::STRIPE_API_VERSION),
        "{seen:?}"
    );
    // Unreachable after the retries: retryable, and our answer is stripe_unavailable.
    let dead = hydra_billing::stripe::StripeClient::new(
        "http://127.0.0.1:9",
        hydra_billing::config::Secret::new("sk_test_fake_client"),
    );
    let err = dead.get("/v1/customers/cus_1", &[]).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(!err.to_string().contains("sk_test_fake_client"), "the key is never in an error");
    let response =
        axum::response::IntoResponse::into_response(hydra_billing::http::error::ApiError::from(err));
    assert_eq!(response.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
}

/// A customer whose events another worker is processing (or was, before it died) is left alone:
/// its events are not claimed and handed back in a loop, and once the short lease lapses (a
/// killed worker renews nothing) they are processed within one more pass.
#[tokio::test]
async fn a_customer_leased_elsewhere_is_skipped_until_its_short_lease_lapses() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let now = s.app.clock.now();
    // Another worker took the customer's lease and died.
    assert!(s.app.db.lease_customer(&customer, "dead-worker", now, now + 15).await.unwrap());
    let event = json!({"id": "evt_waits_for_lease", "type": "invoice.paid", "created": START, "livemode": false,
                       "data": {"object": {"object": "invoice", "id": "in_x", "customer": customer}}});
    assert_eq!(s.app.deliver(&event).await, StatusCode::OK);
    assert_eq!(s.app.drain().await, 0, "not claimed while the lease is held");
    let stored = s.app.db.list_events(Some("received"), 10).await.unwrap();
    assert_eq!((stored.len(), stored[0].attempts), (1, 0), "untouched: no claim-and-hand-back");
    s.app.clock.advance(16);
    assert_eq!(s.app.drain().await, 1, "the lease lapsed: processed on the next pass");
    assert_eq!(s.app.db.list_events(Some("processed"), 10).await.unwrap().len(), 1);
}

/// The worker's heartbeat keeps a short lease alive while it works: a renewed claim is not taken
/// by another worker when the first 15 s have passed, only when the renewed ones have.
#[tokio::test]
async fn a_renewed_lease_keeps_a_live_workers_event_and_customer() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let event = json!({"id": "evt_held_by_live_worker", "type": "invoice.paid", "created": START, "livemode": false,
                       "data": {"object": {"object": "invoice", "id": "in_x", "customer": customer}}});
    assert_eq!(s.app.deliver(&event).await, StatusCode::OK);
    let t0 = s.app.clock.now();
    // A live worker: it claimed the event and its customer, and renews both after 10 s.
    s.app.db.claim_event(t0, t0 + 15).await.unwrap().expect("the event is due");
    assert!(s.app.db.lease_customer(&customer, "live-worker", t0, t0 + 15).await.unwrap());
    s.app.clock.advance(10);
    s.app.db.renew_claims(&customer, "live-worker", t0 + 25).await.unwrap();
    s.app.clock.advance(10);
    assert_eq!(s.app.drain().await, 0, "20 s on, the renewed lease still holds");
    s.app.clock.advance(6);
    assert_eq!(s.app.drain().await, 1, "past the renewal (the worker died): taken over");
}

/// A holder whose lease lapsed (a stalled worker) and that finishes late neither gives back nor
/// extends the lease the next holder took meanwhile: only the token that holds it does.
#[tokio::test]
async fn only_the_holder_of_a_customers_lease_renews_or_gives_it_back() {
    let s = spawn_with_stripe().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let t0 = s.app.clock.now();
    assert!(s.app.db.lease_customer(&customer, "stalled", t0, t0 + 15).await.unwrap());
    assert!(!s.app.db.lease_customer(&customer, "next", t0 + 5, t0 + 20).await.unwrap(), "held");
    assert!(s.app.db.lease_customer(&customer, "next", t0 + 16, t0 + 31).await.unwrap(), "lapsed: taken");
    let lease_until = async || -> Option<i64> {
        let (until,): (Option<i64>,) = hydra_billing::with_db!(&s.app.db, |pool| {
            sqlx::query_as("SELECT sync_lease_until FROM tenants WHERE id = $1")
                .bind("t1")
                .fetch_one(pool)
                .await
        })
        .unwrap();
        until
    };
    // The stalled one wakes up: its heartbeat and its give-back change nothing.
    s.app.db.renew_claims(&customer, "stalled", t0 + 99).await.unwrap();
    s.app.db.release_customer(&customer, "stalled").await.unwrap();
    assert_eq!(lease_until().await, Some(t0 + 31), "the next holder's lease is untouched");
    assert!(!s.app.db.lease_customer(&customer, "third", t0 + 17, t0 + 32).await.unwrap());
    s.app.db.release_customer(&customer, "next").await.unwrap();
    assert_eq!(lease_until().await, None, "its holder gave it back");
}

/// A reconcile of a customer whose events a worker is applying waits for the worker's lease, so
/// its read of Stripe never runs beside the worker's (and an older read never lands last).
#[tokio::test]
async fn a_reconcile_waits_for_the_worker_that_holds_the_customer() {
    let (s, proxy) = crate::helpers::spawn_with_stripe_proxy().await;
    let (customer, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    proxy.hold(reqwest::Method::GET, "/v1/subscriptions");
    let event = json!({"id": "evt_worker_holds", "type": "customer.subscription.updated", "created": START,
                       "livemode": false, "data": {"object": {"object": "subscription", "id": "sub_x", "customer": customer}}});
    assert_eq!(s.app.deliver(&event).await, StatusCode::OK);
    let state = s.app.state.clone();
    let worker = tokio::spawn(async move { state.drain_events().await });
    let within = std::time::Duration::from_secs;
    assert!(
        crate::helpers::eventually(within(10), async || proxy.held() == 1).await,
        "the worker's read is held"
    );
    let state = s.app.state.clone();
    let reconcile = tokio::spawn(async move { state.reconcile(Some("t1"), "test").await });
    // Without the lease, the reconcile's read would join the held one within milliseconds.
    let joined = crate::helpers::eventually(within(1), async || proxy.held() == 2).await;
    assert!(!joined, "the reconcile read Stripe while the worker held the customer");
    proxy.release();
    assert_eq!(worker.await.unwrap().unwrap(), 1);
    assert_eq!(reconcile.await.unwrap().unwrap().0, 1);
    let reads = proxy.spans(reqwest::Method::GET, "/v1/subscriptions");
    assert_eq!(reads.len(), 2, "the worker's read and the reconcile's");
    assert!(reads[0].2 <= reads[1].1, "one after the other: {reads:?}");
}

/// Deliveries that arrive together are stored in groups (one commit each): every one is answered
/// 200 only once stored, each distinct event is stored once, and a redelivery inside the same
/// group (Stripe retrying while the first is in flight) is not a second row.
#[tokio::test]
async fn deliveries_arriving_together_are_each_stored_once() {
    let app = crate::helpers::spawn_app().await;
    let mut deliveries = tokio::task::JoinSet::new();
    for n in 0..120 {
        // 60 distinct events, each sent twice at the same moment.
        let event = json!({"id": format!("evt_together_{}", n % 60), "type": "invoice.paid", "created": START,
                           "livemode": false, "data": {"object": {"object": "invoice", "customer": "cus_together"}}});
        let (client, base) = (app.client.clone(), app.base.clone());
        deliveries.spawn(async move {
            crate::helpers::signed_webhook(&client, &base, &event).send().await.unwrap().status()
        });
    }
    for status in deliveries.join_all().await {
        assert_eq!(status, StatusCode::OK);
    }
    let stored = app.db.list_events(None, 500).await.unwrap();
    let mut ids: Vec<_> = stored.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((stored.len(), ids.len()), (60, 60), "each distinct event stored once");
}

/// A customer's events queued before the worker gets to them are applied after one read of
/// Stripe, each still processed with its own outcome; another customer's are read for apart.
#[tokio::test]
async fn a_customers_queued_events_share_one_read_of_stripe() {
    let (s, proxy) = crate::helpers::spawn_with_stripe_proxy().await;
    let (first, _) = s.tenant_with_customer("t1", "pm_card_visa").await;
    let (second, _) = s.tenant_with_customer("t2", "pm_card_visa").await;
    let kinds =
        ["customer.subscription.created", "invoice.paid", "customer.subscription.updated", "invoice.paid"];
    for (n, kind) in kinds.iter().enumerate() {
        for customer in [&first, &second] {
            let event = json!({"id": format!("evt_group_{customer}_{n}"), "type": kind, "created": START + n as i64,
                               "livemode": false, "data": {"object": {"object": "invoice", "customer": customer}}});
            assert_eq!(s.app.deliver(&event).await, StatusCode::OK);
        }
    }
    assert_eq!(s.app.drain().await, 8, "every event processed");
    assert_eq!(s.app.db.list_events(Some("processed"), 50).await.unwrap().len(), 8);
    let reads = proxy.received(reqwest::Method::GET, "/v1/subscriptions");
    let read_for =
        |c: &str| reads.iter().filter(|q| q.iter().any(|(k, v)| k == "customer" && v == c)).count();
    assert_eq!((read_for(&first), read_for(&second)), (1, 1), "one read per customer: {reads:?}");
}

/// Events of a customer that arrive while its sync waits for Stripe's call budget are applied
/// with that sync's one read: it is sent after they were received. (Without this, each wave of a
/// renewal burst cost a customer another read.) The budget is 1 call a second and this second's
/// is spent, so the worker's read waits for the next second while two more events arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arriving_while_a_sync_waits_for_the_budget_share_its_read() {
    let (s, proxy) = crate::helpers::spawn_with_stripe_proxy_on(Clock::System, |e| {
        e.insert("STRIPE_CALLS_PER_SECOND".into(), "1".into());
    })
    .await;
    let (customer, _) = s.tenant_with_customer("wave", "pm_card_visa").await;
    s.subscribe(&customer, &s.prices.team_monthly, "1").await;
    // Early in a second, so what follows happens within it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while chrono::Utc::now().timestamp_subsec_millis() > 100 {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    let _ = s.app.state.stripe.get(&format!("/v1/customers/{customer}"), &[]).await;
    let event = |n: usize| {
        json!({"id": format!("evt_wave_{n}"), "type": "invoice.paid", "created": 1_000 + n as i64,
               "livemode": false, "data": {"object": {"object": "invoice", "customer": customer}}})
    };
    assert_eq!(s.app.deliver(&event(0)).await, StatusCode::OK);
    let billing = s.app.state.billing.clone();
    let worker =
        tokio::spawn(async move { hydra_billing::stripe::patiently(billing.process_next_event()).await });
    // The worker has taken the customer's lease (and with it the events then waiting).
    let leased = crate::helpers::eventually(std::time::Duration::from_secs(2), async || {
        let lease: Option<(Option<i64>,)> = hydra_billing::with_db!(&s.app.db, |pool| {
            sqlx::query_as("SELECT sync_lease_until FROM tenants WHERE id = $1")
                .bind("wave")
                .fetch_optional(pool)
                .await
        })
        .unwrap();
        lease.is_some_and(|(until,)| until.is_some())
    })
    .await;
    assert!(leased, "the worker took the customer");
    for n in 1..3 {
        assert_eq!(s.app.deliver(&event(n)).await, StatusCode::OK);
    }
    let processed = worker.await.unwrap().unwrap();
    assert_eq!(processed, Some(3), "the two that arrived during the wait went with the first");
    assert_eq!(s.app.db.list_events(Some("processed"), 10).await.unwrap().len(), 3);
    assert_eq!(proxy.received(reqwest::Method::GET, "/v1/subscriptions").len(), 1, "one read");
}

/// A group's outcomes are recorded in one commit, rows ending alike in one statement: each event
/// still ends as its own outcome says (processed, parked with its reason, or due again later).
#[tokio::test]
async fn a_groups_outcomes_each_end_as_their_own() {
    use hydra_billing::store::QueueAttempt;
    let app = crate::helpers::spawn_app().await;
    for n in 0..5 {
        let event = json!({"id": format!("evt_outcome_{n}"), "type": "invoice.paid", "created": START + n,
                           "livemode": false, "data": {"object": {"object": "invoice", "customer": "cus_outcomes"}}});
        assert_eq!(app.deliver(&event).await, StatusCode::OK);
    }
    let processed = || QueueAttempt { status: "processed", error: None, next_attempt_at: None };
    let attempts = [
        ("evt_outcome_0", processed()),
        ("evt_outcome_1", QueueAttempt { status: "parked", error: Some("no tenant"), next_attempt_at: None }),
        ("evt_outcome_2", processed()),
        (
            "evt_outcome_3",
            QueueAttempt {
                status: "received",
                error: Some("Stripe down"),
                next_attempt_at: Some(START + 99),
            },
        ),
        ("evt_outcome_4", processed()),
    ];
    app.db.finish_events(&attempts, START + 1).await.unwrap();
    let rows = app.db.list_events(None, 10).await.unwrap();
    let ended = |id: &str| {
        let row = rows.iter().find(|r| r.id == id).unwrap();
        (row.status.as_str(), row.last_error.as_deref(), row.processed_at)
    };
    for id in ["evt_outcome_0", "evt_outcome_2", "evt_outcome_4"] {
        assert_eq!(ended(id), ("processed", None, Some(START + 1)), "{id}");
    }
    assert_eq!(ended("evt_outcome_1"), ("parked", Some("no tenant"), Some(START + 1)));
    assert_eq!(ended("evt_outcome_3"), ("received", Some("Stripe down"), None));
}
