//! The operators' commands from the shell, against the database the service uses: tenants shown,
//! given manual plans, linked to Stripe customers and imported in bulk; the audit log and the
//! usage ledger read out; SQLite backed up while the service runs and the copy used.

use std::collections::HashMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{SERVICE_TOKEN, TestApp, fresh_db, spawn_app, spawn_app_on, test_env};

/// The binary with the service's environment on `db_url`, as an operator's shell has it, and
/// `extra` on top. The OS user is `hydra-billing`; `SUDO_USER` names the person behind it.
fn cli(db_url: &str, extra: &HashMap<String, String>, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hydra-billing"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(test_env())
        // Nothing listens there: only commands given a simulator may reach Stripe.
        .env("STRIPE_API_BASE", "http://127.0.0.1:9")
        .envs(extra)
        .env("DATABASE_URL", db_url)
        .env("USER", "hydra-billing")
        .env("SUDO_USER", "alice")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn succeeds(db_url: &str, args: &[&str]) -> String {
    let (ok, out) = cli(db_url, &HashMap::new(), args);
    assert!(ok, "{args:?} failed: {out}");
    out
}

fn fails(db_url: &str, args: &[&str]) -> String {
    let (ok, out) = cli(db_url, &HashMap::new(), args);
    assert!(!ok, "{args:?} should have failed: {out}");
    out
}

fn db_url(app: &TestApp) -> String {
    app.shared_db().url
}

#[tokio::test]
async fn tenant_import_announces_in_bulk_and_a_second_run_changes_nothing() {
    let app = spawn_app().await;
    let url = db_url(&app);
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("tenants.jsonl");
    std::fs::write(
        &jsonl,
        [
            r#"{"id": "imp-1", "name": "One", "billing_email": "billing@one.example"}"#,
            r#"{"id": "imp-2", "name": "Two"}"#,
            r#"{"id": "bad id", "name": "Three"}"#,
            "",
            r#"{"id": "imp-4", "name": "Four", "billing_email": "not-an-address"}"#,
            r#"{"id": "imp-5", "name": "Five", "plan": "team"}"#,
            r#"{"id": "imp-6", "name": "Six"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (imported, out) = cli(&url, &HashMap::new(), &["tenant", "import", jsonl.to_str().unwrap()]);
    assert!(!imported, "rejected lines make the exit status fail: {out}");
    assert!(out.contains("created 3, updated 0, unchanged 0, rejected 3"), "{out}");
    for line in ["line 3:", "line 5:", "line 6:"] {
        assert!(out.contains(line), "{line} is named: {out}");
    }
    let one = app.db.tenant("imp-1").await.unwrap().unwrap();
    assert_eq!((one.name.as_str(), one.billing_email.as_deref()), ("One", Some("billing@one.example")));
    assert_eq!(one.plan_tier, "free");

    // Again: nothing written, each already as the file says.
    let before = app.db.tenant("imp-2").await.unwrap().unwrap().updated_at;
    app.clock.advance(60);
    let (_, out) = cli(&url, &HashMap::new(), &["tenant", "import", jsonl.to_str().unwrap()]);
    assert!(out.contains("created 0, updated 0, unchanged 3, rejected 3"), "{out}");
    assert_eq!(app.db.tenant("imp-2").await.unwrap().unwrap().updated_at, before);

    // CSV, with a quoted comma and a renamed tenant.
    let csv = dir.path().join("tenants.csv");
    std::fs::write(&csv, "id,name,billing_email\nimp-1,\"One, Inc.\",billing@one.example\nimp-7,Seven,\n")
        .unwrap();
    let out = succeeds(&url, &["tenant", "import", csv.to_str().unwrap()]);
    assert!(out.contains("created 1, updated 1, unchanged 0, rejected 0"), "{out}");
    assert_eq!(app.db.tenant("imp-1").await.unwrap().unwrap().name, "One, Inc.");
    assert_eq!(app.db.tenant("imp-7").await.unwrap().unwrap().billing_email, None);
    let wrong = dir.path().join("wrong.csv");
    std::fs::write(&wrong, "tenant,title\nx,y\n").unwrap();
    assert!(fails(&url, &["tenant", "import", wrong.to_str().unwrap()]).contains("header lacks \"id\""));
}

#[tokio::test]
async fn a_manual_plan_from_the_shell_is_shown_audited_and_removed() {
    let app = spawn_app_on(fresh_db().await, hydra_billing::domain::clock::Clock::System, |_| {}).await;
    let url = db_url(&app);
    app.put_tenant("ent", &json!({"name": "Enterprise Co"})).await;
    assert!(
        fails(&url, &["tenant", "set-plan", "nobody", "team", "--reason", "x"]).contains("no tenant nobody")
    );
    assert!(fails(&url, &["tenant", "set-plan", "ent", "gold", "--reason", "x"]).contains("is one of"));
    assert!(
        fails(&url, &["tenant", "set-plan", "ent", "team", "--reason", "x", "--until", "2001-01-01"])
            .contains("in the past")
    );
    assert!(fails(&url, &["tenant", "set-plan", "ent", "--reason", "x"]).contains("or --clear"));

    let out = succeeds(
        &url,
        &["tenant", "set-plan", "ent", "enterprise", "--reason", "contract 2027", "--until", "2099-01-31"],
    );
    assert!(out.contains("effective tier enterprise"), "{out}");
    let shown: Value = serde_json::from_str(&succeeds(&url, &["tenant", "show", "ent", "--json"])).unwrap();
    assert_eq!(shown["effective"]["tier"], "enterprise");
    assert_eq!(shown["tenant"]["manual_contract_ends_at"], json!(4_073_500_800_i64));
    assert!(
        shown["why"].as_str().unwrap().contains("manual plan enterprise (contract 2027) until 2099-01-31"),
        "{shown}"
    );
    assert_eq!(shown["audit"][0]["action"], "manual_plan_set");
    assert_eq!(shown["audit"][0]["actor"], "cli:alice", "sudo's user is who acted");
    let text = succeeds(&url, &["tenant", "show", "ent"]);
    assert!(text.contains("effective     enterprise"), "{text}");

    // The service answers from the same rows at once.
    let access: Value = app
        .client
        .get(app.url("/api/tenants/ent/access?feature=sso"))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((access["allowed"].as_bool(), access["plan_tier"].as_str()), (Some(true), Some("enterprise")));

    let out = succeeds(&url, &["tenant", "set-plan", "ent", "--clear", "--reason", "contract ended early"]);
    assert!(out.contains("manual plan removed; effective tier free"), "{out}");
    let text = succeeds(&url, &["tenant", "show", "ent"]);
    assert!(text.contains("free usage    fix 0/5, doc_run 0/1, linear_cycle 0/5"), "{text}");
    let audit = succeeds(&url, &["audit", "list", "--tenant", "ent", "--json"]);
    let entries: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(entries[0]["action"], "manual_plan_removed", "newest first");
    assert_eq!(entries[0]["reason"], "contract ended early");
    let none = succeeds(&url, &["audit", "list", "--since", "2099-01-01"]);
    assert!(none.trim().is_empty(), "{none}");
}

// Two threads: the simulator in this runtime answers while the command waits on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_a_customer_checks_it_with_stripe_and_never_takes_another_tenants() {
    let s = crate::helpers::spawn_with_stripe().await;
    let app = &s.app;
    let url = db_url(app);
    let sim = s.simulator.as_ref().unwrap();
    let env: HashMap<String, String> = crate::helpers::stripe_env(sim, &s.prices);
    for id in ["one", "two"] {
        app.put_tenant(id, &json!({"name": id})).await;
    }
    let customer = |metadata: &'static str| async move {
        let mut params = vec![("email", "ops@one.example")];
        if !metadata.is_empty() {
            params.push(("metadata[hydra_tenant_id]", metadata));
        }
        crate::helpers::sim_call(sim, reqwest::Method::POST, "/v1/customers", &params).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mine = customer("one").await;
    let run = |args: Vec<&str>| cli(&url, &env, &args);

    let (ok, out) = run(vec!["tenant", "link-customer", "one", &mine, "--reason", "support ticket 42"]);
    assert!(ok && out.contains(&format!("one linked to {mine}")), "{out}");
    assert_eq!(
        app.db.tenant("one").await.unwrap().unwrap().stripe_customer_id.as_deref(),
        Some(mine.as_str())
    );
    let audit = app.db.audit_entries(Some("one"), None, 10).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "customer_linked" && a.actor == "cli:alice"), "{audit:?}");
    let (ok, out) = run(vec!["tenant", "link-customer", "one", &mine, "--reason", "again"]);
    assert!(ok && out.contains("already"), "linking twice is a no-op: {out}");

    let (ok, out) = run(vec!["tenant", "link-customer", "two", &mine, "--reason", "mistake"]);
    assert!(!ok && out.contains("names tenant \"one\""), "{out}");
    let unnamed = customer("").await;
    let (ok, out) = run(vec!["tenant", "link-customer", "one", &unnamed, "--reason", "x"]);
    assert!(!ok && out.contains("would orphan"), "{out}");
    let (ok, out) = run(vec!["tenant", "link-customer", "two", "cus_doesnotexist", "--reason", "x"]);
    assert!(!ok && out.contains("cannot read customer"), "{out}");
    assert_eq!(app.db.tenant("two").await.unwrap().unwrap().stripe_customer_id, None);
    // Another tenant holds it in our rows (linked by checkout before its metadata was set).
    app.exec("UPDATE tenants SET stripe_customer_id = 'cus_held' WHERE id = $1", "two").await;
    app.put_tenant("three", &json!({"name": "three"})).await;
    let held = app.db.link_customer("three", "cus_held", "test", "x", 0).await.unwrap();
    assert!(matches!(held, hydra_billing::store::Link::TakenBy(ref t) if t == "two"));
    assert_eq!(app.db.tenant("three").await.unwrap().unwrap().stripe_customer_id, None);
}

#[tokio::test]
async fn the_usage_export_lists_each_committed_run_once_in_either_format() {
    let app = spawn_app().await;
    let url = db_url(&app);
    let mut committed = Vec::new();
    for (tenant, metric, settle) in [
        ("a", "fix", "commit"),
        ("a", "doc_run", "release"),
        ("b", "fix", "commit"),
        ("b", "linear_cycle", "commit"),
    ] {
        let r: Value = app.reserve(tenant, metric).await.json().await.unwrap();
        let id = r["reservation_id"].as_str().unwrap().to_owned();
        let done = app
            .client
            .post(app.url(&format!("/api/usage/reservations/{id}/{settle}")))
            .bearer_auth(SERVICE_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(done.status().is_success());
        if settle == "commit" {
            committed.push(id);
        }
        app.clock.advance(10);
    }
    let csv = succeeds(&url, &["usage", "export"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "reservation_id,tenant_id,metric,tier,committed_at");
    assert_eq!(lines.len(), 4, "{csv}");
    for (line, id) in lines[1..].iter().zip(&committed) {
        assert!(line.starts_with(&format!("{id},")), "oldest first: {csv}");
        assert!(line.contains(",free,"), "{line}");
    }
    let jsonl = succeeds(&url, &["usage", "export", "--format", "jsonl"]);
    let rows: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().map(|r| r["reservation_id"].as_str().unwrap()).collect::<Vec<_>>(), committed);
    assert_eq!(rows[2]["metric"], "linear_cycle");
    let later = succeeds(&url, &["usage", "export", "--since", "2099-01-01"]);
    assert_eq!(later.lines().count(), 1, "only the header: {later}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("usage.csv");
    let path = file.to_str().unwrap();
    succeeds(&url, &["usage", "export", "--output", path]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), csv);
    assert!(fails(&url, &["usage", "export", "--output", path]).contains("never overwrites"));
}

#[tokio::test]
async fn a_backup_of_a_live_sqlite_database_is_a_working_copy() {
    // SQLite whatever the suite's database: backups are SQLite's (PostgreSQL has pg_dump).
    let dir = tempfile::tempdir().unwrap();
    let live = format!("sqlite://{}", dir.path().join("live.db").display());
    let store = hydra_billing::store::Store::connect(&live).await.unwrap();
    store.migrate_up().await.unwrap();
    store.upsert_tenant("kept", "Kept Co", Some("billing@kept.example"), 1).await.unwrap();
    // The service holds the file open (and its WAL) while the copy is taken.
    let copy = dir.path().join("backup.db");
    let out = succeeds(&live, &["backup", copy.to_str().unwrap()]);
    assert!(out.contains("backed up to"), "{out}");
    assert!(fails(&live, &["backup", copy.to_str().unwrap()]).contains("exists already"));
    store.upsert_tenant("after", "After the backup", None, 2).await.unwrap();

    let restored = format!("sqlite://{}", copy.display());
    let status = succeeds(&restored, &["migrate", "status"]);
    assert!(!status.contains("pending"), "{status}");
    let shown: Value =
        serde_json::from_str(&succeeds(&restored, &["tenant", "show", "kept", "--json"])).unwrap();
    assert_eq!(shown["tenant"]["billing_email"], "billing@kept.example");
    assert!(fails(&restored, &["tenant", "show", "after"]).contains("no tenant after"));
}

#[tokio::test]
async fn the_metrics_alerts_read_are_exported_from_the_start() {
    let app = spawn_app().await;
    app.state.run_job(hydra_billing::billing::jobs::Job::Outbox).await.unwrap();
    let text = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The series exist from the start (values are per process, shared by this suite's tests).
    for series in [
        "hydra_job_last_success_timestamp_seconds{job=\"outbox\"} ",
        "hydra_job_cadence_seconds{job=\"reconcile\"} 3600",
        "hydra_email_outbox{status=\"pending\"} ",
        "hydra_email_outbox_oldest_pending_age_seconds ",
        "hydra_stripe_events{status=\"parked\"} ",
        "hydra_webhooks_total{outcome=\"bad_signature\"} ",
        "hydra_reconcile_drift_total ",
    ] {
        assert!(text.lines().any(|l| l.starts_with(series)), "{series} missing from:\n{text}");
    }
    // And their values, from this test's own database.
    let now = app.clock.now();
    assert_eq!(app.db.job_last_ok().await.unwrap(), vec![("outbox".to_owned(), now)]);
    assert_eq!(app.db.outbox_stats(now).await.unwrap(), (vec![], 0));
}
