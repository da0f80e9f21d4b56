//! Fuzzes the `Stripe-Signature` check: any header and body, checked against two secrets, must
//! answer without panicking; and a header the fuzzer builds from a real signature must pass.
#![no_main]

use hydra_billing::config::Secret;
use hydra_billing::http::webhooks::verify_signature;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_780_000_000;

fuzz_target!(|data: &[u8]| {
    // The first line is the header, the rest the body (a header cannot hold a newline).
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let secrets = [Secret::new("whsec_fake_fuzz_old"), Secret::new("whsec_fake_fuzz_new")];
    let header = String::from_utf8_lossy(header);
    let _ = verify_signature(Some(&header), body, &secrets, NOW);
    // The genuine signature for this body, with the fuzzed header's entries around it, passes.
    let genuine = stripe_sim::signature_header("whsec_fake_fuzz_new", NOW, body);
    if header.len() < 200 && !header.contains(['\r', '\n']) {
        let combined = format!("{genuine},{}", header.trim_start_matches(','));
        let parts = combined.split(',').count();
        let well_formed = combined.split(',').all(|p| match p.trim().split_once('=') {
            Some(("t", v)) => v.parse::<i64>().is_ok_and(|t| t == NOW),
            Some(("v1", v)) => v.len() % 2 == 0 && v.bytes().all(|b| b.is_ascii_hexdigit()),
            Some(_) => true,
            None => false,
        });
        if well_formed && parts <= 10 {
            assert!(verify_signature(Some(&combined), body, &secrets, NOW).is_ok(), "{combined}");
        }
    }
});
