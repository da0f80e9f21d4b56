//! The free tier (BILL-03/04/22): limits, reservations, the rolling window and the reset job.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DAY, START, TestApp, error_of, json, spawn_app};

const WINDOW: i64 = 30 * DAY;

async fn use_up(app: &TestApp, tenant: &str, metric: &str, n: usize) {
    for _ in 0..n {
        app.run(tenant, metric).await;
    }
}

#[tokio::test]
async fn below_limit_allows() {
    let app = spawn_app().await;
    use_up(&app, "t1", "fix", 4).await;
    let r = app.reserve("t1", "fix").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    assert!(body["reservation_id"].as_str().unwrap().starts_with("res_"));
    assert_eq!(body["tier"], "free");
    assert_eq!(app.tenant("t1").await.free_tier_fixes_used, 4, "a reservation is not yet a committed run");
}

#[tokio::test]
async fn at_limit_blocks_with_free_tier_limit_reached() {
    let app = spawn_app().await;
    use_up(&app, "t1", "fix", 5).await;
    let error = error_of(app.reserve("t1", "fix").await, StatusCode::PAYMENT_REQUIRED).await;
    assert_eq!(error["code"], "free_tier_limit_reached");
    assert_eq!(error["metric"], "fix");
    assert_eq!(error["used"], 5);
    assert_eq!(error["limit"], 5);
    assert_eq!(error["resets_at"], "2026-01-31T00:00:00Z");
    assert_eq!(error["upgrade_url"], "http://billing.test/billing/upgrade");
    assert_eq!(error["message"], "you have used 5 of 5 free fixes in this 30-day period");
    // The doc-run and cycle quotas are separate.
    assert_eq!(app.reserve("t1", "doc_run").await.status(), StatusCode::OK);
    let doc_runs = error_of(app.reserve("t1", "doc_run").await, StatusCode::PAYMENT_REQUIRED).await;
    assert_eq!(doc_runs["limit"], 1);
    assert_eq!(doc_runs["message"], "you have used 1 of 1 free doc runs in this 30-day period");
    use_up(&app, "t1", "linear_cycle", 5).await;
    assert_eq!(
        error_of(app.reserve("t1", "linear_cycle").await, StatusCode::PAYMENT_REQUIRED).await["used"],
        5
    );
}

#[tokio::test]
async fn at_limit_but_paid_allows() {
    let app = spawn_app().await;
    use_up(&app, "t1", "fix", 5).await;
    app.store_subscription("t1", "team", "active", START + WINDOW).await;
    for _ in 0..3 {
        let r = app.reserve("t1", "fix").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json(r).await;
        assert_eq!(body["tier"], "team");
        app.settle(body["reservation_id"].as_str().unwrap(), "commit").await;
    }
    // Paid runs are recorded in the ledger, never in the free counters.
    assert_eq!(app.tenant("t1").await.free_tier_fixes_used, 5);
    let (paid,): (i64,) = hydra_billing::with_db!(&app.db, |pool| {
        sqlx::query_as("SELECT COUNT(*) FROM usage_reservations WHERE tenant_id = 't1' AND tier = 'team' AND status = 'committed'")
            .fetch_one(pool)
            .await
    })
    .unwrap();
    assert_eq!(paid, 3);
    // Lapsed payment past grace: free quotas apply again, and the earlier paid runs did not count.
    app.store_subscription("t1", "team", "unpaid", START + WINDOW).await;
    assert_eq!(error_of(app.reserve("t1", "fix").await, StatusCode::PAYMENT_REQUIRED).await["used"], 5);
}

#[tokio::test]
async fn at_limit_then_reset_allows() {
    let app = spawn_app().await;
    use_up(&app, "t1", "fix", 5).await;
    assert_eq!(app.reserve("t1", "fix").await.status(), StatusCode::PAYMENT_REQUIRED);
    app.clock.advance(WINDOW);
    assert_eq!(app.run_job("free-tier-reset").await, 1);
    assert_eq!(app.tenant("t1").await.free_tier_fixes_used, 0);
    assert_eq!(app.reserve("t1", "fix").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_window_rolls_on_reserve_without_waiting_for_the_job() {
    let app = spawn_app().await;
    use_up(&app, "t1", "fix", 5).await;
    app.clock.advance(WINDOW);
    let r = app.reserve("t1", "fix").await;
    assert_eq!(r.status(), StatusCode::OK);
    let row = app.tenant("t1").await;
    assert_eq!(row.free_tier_fixes_used, 0);
    assert_eq!(row.free_tier_reset_at, Some(START + 2 * WINDOW));
    // The job, running after, finds nothing to do.
    assert_eq!(app.run_job("free-tier-reset").await, 0);
}

#[tokio::test]
async fn reset_twice_is_not_a_double_zero() {
    let app = spawn_app().await;
    use_up(&app, "t1", "fix", 3).await;
    app.clock.advance(WINDOW + 60);
    assert_eq!(app.run_job("free-tier-reset").await, 1);
    // Usage committed between two runs in the same hour is never lost.
    use_up(&app, "t1", "fix", 2).await;
    app.clock.advance(60);
    assert_eq!(app.run_job("free-tier-reset").await, 0);
    let row = app.tenant("t1").await;
    assert_eq!(row.free_tier_fixes_used, 2);
    assert_eq!(row.free_tier_reset_at, Some(START + 2 * WINDOW));
}

#[tokio::test]
async fn null_reset_at_initialises_to_now_plus_30_days() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    assert_eq!(app.tenant("t1").await.free_tier_reset_at, None);
    app.clock.advance(3 * DAY);
    app.run("t1", "doc_run").await;
    assert_eq!(app.tenant("t1").await.free_tier_reset_at, Some(START + 3 * DAY + WINDOW));
}

#[tokio::test]
async fn reset_advances_from_the_previous_value() {
    let app = spawn_app().await;
    app.run("t1", "fix").await;
    // 95 days later: three whole windows have passed; the next end is 4 windows from the first start.
    app.clock.advance(95 * DAY);
    assert_eq!(app.run_job("free-tier-reset").await, 1);
    let row = app.tenant("t1").await;
    assert_eq!(row.free_tier_reset_at, Some(START + 4 * WINDOW));
    assert_eq!(row.free_tier_fixes_used, 0);
}

#[tokio::test]
async fn the_reset_job_and_the_lazy_roll_agree_for_many_tenants() {
    let app = spawn_app().await;
    for i in 0..12 {
        app.clock.advance(DAY);
        app.run(&format!("t{i}"), "fix").await;
    }
    app.clock.advance(200 * DAY);
    let now = app.clock.now();
    let expected: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..12 {
            let row = app.tenant(&format!("t{i}")).await;
            v.push(hydra_billing::domain::usage::current_window_end(row.free_tier_reset_at, now));
        }
        v
    };
    assert_eq!(app.run_job("free-tier-reset").await, 12);
    for (i, want) in expected.into_iter().enumerate() {
        assert_eq!(app.tenant(&format!("t{i}")).await.free_tier_reset_at, want, "tenant t{i}");
    }
}

#[tokio::test]
async fn commit_counts_exactly_once() {
    let app = spawn_app().await;
    let r = json(app.reserve("t1", "fix").await).await;
    let id = r["reservation_id"].as_str().unwrap();
    for _ in 0..3 {
        let settled = app.settle(id, "commit").await;
        assert_eq!(settled.status(), StatusCode::OK);
        assert_eq!(json(settled).await["status"], "committed");
    }
    assert_eq!(app.tenant("t1").await.free_tier_fixes_used, 1);
    // A committed run cannot be released afterwards.
    let error = error_of(app.settle(id, "release").await, StatusCode::CONFLICT).await;
    assert_eq!(error["reservation_status"], "committed");
}

#[tokio::test]
async fn release_frees_the_unit() {
    let app = spawn_app().await;
    let r = json(app.reserve("t1", "doc_run").await).await;
    assert_eq!(app.reserve("t1", "doc_run").await.status(), StatusCode::PAYMENT_REQUIRED);
    let id = r["reservation_id"].as_str().unwrap();
    assert_eq!(app.settle(id, "release").await.status(), StatusCode::OK);
    assert_eq!(app.settle(id, "release").await.status(), StatusCode::OK, "a repeated release is a no-op");
    assert_eq!(app.tenant("t1").await.free_tier_doc_runs_used, 0);
    assert_eq!(app.reserve("t1", "doc_run").await.status(), StatusCode::OK);
    assert_eq!(
        error_of(app.settle(id, "commit").await, StatusCode::CONFLICT).await["reservation_status"],
        "released"
    );
}

#[tokio::test]
async fn an_unsettled_reservation_expires_and_frees_its_unit() {
    let app = spawn_app().await;
    let r = json(app.reserve("t1", "doc_run").await).await;
    assert_eq!(r["expires_at"], "2026-01-01T00:15:00Z");
    app.clock.advance(15 * 60 - 1);
    assert_eq!(app.reserve("t1", "doc_run").await.status(), StatusCode::PAYMENT_REQUIRED);
    app.clock.advance(1);
    // Freed at once, before any job has run...
    assert_eq!(app.reserve("t1", "doc_run").await.status(), StatusCode::OK);
    // ...and the job then only tidies the status.
    assert_eq!(app.run_job("reservation-expiry").await, 1);
    let id = r["reservation_id"].as_str().unwrap();
    let error = error_of(app.settle(id, "commit").await, StatusCode::CONFLICT).await;
    assert_eq!(error["reservation_status"], "expired");
    assert_eq!(app.tenant("t1").await.free_tier_doc_runs_used, 0);
}

#[tokio::test]
async fn a_unit_reserved_before_the_window_rolled_counts_in_its_own_window() {
    let app = spawn_app().await;
    use_up(&app, "t1", "fix", 4).await;
    app.clock.advance(WINDOW - 60);
    let r = json(app.reserve("t1", "fix").await).await;
    app.clock.advance(120);
    assert_eq!(app.run_job("free-tier-reset").await, 1);
    app.settle(r["reservation_id"].as_str().unwrap(), "commit").await;
    assert_eq!(app.tenant("t1").await.free_tier_fixes_used, 0, "the new window starts clean");
}

#[tokio::test]
async fn a_longer_run_can_hold_its_unit_longer() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/tenants/t1/usage/fix/reserve"))
        .bearer_auth(crate::helpers::SERVICE_TOKEN)
        .json(&json!({"ttl_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["expires_at"], "2026-01-01T01:00:00Z");
}

/// With `used = k`, any number of concurrent reserves admits exactly `limit - k`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reserves_admit_exactly_the_remaining_units() {
    let app = spawn_app().await;
    for (metric, limit, k) in [("fix", 5, 2), ("linear_cycle", 5, 0), ("doc_run", 1, 0)] {
        use_up(&app, "t1", metric, k).await;
        let attempts = 40;
        let mut handles = Vec::new();
        for _ in 0..attempts {
            let client = app.client.clone();
            let url = app.url(&format!("/api/tenants/t1/usage/{metric}/reserve"));
            handles.push(tokio::spawn(async move {
                client.post(url).bearer_auth(crate::helpers::SERVICE_TOKEN).send().await.unwrap().status()
            }));
        }
        let mut admitted = 0;
        let mut refused = 0;
        for h in handles {
            match h.await.unwrap() {
                StatusCode::OK => admitted += 1,
                StatusCode::PAYMENT_REQUIRED => refused += 1,
                other => panic!("unexpected {other} for {metric}"),
            }
        }
        assert_eq!(admitted, limit - k, "{metric}: admitted");
        assert_eq!(refused, attempts - (limit - k), "{metric}: refused");
    }
}

/// Settles racing over the same reservations (on SQLite they meet in one group's set-based
/// update): each reservation ends either committed, with both commits answered 200 and the
/// release 409, or released, the other way round; and the window counts each committed unit
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_settles_settle_each_reservation_once_and_count_it_once() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = app.reserve("t1", "fix").await;
        assert_eq!(r.status(), StatusCode::OK);
        ids.push(json(r).await["reservation_id"].as_str().unwrap().to_owned());
    }
    let mut races = Vec::new();
    for id in &ids {
        for how in ["commit", "release", "commit"] {
            let (client, url) = (app.client.clone(), app.url(&format!("/api/usage/reservations/{id}/{how}")));
            races.push(tokio::spawn(async move {
                client.post(url).bearer_auth(crate::helpers::SERVICE_TOKEN).send().await.unwrap().status()
            }));
        }
    }
    let mut statuses = Vec::new();
    for race in races {
        statuses.push(race.await.unwrap());
    }
    let mut committed = 0;
    for (id, answers) in ids.iter().zip(statuses.chunks(3)) {
        let (commit_a, release, commit_b) = (answers[0], answers[1], answers[2]);
        if release == StatusCode::OK {
            assert_eq!([commit_a, commit_b], [StatusCode::CONFLICT; 2], "{id} was released");
        } else {
            assert_eq!(release, StatusCode::CONFLICT, "{id}");
            assert_eq!([commit_a, commit_b], [StatusCode::OK; 2], "{id} was committed");
            committed += 1;
        }
    }
    assert_eq!(app.tenant("t1").await.free_tier_fixes_used, committed, "each committed unit counts once");
    let body = json(app.status("t1").await).await;
    assert_eq!(body["usage"]["fix"]["used"], committed, "no unit is left open");
}

#[tokio::test]
async fn status_shows_free_usage_limits_and_reset() {
    let app = spawn_app().await;
    use_up(&app, "t1", "fix", 2).await;
    app.reserve("t1", "fix").await; // open: counts as used
    app.run("t1", "doc_run").await;
    let body = json(app.status("t1").await).await;
    assert_eq!(body["plan_tier"], "free");
    assert_eq!(body["usage"]["fix"], json!({"used": 3, "limit": 5}));
    assert_eq!(body["usage"]["doc_run"], json!({"used": 1, "limit": 1}));
    assert_eq!(body["usage"]["linear_cycle"], json!({"used": 0, "limit": 5}));
    assert_eq!(body["resets_at"], "2026-01-31T00:00:00Z");
    for paid_field in
        ["subscription_status", "seat_count", "interval", "current_period_end", "cancel_at_period_end"]
    {
        assert!(body[paid_field].is_null(), "{paid_field} should be null for a free tenant");
    }
    // After the window ends the status shows the new window even before any job or reserve.
    app.clock.advance(WINDOW);
    let body = json(app.status("t1").await).await;
    assert_eq!(body["usage"]["fix"]["used"], 0);
    assert_eq!(body["resets_at"], "2026-03-02T00:00:00Z");
}

#[tokio::test]
async fn status_of_a_paid_tenant_has_no_free_usage() {
    let app = spawn_app().await;
    app.put_tenant("t1", &json!({"name": "Acme"})).await;
    app.store_subscription("t1", "business", "active", START + WINDOW).await;
    let body = json(app.status("t1").await).await;
    assert_eq!(body["plan_tier"], "business");
    assert_eq!(body["subscription_status"], "active");
    assert_eq!(body["seat_count"], 3);
    assert!(body["usage"].is_null());
}

/// Metering writes that arrive together share one commit on SQLite, yet keep their own outcomes:
/// a write the database refuses (a unit for a tenant that does not exist) fails alone, and every
/// other write of the same moment is committed.
#[tokio::test]
async fn a_refused_write_among_concurrent_ones_fails_alone() {
    use hydra_billing::domain::access::Tier;
    use hydra_billing::domain::catalogue::Metric;
    let app = spawn_app().await;
    for i in 0..20 {
        app.put_tenant(&format!("g{i}"), &json!({"name": "Grouped"})).await;
    }
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..40 {
        let db = app.db.clone();
        writes.spawn(async move {
            let tenant = if i % 10 == 0 { "ghost".to_owned() } else { format!("g{}", i % 20) };
            let id = format!("res_group_{i}");
            let result = db.reserve_paid(&tenant, Metric::Fix, &id, Tier::Team, START, START + 900).await;
            (tenant, result.is_ok())
        });
    }
    for (tenant, ok) in writes.join_all().await {
        assert_eq!(ok, tenant != "ghost", "{tenant}");
    }
    let stored = crate::helpers::count(
        &app.db,
        "SELECT COUNT(*) FROM usage_reservations WHERE id LIKE 'res_group_%'",
        None,
    )
    .await;
    assert_eq!(stored, 36, "every write but the four refused ones is committed");
}
