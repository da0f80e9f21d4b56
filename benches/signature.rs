//! Benchmark (not a test): what refusing a forged webhook costs. A 1 MiB body with a
//! `Stripe-Signature` header of 5,000 `v1=` entries (refused before any hashing), and the most a
//! header inside the caps can cost (10 entries, two secrets: two HMACs of the body), beside a
//! genuine delivery's check. Run: `cargo bench --bench signature`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hydra_billing::config::Secret;
use hydra_billing::http::webhooks::verify_signature;

/// The mean time of one call of `check`, over enough calls to take about half a second.
fn per_call(check: impl Fn()) -> Duration {
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < Duration::from_millis(500) {
        check();
        calls += 1;
    }
    started.elapsed() / calls
}

fn main() {
    let secrets = [Secret::new("whsec_fake_current"), Secret::new("whsec_fake_rolling")];
    let body = vec![b'x'; 1 << 20];
    let now = 1_767_225_600;
    let fake = "ab".repeat(32);
    let huge = format!("t={now}{}", format!(",v1={fake}").repeat(5_000));
    let capped = format!("t={now}{}", format!(",v1={fake}").repeat(9));
    let genuine = stripe_sim::signature_header("whsec_fake_current", now, &body);

    let refused_huge = per_call(|| assert!(verify_signature(Some(&huge), &body, &secrets, now).is_err()));
    let refused_capped = per_call(|| assert!(verify_signature(Some(&capped), &body, &secrets, now).is_err()));
    let accepted = per_call(|| assert!(verify_signature(Some(&genuine), &body, &secrets, now).is_ok()));
    println!("| webhook signature check, 1 MiB body, 2 secrets | per request |");
    println!("|---|---|");
    println!(
        "| header of 5,000 v1 entries ({} KiB): refused before hashing | {refused_huge:?} |",
        huge.len() / 1024
    );
    println!("| 10 wrong entries (the cap): two HMACs, refused | {refused_capped:?} |");
    println!("| a genuine signature: accepted | {accepted:?} |");
}
