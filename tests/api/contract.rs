//! The API as its callers see it: the committed OpenAPI document is the served one and names every
//! route; schemathesis (from PyPI, installed by `scripts/test`) finds no 500 and no answer that
//! breaks the document; the Python client's own suite passes against this server.

use std::process::Command;

use hydra_billing::http::auth::Role;
use serde_json::Value;

use hydra_billing::domain::clock::Clock;

use crate::helpers::{ADMIN_TOKEN, SERVICE_TOKEN, fresh_db, spawn_app, spawn_app_on, spawn_with_stripe};

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[tokio::test]
async fn the_committed_document_is_the_one_served() {
    let app = spawn_app().await;
    let served: Value =
        app.client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    let committed = std::fs::read_to_string(repo("docs/openapi.json")).unwrap_or_default();
    let fix = "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json` and commit it";
    assert_eq!(committed, hydra_billing::http::openapi::document_text(), "{fix}");
    assert_eq!(serde_json::from_str::<Value>(&committed).unwrap_or_default(), served, "{fix}");
    assert_eq!(served["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
}

#[test]
fn every_api_route_is_in_the_document() {
    let doc = serde_json::to_value(hydra_billing::http::openapi::document()).unwrap();
    let served = crate::helpers::route_table();
    assert!(served.len() > 20, "the route table was not read: {served:?}");
    for (path, method) in &served {
        // Pages and their assets are for browsers; everything else is API.
        if path.starts_with("/billing") {
            continue;
        }
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the OpenAPI document");
    }
    // And nothing documented that the router does not serve.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                served.iter().any(|(p, m)| p == path && m == method),
                "{method} {path} is documented but not routed"
            );
        }
    }
}

/// Runs a command to its end on a blocking thread, so the server in this test's runtime keeps
/// answering it.
async fn run(mut command: Command) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = command.output().unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

fn schemathesis_available() {
    let found = Command::new("schemathesis").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "schemathesis is missing: `python3 -m pip install schemathesis` (scripts/test does)");
}

/// Each group of operations with the credentials it takes. With the simulator behind the app,
/// the calls that reach Stripe are exercised too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    schemathesis_available();
    let s = spawn_with_stripe().await;
    let app = &s.app;
    app.put_tenant("acme", &serde_json::json!({"name": "Acme"})).await;
    let tenant = format!("Bearer {}", app.tenant_token_with("acme", Role::BillingAdmin, 3600));
    let service = format!("Bearer {SERVICE_TOKEN}");
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let schema = app.url("/api/openapi.json");
    let reports = tempfile::tempdir().unwrap();
    for (tag, auth) in [
        ("service", Some(&service)),
        ("tenant", Some(&tenant)),
        ("admin", Some(&admin)),
        ("stripe", None),
        ("operations", Some(&service)),
    ] {
        let mut command = Command::new("schemathesis");
        command
            .args(["run", &schema, "--include-tag", tag, "--max-examples", "40", "--seed", "20261207"])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
            .args(["--phases", "examples,coverage,fuzzing", "--no-color", "--workers", "1"])
            .args(["--generation-database", "none", "--request-timeout", "10"])
            .arg("--report-dir")
            .arg(reports.path())
            // Its crash cache goes to the working directory: a temporary one, so every run starts
            // from the same seed and nothing is written into the repository.
            .current_dir(reports.path())
            .env("NO_COLOR", "1");
        if let Some(auth) = auth {
            command.args(["-H", &format!("Authorization: {auth}")]);
        }
        let (ok, out) = run(command).await;
        assert!(ok, "schemathesis found problems in the {tag} operations:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_suite_passes_against_this_server() {
    // On the wall clock: the client's tests compare the answers' times with their own.
    let app = spawn_app_on(fresh_db().await, Clock::System, |_| {}).await;
    let client = repo("clients/python");
    let mut command = Command::new("python3");
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&client)
        .env("PYTHONPATH", client.join("src"))
        .env("HYDRA_BILLING_URL", &app.base)
        .env("HYDRA_SERVICE_TOKEN", SERVICE_TOKEN)
        .env("HYDRA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let (ok, out) = run(command).await;
    assert!(ok, "the Python client's tests failed (pytest is installed by scripts/test):\n{out}");
    assert!(out.contains("passed"), "pytest ran no test:\n{out}");
}
