//! The binary itself: configuration errors, token minting, migrations and jobs from the shell.

use std::process::Command;

use hydra_billing::config::Secret;

use crate::helpers::{AUTH_SECRET, fresh_db};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hydra-billing"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn serve_refuses_to_start_naming_every_missing_setting() {
    let out = bin().arg("serve").env("HYDRA_SERVICE_TOKEN", "short").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_TEAM_MONTHLY_PRICE_ID",
        "STRIPE_TEAM_ANNUAL_PRICE_ID",
        "STRIPE_BUSINESS_MONTHLY_PRICE_ID",
        "STRIPE_BUSINESS_ANNUAL_PRICE_ID",
        "HYDRA_AUTH_SECRET",
        "HYDRA_SERVICE_TOKEN",
    ] {
        assert!(stderr.contains(name), "{name} missing from: {stderr}");
    }
    assert!(!stderr.contains("short"), "a malformed secret is never echoed");
}

#[test]
fn token_prints_a_verifiable_tenant_token_on_its_last_line() {
    let out = bin()
        .args(["token", "--tenant", "t1", "--role", "member", "--ttl", "30m", "--email", "a@b.test"])
        .env("HYDRA_AUTH_SECRET", AUTH_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap();
    let now = hydra_billing::domain::clock::Clock::System.now();
    let claims = hydra_billing::http::auth::verify(&Secret::new(AUTH_SECRET), token, now).unwrap();
    assert_eq!(claims.sub, "t1");
    assert_eq!(claims.uid, "cli");
    assert_eq!(claims.role, hydra_billing::http::auth::Role::Member);
    assert_eq!(claims.exp - claims.iat, 1800);
    let refused = bin()
        .args(["token", "--tenant", "t1", "--ttl", "48h"])
        .env("HYDRA_AUTH_SECRET", AUTH_SECRET)
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[tokio::test]
async fn migrate_and_jobs_run_from_the_command_line() {
    let test_db = fresh_db().await;
    // The whole service environment, as an operator's shell has it: jobs use the same use cases.
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .envs(crate::helpers::test_env())
            .env("DATABASE_URL", &test_db.url)
            // Nothing listens there: no command here may reach the network.
            .env("STRIPE_API_BASE", "http://127.0.0.1:9")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["migrate", "status"]);
    assert!(ok && out.contains("pending"), "{out}");
    let (ok, out) = run(&["migrate", "up"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["migrate", "status"]);
    assert!(ok && !out.contains("pending"), "{out}");
    // Down to version 2, whatever number of migrations follows it.
    let steps = (hydra_billing::store::MIGRATIONS.len() - 2).to_string();
    let (ok, out) = run(&["migrate", "down", "--steps", &steps]);
    assert!(ok && out.contains("reverted to version 2"), "{out}");
    // Commands other than `serve` and `migrate` never migrate: they say what to run instead.
    for command in [&["jobs", "run-once", "free-tier-reset"][..], &["events", "list"], &["reconcile"]] {
        let (ok, out) = run(command);
        assert!(!ok && out.contains("pending") && out.contains("migrate up"), "{command:?}: {out}");
    }
    let (ok, out) = run(&["preflight", "--repo", "/nonexistent"]);
    assert!(!ok && out.contains("FAIL   database migrations applied: pending: 3"), "{out}");
    let (ok, out) = run(&["migrate", "status"]);
    assert!(ok && out.contains("pending"), "preflight applied nothing: {out}");
    let (ok, out) = run(&["migrate", "up"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["jobs", "run-once", "free-tier-reset"]);
    assert!(ok && out.contains("free-tier-reset: 0 rows"), "{out}");
    let (ok, out) = run(&["jobs", "run-once", "no-such-job"]);
    assert!(!ok && out.contains("reservation-expiry"), "{out}");
    let (ok, out) = run(&["events", "list", "--status", "failed"]);
    assert!(ok && out.trim().is_empty(), "{out}");
    let (ok, out) = run(&["events", "replay", "evt_unknown"]);
    assert!(!ok && out.contains("no stored event"), "{out}");
}

/// `serve` as an operator starts it, on a fresh SQLite file: its stdout lines arrive on a channel
/// (so waits have deadlines), stderr is kept, and the process is killed on drop.
pub struct Serve {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    logged: Vec<String>,
    pub port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Serve {
    fn start() -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("b.db").display());
        Serve::spawn(&url, &[], Some(dir))
    }

    /// `serve` on `database_url` with the test environment plus `env`.
    pub fn start_on(database_url: &str, env: &[(&str, &str)]) -> Serve {
        Serve::spawn(database_url, env, None)
    }

    /// `dir`, when given, holds the database and lives as long as the process.
    fn spawn(database_url: &str, env: &[(&str, &str)], dir: Option<tempfile::TempDir>) -> Serve {
        use std::io::{BufRead, BufReader, Read};
        let mut child = bin()
            .envs(crate::helpers::test_env())
            .envs(env.iter().copied())
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut pipe, kept) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            kept.lock().unwrap().push_str(&text);
        });
        let mut serve = Serve { child, lines, stderr, logged: Vec::new(), port: 0, _dir: dir };
        // The first line announces the port (BIND is 127.0.0.1:0).
        assert!(serve.wait_for(|l| l.contains("\"port\"")), "serve announces its port: {:?}", serve.logged);
        serve.port = serve
            .logged
            .iter()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["fields"]["port"].as_u64())
            .unwrap() as u16;
        serve
    }

    /// Reads log lines until one matches, for at most 30 s; false if none did.
    fn wait_for(&mut self, what: impl Fn(&str) -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if self.logged.iter().any(|l| what(l)) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.logged.push(line),
                Err(_) => return false,
            }
        }
    }

    /// One raw HTTP/1.1 request; the whole response.
    fn send(&self, request: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// kill -9: no shutdown, no flush, whatever was in flight is cut.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process; everything it wrote to stderr.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // The reader thread ends when the pipe closes; give it a moment to hand the text over.
        while self.stderr.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` from the shell: JSON log lines, a failed request's line carrying its request id and
/// status (a fast success logs only at DEBUG), and no secret anywhere in the output.
#[test]
fn serve_logs_json_lines_with_request_ids_and_no_secrets() {
    let mut serve = Serve::start();
    let response = serve.send(&format!(
        "GET /api/tenants/t1/access?feature=jira HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
        crate::helpers::SERVICE_TOKEN
    ));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // A webhook with a wrong signature: refused and logged, with neither secret in sight.
    let body = r#"{"id":"evt_1","type":"invoice.paid"}"#;
    let response = serve.send(&format!(
        "POST /api/webhooks/stripe HTTP/1.1\r\nhost: x\r\nstripe-signature: t=1,v1=00\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let finished = |l: &str| l.contains("finished processing request") && l.contains("/api/webhooks/stripe");
    assert!(serve.wait_for(finished), "the refused request is logged: {:?}", serve.logged);
    let stderr = serve.stop();
    let logged = serve.logged.clone();
    let request_line = logged.iter().find(|l| finished(l)).expect("the refused request is logged");
    let log: serde_json::Value = serde_json::from_str(request_line).expect("log lines are JSON");
    assert_eq!(log["span"]["path"], "/api/webhooks/stripe");
    assert_eq!(log["fields"]["status"], 400, "{request_line}");
    assert_eq!(log["span"]["request_id"].as_str().unwrap().len(), 36, "{request_line}");
    // A fast success is counted, not logged, at the default level (it is at DEBUG).
    assert!(
        !logged
            .iter()
            .any(|l| l.contains("finished processing request") && l.contains("/api/tenants/t1/access")),
        "{logged:?}"
    );
    assert!(logged.iter().any(|l| l.contains("webhook refused")), "{logged:?}");
    let all = logged.join("\n") + &stderr;
    for secret in [
        crate::helpers::SERVICE_TOKEN,
        crate::helpers::AUTH_SECRET,
        "sk_test_fake_harness",
        crate::helpers::WEBHOOK_SECRET,
    ] {
        assert!(!all.contains(secret), "{secret} leaked into the output");
    }
}

/// `stripe sim --port 0` serves the simulator alone and says where.
#[test]
fn stripe_sim_runs_the_simulator_alone() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child =
        bin().args(["stripe", "sim", "--port", "0"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let base = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("STRIPE_API_BASE=").map(str::to_owned))
        .expect("the simulator prints its base URL");
    let addr = base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /v1/customers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk_test_fake_cli\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"object\":\"list\""), "{response}");
}

/// `stripe sim` with Stripe's conditions on demand: every call takes the latency, and calls past
/// the per-key rate answer 429 `rate_limit` with Stripe's `Stripe-Rate-Limited-Reason` header;
/// with `--fail-rate 1` every call fails with a 500.
#[test]
fn stripe_sim_is_slow_limited_and_failing_on_demand() {
    use std::io::{BufRead, BufReader, Read, Write};
    let start = |args: &[&str]| {
        let mut child = bin()
            .args(["stripe", "sim", "--port", "0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let base = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("STRIPE_API_BASE=").map(str::to_owned))
            .expect("the simulator prints its base URL");
        (child, base.trim_start_matches("http://").to_owned())
    };
    let call = |addr: &str| {
        let started = std::time::Instant::now();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /v1/customers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk_test_fake_cli\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        // A call the simulator chose to time out is held for 30 s: reading stops after 5.
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut response = String::new();
        if stream.read_to_string(&mut response).is_err() {
            response = "held past the client's timeout".to_owned();
        }
        (response, started.elapsed())
    };
    let (mut child, addr) = start(&["--latency", "200,50", "--rate-limit", "2"]);
    let answers: Vec<(String, std::time::Duration)> = (0..6).map(|_| call(&addr)).collect();
    let _ = child.kill();
    let _ = child.wait();
    let served: Vec<_> = answers.iter().filter(|(r, _)| r.starts_with("HTTP/1.1 200")).collect();
    assert!(!served.is_empty(), "{answers:?}");
    for (_, took) in &served {
        assert!(*took >= std::time::Duration::from_millis(150), "latency 200 ms ± 50: took {took:?}");
    }
    let limited: Vec<_> = answers.iter().filter(|(r, _)| r.starts_with("HTTP/1.1 429")).collect();
    assert!(!limited.is_empty(), "6 calls in about a second at 2 a second: {answers:?}");
    for (r, _) in limited {
        assert!(r.to_ascii_lowercase().contains("stripe-rate-limited-reason:"), "{r}");
        assert!(r.contains("\"code\":\"rate_limit\""), "{r}");
    }

    let (mut child, addr) = start(&["--fail-rate", "1", "--chaos-seed", "7"]);
    let (failed, _) = call(&addr);
    let _ = child.kill();
    let _ = child.wait();
    assert!(failed.starts_with("HTTP/1.1 5") || failed == "held past the client's timeout", "{failed}");
}

/// `demo` needs no configuration at all (the environment is empty here): it prints a URL whose
/// site works end to end, with its teams, the dev sign-in and the clock controls.
#[tokio::test]
async fn demo_serves_a_working_site_with_nothing_configured() {
    let site = crate::helpers::spawn_demo().await;
    let base = site.base.clone();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/demo");
    let demo = client.get(format!("{base}/demo")).send().await.unwrap().text().await.unwrap();
    assert!(demo.contains("Free: Fixes 4/5, Doc runs 1/1, Linear cycles 3/5"), "{demo}");
    assert!(demo.contains("Team, 3 seats, active"), "{demo}");
    assert!(demo.contains("Business, 12 seats, active"), "{demo}");

    let signed_in =
        client.post(format!("{base}/demo/login")).form(&[("tenant", "acme")]).send().await.unwrap();
    assert_eq!(signed_in.status(), reqwest::StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = |path: &'static str, cookie: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let settings = page("/billing", cookie.clone()).await;
    assert!(settings.contains(r#"<span data-testid="usage-fix">4 / 5</span>"#), "{settings}");
    // A full bar says so in words, not only in colour.
    assert!(settings.contains(r#"data-testid="limit-doc_run"> · limit reached"#), "{settings}");
    assert!(!settings.contains(r#"data-testid="limit-fix""#), "4 of 5 is not the limit");
    assert!(settings.contains("Demo controls"), "demo pages link back to the controls");

    // "Run a fix" goes through the service API: the fifth fix runs, the sixth meets the 402.
    let run = || client.post(format!("{base}/demo/run")).form(&[("tenant", "acme")]).send();
    let first = run().await.unwrap();
    assert!(first.headers()["set-cookie"].to_str().unwrap().starts_with("hydra_session="));
    let first = first.text().await.unwrap();
    assert!(first.contains("The fix ran for Acme Robotics: reserved res_"), "{first}");
    assert!(first.contains("Free: Fixes 5/5"), "{first}");
    let second = run().await.unwrap().text().await.unwrap();
    assert!(second.contains("got a 402 from the service: you have used 5 of 5 free fixes"), "{second}");
    assert!(second.contains(r#"<hydra-upgrade-prompt reason="fix" resets-at="20"#), "{second}");
    assert!(second.contains("Free: Fixes 5/5"), "a refused run counts nothing: {second}");

    // Globex's renewal: time moves for the simulator and the service, and Globex is still on Team.
    let moved = client
        .post(format!("{base}/demo/clock"))
        .form(&[("tenant", "globex"), ("action", "renewal")])
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), reqwest::StatusCode::SEE_OTHER, "{}", moved.text().await.unwrap());
    let cookie = moved.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let settings = page("/billing", cookie).await;
    assert!(settings.contains(r#"data-testid="plan-badge">Team</span>"#), "{settings}");
    let demo = client.get(format!("{base}/demo")).send().await.unwrap().text().await.unwrap();
    assert!(demo.contains("days ahead of today"), "{demo}");
    // Acme's window rolled over with the month: its quotas are back.
    assert!(demo.contains("Free: Fixes 0/5, Doc runs 0/1, Linear cycles 0/5"), "{demo}");
    // A failed renewal puts Globex in its grace period; jumping past it leaves Globex on Free.
    let mut last = String::new();
    for (action, expect) in
        [("fail_renewal", "Your last payment didn"), ("grace", r#"data-testid="plan-badge">Free</span>"#)]
    {
        let moved = client
            .post(format!("{base}/demo/clock"))
            .form(&[("tenant", "globex"), ("action", action)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            moved.status(),
            reqwest::StatusCode::SEE_OTHER,
            "{action}: {}",
            moved.text().await.unwrap()
        );
        let cookie = moved.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        last = page("/billing", cookie).await;
        assert!(last.contains(expect), "{action}: {last}");
        if action == "fail_renewal" {
            let demo = client.get(format!("{base}/demo")).send().await.unwrap().text().await.unwrap();
            assert!(demo.contains("Team, 3 seats, past due"), "the status in words: {demo}");
        }
    }
    assert!(last.contains("kept failing") || last.contains("because its payments failed"), "{last}");
}

/// `serve` from the shell: every log line about a webhook, its intake and its processing by the
/// worker, carries the Stripe event's id and type (the futures are instrumented with its span).
#[test]
fn every_log_line_about_a_webhook_carries_its_event_id_and_type() {
    let mut serve = Serve::start();
    let id = "evt_logged_1";
    let kind = "invoice.paid";
    let body = serde_json::json!({
        "id": id, "object": "event", "type": kind, "created": 1_767_225_600, "livemode": false,
        "data": {"object": {"object": "invoice", "id": "in_1", "customer": "cus_nobody_knows"}},
    })
    .to_string();
    let signature = stripe_sim::signature_header(
        crate::helpers::WEBHOOK_SECRET,
        hydra_billing::domain::clock::Clock::System.now(),
        body.as_bytes(),
    );
    let response = serve.send(&format!(
        "POST /api/webhooks/stripe HTTP/1.1\r\nhost: x\r\nstripe-signature: {signature}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The worker parks it (no tenant has that customer): a processing line, after the intake's.
    let parked = serve.wait_for(|l| l.contains("event parked"));
    serve.stop();
    let logged = serve.logged.clone();
    assert!(parked, "the worker logged its processing: {logged:?}");
    // Every line the intake and the event worker write, whatever it says, and any other line
    // that names the event: none may lack the id and type.
    let about_it: Vec<serde_json::Value> = logged
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            let target = v["target"].as_str().unwrap_or_default();
            [
                "hydra_billing::http::webhooks",
                "hydra_billing::billing::events",
                "hydra_billing::billing::sync",
            ]
            .iter()
            .any(|module| target.starts_with(module))
                || v["span"]["event_id"].is_string()
                || v.to_string().contains("evt_")
        })
        .collect();
    let messages: Vec<&str> = about_it.iter().filter_map(|v| v["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"webhook stored"), "the intake is logged: {messages:?}");
    assert!(messages.iter().any(|m| m.contains("event parked")), "the processing is logged: {messages:?}");
    for line in &about_it {
        assert_eq!(line["span"]["event_id"], id, "{line}");
        assert_eq!(line["span"]["event_type"], kind, "{line}");
    }
}
