//! `scripts/bench-wrk`'s helper (not part of the service): `bench_floors serve DIR` runs the
//! three floors as a process of its own (the durable one appends to a file in DIR) and prints
//! their base URLs; `bench_floors events TAG N FILE`
//! writes N signed distinct events, one `signature<TAB>body` per line, for wrk to post.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/floors.rs"]
mod floors;

use std::io::Write;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            println!("BARE_GET={}", floors::serve(floors::bare_get()).await);
            println!("VERIFY_PARSE={}", floors::serve(floors::verify_and_parse()).await);
            let dir = std::path::Path::new(&args[2]);
            println!("DURABLE={}", floors::serve(floors::verify_parse_and_sync(dir)).await);
            std::future::pending::<()>().await;
        }
        Some("events") => {
            let (tag, n, file) = (&args[2], args[3].parse::<u64>().unwrap(), &args[4]);
            let now = hydra_billing::domain::clock::Clock::System.now();
            let mut out = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
            for i in 0..n {
                let (header, body) = floors::signed_event(tag, i, 2_000, now);
                writeln!(out, "{header}\t{body}").unwrap();
            }
        }
        _ => eprintln!("usage: bench_floors serve DIR | bench_floors events TAG N FILE"),
    }
}
