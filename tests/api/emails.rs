//! Billing emails as an operator's log shows them: with `SMTP_URL` unset the outbox delivers to
//! the log, and that line names the email (its id and subject) but never carries its body, which
//! holds Stripe's hosted invoice link (anyone with it can see and pay the invoice).

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{eventually, signed_webhook, spawn_with_stripe, stripe_env, test_env};

/// `serve` on `database_url`, its stdout lines (the JSON log) arriving on a channel; stderr kept.
/// Killed on drop.
struct Served {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    logged: Vec<String>,
    readers: Option<(std::thread::JoinHandle<()>, std::thread::JoinHandle<String>)>,
}

impl Served {
    fn start(database_url: &str, env: std::collections::HashMap<String, String>) -> Served {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hydra-billing"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .env("DATABASE_URL", database_url)
            .arg("serve")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut pipe = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Served { child, lines, logged: Vec::new(), readers: Some((out, err)) }
    }

    /// Stops the process and reads its output to the end; what it wrote to stderr.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (out, err) = self.readers.take().unwrap();
        out.join().unwrap();
        self.read();
        err.join().unwrap()
    }

    /// Takes the lines logged so far.
    fn read(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.logged.push(line);
        }
    }

    /// The JSON log lines so far.
    fn json_lines(&self) -> Vec<Value> {
        self.logged.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A renewal that needs 3-D Secure, processed by `serve` with no SMTP: the email with the hosted
/// link is "delivered" to the log, whose line names it by id and subject; the link and the body
/// appear nowhere in anything the process wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_smtp_unset_an_emails_log_line_names_it_without_its_body_or_link() {
    let s = spawn_with_stripe().await;
    let (_, events) = s.renewal_needing_authentication("t1").await;
    let action = events
        .iter()
        .find(|e| e["type"] == "invoice.payment_action_required")
        .expect("the renewal needs authentication");
    let link =
        action["data"]["object"]["hosted_invoice_url"].as_str().expect("the invoice has a hosted page");
    assert!(link.starts_with("http"), "{link}");

    // The service as operators run it, on the same database and Stripe, SMTP_URL unset.
    let mut env = test_env();
    env.extend(stripe_env(s.sim(), &s.prices));
    assert!(!env.contains_key("SMTP_URL"));
    let mut serve = Served::start(&s.app.shared_db().url, env);
    let announced = eventually(Duration::from_secs(30), async || {
        serve.read();
        serve.json_lines().iter().any(|l| l["fields"]["port"].is_u64())
    })
    .await;
    assert!(announced, "serve announces its port: {:?}", serve.logged);
    let port = serve.json_lines().iter().find_map(|l| l["fields"]["port"].as_u64()).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for event in &events {
        let r = signed_webhook(&s.app.client, &base, event).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", event["type"]);
    }

    // The worker writes the emails (the failed charge's, then the one with the link); the outbox
    // job (every 10 s) delivers them to the log.
    let emails = async || -> Vec<(String, String, String, String)> {
        hydra_billing::with_db!(&s.app.db, |pool| {
            sqlx::query_as(
                "SELECT id, dedupe_key, subject, body FROM email_outbox WHERE status = 'sent' ORDER BY id",
            )
            .fetch_all(pool)
            .await
        })
        .unwrap()
    };
    let sent = eventually(Duration::from_secs(60), async || {
        emails().await.iter().any(|(_, key, _, _)| key.starts_with("action_required:"))
    })
    .await;
    serve.read();
    assert!(sent, "the email with the link was delivered to the log: {:#?}", serve.logged);
    let stderr = serve.stop();
    let emails = emails().await;
    let (_, _, _, body) = emails.iter().find(|(_, key, _, _)| key.starts_with("action_required:")).unwrap();
    assert!(body.contains(link), "the email carries the link: {body}");

    let lines = serve.json_lines();
    let everything = serve.logged.join("\n") + &stderr;
    assert!(!everything.contains(link), "the hosted invoice link is in the output");
    for (id, _, subject, body) in &emails {
        let line = lines
            .iter()
            .find(|l| l["fields"]["email"] == id.as_str())
            .unwrap_or_else(|| panic!("no log line names {id}: {:#?}", serve.logged));
        assert!(line["fields"]["message"].as_str().unwrap().contains("outbox email kept unsent"), "{line}");
        assert_eq!(line["fields"]["subject"], subject.as_str(), "{line}");
        // Its sentences (a bare link to our own site could be logged for other reasons).
        for sentence in body.lines().filter(|l| l.len() > 30 && !l.starts_with("http")) {
            assert!(!everything.contains(sentence), "{id}'s body is in the output: {sentence:?}");
        }
    }
}
