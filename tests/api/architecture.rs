//! Owns the proofs of the architecture: no Stripe call holds a database transaction (a checkout
//! held open at "Stripe" blocks no other writer), the layers import only downward (read from the
//! sources by a small tokenizer, so grouped, inline and relative paths count and comments and
//! strings do not), SQL lives in the store alone within the service's sources, and background tasks stop
//! with the server.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{SERVICE_TOKEN, eventually, spawn_with_stripe_proxy};

/// More checkouts than either pool has connections (SQLite 8, PostgreSQL 16): code that kept a
/// transaction open across the Stripe call would hold every connection, or SQLite's write lock.
const HELD_CHECKOUTS: usize = 20;
const WITHIN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn checkouts_held_open_at_stripe_block_no_other_request() {
    let (s, proxy) = spawn_with_stripe_proxy().await;
    let (app, prices) = (&s.app, &s.prices);
    for i in 0..HELD_CHECKOUTS {
        app.put_tenant(&format!("buyer{i}"), &json!({"name": "Buyer"})).await;
    }
    app.put_tenant("runner", &json!({"name": "Runner"})).await;

    proxy.hold(Method::POST, "/v1/checkout/sessions");
    let mut checkouts = Vec::new();
    for i in 0..HELD_CHECKOUTS {
        let (client, url, token, price) = (
            app.client.clone(),
            app.url("/api/billing/checkout"),
            app.tenant_token(&format!("buyer{i}")),
            prices.team_monthly.clone(),
        );
        checkouts.push(tokio::spawn(async move {
            client.post(url).bearer_auth(token).json(&json!({"price_id": price, "quantity": 1})).send().await
        }));
    }
    // Code that held a transaction across the calls would get stuck before this (SQLite's write
    // lock, or PostgreSQL's pool), so the checks below run either way and fail on such code.
    let all_held = eventually(Duration::from_secs(10), async || proxy.held() == HELD_CHECKOUTS).await;
    assert!(proxy.held() > 0, "no checkout reached Stripe's session call");

    // While they are held: metering, webhook intake and access checks all answer promptly.
    let reserve =
        tokio::time::timeout(WITHIN, app.reserve("runner", "fix")).await.expect("reserve within 2 s");
    assert_eq!(reserve.status(), 200);
    let id =
        reserve.json::<serde_json::Value>().await.unwrap()["reservation_id"].as_str().unwrap().to_owned();
    let commit = tokio::time::timeout(WITHIN, app.settle(&id, "commit")).await.expect("commit within 2 s");
    assert_eq!(commit.status(), 200);
    let event = json!({
        "id": "evt_held_checkout", "object": "event", "type": "customer.subscription.updated",
        "created": 1_767_225_600, "livemode": false,
        "data": {"object": {"object": "subscription", "id": "sub_x", "customer": "cus_nobody"}},
    });
    let stored = tokio::time::timeout(WITHIN, app.deliver(&event)).await.expect("webhook within 2 s");
    assert_eq!(stored, 200);
    let access = tokio::time::timeout(WITHIN, app.access("runner", "feature=workflows"))
        .await
        .expect("access within 2 s");
    assert_eq!(access.status(), 200);
    let put = tokio::time::timeout(
        WITHIN,
        app.client
            .put(app.url("/api/tenants/newcomer"))
            .bearer_auth(SERVICE_TOKEN)
            .json(&json!({"name": "New"}))
            .send(),
    )
    .await
    .expect("a tenant write within 2 s")
    .unwrap();
    assert_eq!(put.status(), 201);
    assert!(all_held, "every checkout reached Stripe's session call at once ({} held)", proxy.held());
    assert_eq!(proxy.held(), HELD_CHECKOUTS, "the checkouts were still held throughout");

    proxy.release();
    for c in checkouts {
        assert_eq!(c.await.unwrap().unwrap().status(), 200, "each held checkout completes once released");
    }
}

/// Stripe as slow as it really is: concurrent checkouts of one tenant still make one Customer
/// and queue on the lease (each sees the session the one before made), while metering another
/// tenant stays prompt.
#[tokio::test]
async fn with_stripe_slowed_checkouts_queue_per_tenant_and_metering_stays_prompt() {
    let (s, proxy) = spawn_with_stripe_proxy().await;
    proxy.set_latency(Duration::from_millis(300));
    let (app, prices) = (&s.app, &s.prices);
    let sim = s.simulator.as_ref().expect("the simulator");
    app.put_tenant("slow", &json!({"name": "Slow", "billing_email": "slow@acme.test"})).await;
    let mut checkouts = Vec::new();
    for _ in 0..3 {
        let (client, url, token, price) = (
            app.client.clone(),
            app.url("/api/billing/checkout"),
            app.tenant_token("slow"),
            prices.team_annual.clone(),
        );
        checkouts.push(tokio::spawn(async move {
            client.post(url).bearer_auth(token).json(&json!({"price_id": price, "quantity": 2})).send().await
        }));
    }
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let id = app.run("runner", "fix").await;
        assert!(started.elapsed() < WITHIN, "reserve+commit {id} took {:?}", started.elapsed());
    }
    let mut sessions = Vec::new();
    for c in checkouts {
        let response = c.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        sessions.push(response.json::<serde_json::Value>().await.unwrap()["session_id"].clone());
    }
    sessions.sort_by_key(|s| s.as_str().unwrap_or_default().to_owned());
    sessions.dedup();
    assert_eq!(sessions.len(), 3, "each checkout opened its own session");
    let customers =
        crate::helpers::sim_call(sim, Method::GET, "/v1/customers", &[("email", "slow@acme.test")]).await;
    assert_eq!(customers["data"].as_array().unwrap().len(), 1, "exactly one Customer");
    let expired =
        crate::helpers::sim_call(sim, Method::GET, "/v1/events", &[("type", "checkout.session.expired")])
            .await;
    assert_eq!(expired["data"].as_array().unwrap().len(), 2, "each new session expired the one before");
}

/// What a source file names, as the layering rules speak of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A top-level module of this crate, however it is reached: `crate::http::X`, a group
    /// `use crate::{http::X, store}`, `super::super::http` resolved from the file's place, or
    /// `$crate::http` in a macro. A `#[macro_export]` macro is reached the same way
    /// (`crate::with_db`). `crate` alone is the root itself (`use crate as c`, `use super::*` at
    /// the top), which hides every layer behind one name.
    Layer,
    /// The first segment of any other path: an external crate (`sqlx::query`, `use axum::Json`),
    /// or a type or local module (`Billing::open`), which no rule names.
    Crate,
    /// A macro call: `with_db!(…)`.
    Macro,
    /// Any identifier in code: `ApiError`.
    Ident,
    /// A string literal that is a SQL statement.
    Sql,
}
use Kind::{Crate, Ident, Layer, Macro, Sql};

/// What each layer may not name (design: domain ← store, stripe ← billing ← http ← cli, with
/// config and ratelimit beside them and telemetry a leaf that names no other module). SQL and
/// the simulator are checked for every file by the tests after this one.
const RULES: &[(&str, &[(Kind, &str)])] = &[
    (
        "src/domain",
        &[
            (Layer, "store"),
            (Layer, "stripe"),
            (Layer, "billing"),
            (Layer, "http"),
            (Layer, "cli"),
            (Layer, "config"),
            (Layer, "telemetry"),
            (Layer, "ratelimit"),
            (Crate, "axum"),
            (Crate, "reqwest"),
            (Crate, "tokio"),
        ],
    ),
    (
        "src/store",
        &[(Layer, "http"), (Layer, "billing"), (Layer, "cli"), (Layer, "stripe"), (Ident, "ApiError")],
    ),
    ("src/stripe", &[(Layer, "http"), (Layer, "billing"), (Layer, "cli"), (Layer, "store")]),
    // The use cases never migrate: `serve` and `migrate` do, every other command refuses while
    // migrations are pending (and preflight reports them).
    (
        "src/billing",
        &[
            (Layer, "http"),
            (Layer, "cli"),
            (Ident, "ApiError"),
            (Crate, "axum"),
            (Ident, "migrate_up"),
            (Ident, "migrate_down"),
        ],
    ),
    ("src/http", &[(Layer, "cli")]),
    // `AppState` is HTTP's alone: one-off commands run the same `Billing` as the service (only
    // `serve` and `demo`, which run the server, build one), and never migrate.
    ("src/cli/ops.rs", ONE_OFF_COMMANDS),
    ("src/cli/admin.rs", ONE_OFF_COMMANDS),
    ("src/cli/stripe.rs", ONE_OFF_COMMANDS),
    (
        "src/config.rs",
        &[(Layer, "billing"), (Layer, "store"), (Layer, "stripe"), (Layer, "http"), (Layer, "cli")],
    ),
    (
        "src/ratelimit.rs",
        &[
            (Layer, "billing"),
            (Layer, "store"),
            (Layer, "stripe"),
            (Layer, "http"),
            (Layer, "cli"),
            (Ident, "ApiError"),
        ],
    ),
    (
        "src/telemetry.rs",
        &[
            (Layer, "domain"),
            (Layer, "billing"),
            (Layer, "store"),
            (Layer, "stripe"),
            (Layer, "http"),
            (Layer, "cli"),
            (Layer, "config"),
            (Layer, "ratelimit"),
        ],
    ),
];

const ONE_OFF_COMMANDS: &[(Kind, &str)] =
    &[(Ident, "AppState"), (Ident, "migrate_up"), (Ident, "migrate_down")];

fn rust_files(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_owned());
        }
    } else if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            rust_files(&entry.path(), out);
        }
    }
}

/// A token of Rust source; comments are dropped, literals other than strings too.
#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Colons,
    Punct(char),
    /// A string literal's text (escapes left as written).
    Str(String),
}

/// Splits `source` into tokens with their line, so that nothing inside a comment, a string, a
/// char literal or a raw string is taken for code (and a `'{'` moves no brace depth).
fn tokens(source: &str) -> Vec<(usize, Tok)> {
    let c: Vec<char> = source.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let ident_char = |ch: char| ch == '_' || ch.is_alphanumeric();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    // Skips to just past the end of a string body starting at `i`; `hashes` for a raw string.
    let string_end = |mut i: usize, raw: Option<usize>, line: &mut usize| -> usize {
        while i < c.len() {
            match (c[i], raw) {
                ('\n', _) => *line += 1,
                ('\\', None) => {
                    if at(i + 1) == '\n' {
                        *line += 1;
                    }
                    i += 1;
                }
                ('"', None) => return i + 1,
                ('"', Some(n)) if (1..=n).all(|k| at(i + k) == '#') => return i + 1 + n,
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        let start_line = line;
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let end = string_end(i + 1, None, &mut line);
            out.push((start_line, Tok::Str(c[i + 1..end.saturating_sub(1).max(i + 1)].iter().collect())));
            i = end;
        } else if matches!(ch, 'b' | 'c') && at(i + 1) == '"' {
            let end = string_end(i + 2, None, &mut line);
            out.push((start_line, Tok::Str(c[i + 2..end.saturating_sub(1).max(i + 2)].iter().collect())));
            i = end;
        } else if ch == 'b' && at(i + 1) == '\'' {
            i = char_literal_end(&c, i + 1);
        } else if let Some((open, hashes)) = raw_string_start(&c, i) {
            let end = string_end(open + 1, Some(hashes), &mut line);
            let body_end = end.saturating_sub(1 + hashes).max(open + 1);
            out.push((start_line, Tok::Str(c[open + 1..body_end].iter().collect())));
            i = end;
        } else if ch == 'r' && at(i + 1) == '#' && ident_char(at(i + 2)) {
            // A raw identifier: `r#type` is `type`.
            let from = i + 2;
            i = from;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push((start_line, Tok::Ident(c[from..i].iter().collect())));
        } else if ch == '\'' {
            // A char literal (`'x'`, `'\n'`, `'{'`) or a lifetime (`'a`, `'static`).
            if at(i + 1) == '\\' || (at(i + 2) == '\'' && at(i + 1) != '\'') {
                i = char_literal_end(&c, i);
            } else {
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            // A number (`1_000u64`, `0x1F`, `2.5e3`); a `.` not followed by a digit is a method
            // call or a range.
            while i < c.len() && (ident_char(c[i]) || (c[i] == '.' && at(i + 1).is_ascii_digit())) {
                i += 1;
            }
        } else if ident_char(ch) {
            let from = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push((start_line, Tok::Ident(c[from..i].iter().collect())));
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((start_line, Tok::Colons));
            i += 2;
        } else {
            out.push((start_line, Tok::Punct(ch)));
            i += 1;
        }
    }
    out
}

/// `r"…"`, `r#"…"#`, `br"…"`, `cr#"…"#`: the index of the opening quote and the number of `#`.
fn raw_string_start(c: &[char], i: usize) -> Option<(usize, usize)> {
    let r = match c.get(i)? {
        'r' => i,
        'b' | 'c' if c.get(i + 1) == Some(&'r') => i + 1,
        _ => return None,
    };
    let hashes = c[r + 1..].iter().take_while(|ch| **ch == '#').count();
    (c.get(r + 1 + hashes) == Some(&'"')).then_some((r + 1 + hashes, hashes))
}

/// Just past the closing quote of the char literal whose opening quote is at `i`.
fn char_literal_end(c: &[char], i: usize) -> usize {
    let mut j = i + 1;
    if c.get(j) == Some(&'\\') {
        j += 2;
    } else {
        j += 1;
    }
    while j < c.len() && c[j] != '\'' && c[j] != '\n' {
        j += 1;
    }
    j + 1
}

/// The module a file is: `src/billing/usage.rs` is `billing::usage`, `src/http/mod.rs` is `http`,
/// `src/lib.rs` the crate root.
fn module_of(relative: &str) -> Vec<String> {
    let mut parts: Vec<String> =
        relative.trim_end_matches(".rs").split('/').skip_while(|p| *p == "src").map(str::to_owned).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// What the path `segments` (as written in `module`) names: the crate's top-level module it
/// reaches, or the external crate it starts with.
fn resolve(segments: &[String], module: &[String]) -> Vec<(Kind, String)> {
    let mut base: Vec<String> = match segments[0].as_str() {
        "crate" => Vec::new(),
        "self" | "super" => module.to_vec(),
        first if module.is_empty() => {
            // At the crate root a bare path may name a module of ours or an external crate.
            return vec![(Layer, first.to_owned()), (Crate, first.to_owned())];
        }
        first => return vec![(Crate, first.to_owned())],
    };
    let mut rest = &segments[1..];
    if segments[0] == "super" {
        base.pop();
    }
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|s| !matches!(s.as_str(), "self" | "*")).cloned());
    vec![(Layer, base.first().cloned().unwrap_or_else(|| "crate".to_owned()))]
}

/// One tree of a `use` declaration from `i`, every full path pushed to `out` with the line of its
/// last segment; returns the index after the tree.
fn use_tree(
    t: &[(usize, Tok)],
    mut i: usize,
    mut path: Vec<String>,
    out: &mut Vec<(usize, Vec<String>)>,
) -> usize {
    let mut line = t.get(i).map_or(0, |(l, _)| *l);
    loop {
        match t.get(i) {
            Some((_, Tok::Colons | Tok::Punct('$'))) => i += 1,
            Some((l, Tok::Ident(s))) if s != "as" => {
                path.push(s.clone());
                line = *l;
                i += 1;
                if !matches!(t.get(i), Some((_, Tok::Colons))) {
                    break;
                }
            }
            Some((_, Tok::Punct('{'))) => {
                i += 1;
                while let Some((_, tok)) = t.get(i) {
                    match tok {
                        Tok::Punct('}') => return i + 1,
                        Tok::Punct(',') => i += 1,
                        _ => i = use_tree(t, i, path.clone(), out).max(i + 1),
                    }
                }
                return i;
            }
            Some((l, Tok::Punct('*'))) => {
                path.push("*".to_owned());
                line = *l;
                i += 1;
                break;
            }
            _ => break,
        }
    }
    if matches!(t.get(i), Some((_, Tok::Ident(s))) if s == "as") {
        i += 2;
    }
    if !path.is_empty() {
        out.push((line, path));
    }
    i
}

/// Whether a string literal is a SQL statement.
fn is_sql(text: &str) -> bool {
    let s = text.trim_start();
    let words: Vec<&str> = s.split_whitespace().take(3).collect();
    match words.as_slice() {
        ["SELECT", ..] | ["INSERT", "INTO", ..] | ["DELETE", "FROM", ..] | ["VACUUM", ..] => true,
        ["PRAGMA", ..] | ["ALTER", "TABLE", ..] | ["WITH", "RECURSIVE", ..] => true,
        ["CREATE" | "DROP", "TABLE" | "INDEX" | "UNIQUE", ..] => true,
        ["UPDATE", _, "SET", ..] => true,
        ["WITH", ..] => s.contains(" AS ("),
        _ => false,
    }
}

/// Every name the source of `module` refers to in code, with its line: comments and string
/// contents are not code, and a path counts however it is spelt (grouped, inline, relative).
fn names(source: &str, module: &[String]) -> Vec<(usize, Kind, String)> {
    let t = tokens(source);
    let mut found = Vec::new();
    // Inline modules (`mod tests { … }`) with the brace depth their body opened at: `super`
    // inside one is the file's module.
    let (mut inline, mut depth) = (Vec::<(String, usize)>::new(), 0usize);
    let mut i = 0;
    while i < t.len() {
        let (line, tok) = &t[i];
        let here = || module.iter().cloned().chain(inline.iter().map(|(m, _)| m.clone())).collect::<Vec<_>>();
        let prev = i.checked_sub(1).map(|p| &t[p].1);
        match tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Str(text) if is_sql(text) => {
                found.push((*line, Sql, text.chars().take(40).collect()));
            }
            Tok::Ident(word) if word == "mod" => {
                if let (Some((_, Tok::Ident(name))), Some((_, Tok::Punct('{')))) =
                    (t.get(i + 1), t.get(i + 2))
                {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(word) if word == "use" && !matches!(t.get(i + 1), Some((_, Tok::Punct('<')))) => {
                let mut paths = Vec::new();
                let end = use_tree(&t, i + 1, Vec::new(), &mut paths);
                let module = here();
                for (line, path) in paths {
                    found.extend(resolve(&path, &module).into_iter().map(|(k, n)| (line, k, n)));
                }
                // The tree's identifiers count as names too (`use crate::http::error::ApiError`).
                for (line, tok) in &t[i + 1..end.min(t.len())] {
                    if let Tok::Ident(word) = tok {
                        found.push((*line, Ident, word.clone()));
                    }
                }
                i = end.max(i + 1);
                continue;
            }
            Tok::Ident(word) => {
                found.push((*line, Ident, word.clone()));
                if matches!(t.get(i + 1), Some((_, Tok::Punct('!'))))
                    && matches!(t.get(i + 2), Some((_, Tok::Punct('(' | '[' | '{'))))
                {
                    found.push((*line, Macro, word.clone()));
                }
                // The first segment of a path (`a::b`, `$crate::b`, `<T as a::B>`), not a later
                // one or a field.
                let continues = matches!(prev, Some(Tok::Colons | Tok::Punct('.')));
                if !continues && matches!(t.get(i + 1), Some((_, Tok::Colons))) {
                    let mut segments = vec![word.clone()];
                    let mut j = i + 1;
                    while let (Some((_, Tok::Colons)), Some((_, Tok::Ident(s)))) = (t.get(j), t.get(j + 1)) {
                        segments.push(s.clone());
                        j += 2;
                    }
                    if segments.len() > 1 {
                        found.extend(resolve(&segments, &here()).into_iter().map(|(k, n)| (*line, k, n)));
                    }
                }
            }
            Tok::Colons if !matches!(prev, Some(Tok::Ident(_) | Tok::Punct('>'))) => {
                // `::name::…`: always an external crate.
                if let Some((line, Tok::Ident(first))) = t.get(i + 1) {
                    found.push((*line, Crate, first.clone()));
                }
            }
            _ => {}
        }
        i += 1;
    }
    found.sort();
    found.dedup();
    found
}

/// Whether `name` breaks the rule `(kind, forbidden)`. A `#[macro_export]` macro lives at the
/// crate root, so importing it (`use crate::with_db`) breaks a macro rule as calling it does; and
/// naming the crate root itself breaks every layer rule.
fn breaks(name: &(usize, Kind, String), (kind, forbidden): &(Kind, &str)) -> bool {
    let (_, k, n) = name;
    match kind {
        Macro => n == forbidden && matches!(k, Macro | Layer),
        Sql => *k == Sql,
        Layer => *k == Layer && (n == forbidden || n == "crate"),
        _ => k == kind && n == forbidden,
    }
}

fn describe(kind: Kind, name: &str) -> String {
    match kind {
        Layer if name == "crate" => "the crate root (hiding which layer)".to_owned(),
        Layer => format!("crate::{name}"),
        Crate => format!("{name}::"),
        Macro => format!("{name}!"),
        Ident => name.to_owned(),
        Sql => format!("SQL {name:?}"),
    }
}

/// The rule `forbidden` checked against one file's source.
fn broken_in(relative: &str, source: &str, forbidden: &[(Kind, &str)]) -> Vec<String> {
    let module = module_of(relative);
    let mut broken = Vec::new();
    for name in names(source, &module) {
        if let Some((kind, _)) = forbidden.iter().find(|rule| breaks(&name, rule)) {
            broken.push(format!("{relative}:{} names {}", name.0, describe(*kind, &name.2)));
        }
    }
    broken
}

/// The files under `dir` (relative to the manifest), each with its relative path and source.
fn sources(dir: &str) -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join(dir), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let relative = f.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            (relative, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

#[test]
fn layers_only_import_downward() {
    let mut broken = Vec::new();
    for (layer, forbidden) in RULES {
        let files = sources(layer);
        assert!(!files.is_empty(), "{layer} has sources");
        for (relative, source) in files {
            broken.extend(broken_in(&relative, &source, forbidden));
        }
    }
    assert!(broken.is_empty(), "layering rules broken:\n{}", broken.join("\n"));
    // The scan itself sees the real sources' names (a scanner that saw nothing would pass).
    let seen = |file: &str, rule: (Kind, &str)| {
        sources(file).iter().any(|(relative, source)| !broken_in(relative, source, &[rule]).is_empty())
    };
    for (file, rule) in [
        ("src/http/mod.rs", (Layer, "billing")),
        ("src/cli/mod.rs", (Layer, "http")),
        ("src/billing/mod.rs", (Layer, "store")),
        ("src/store/tenants.rs", (Macro, "with_db")),
        ("src/store/tenants.rs", (Sql, "")),
        ("src/http/error.rs", (Crate, "axum")),
    ] {
        assert!(seen(file, rule), "the scan sees {} in {file}", describe(rule.0, rule.1));
    }
}

/// What only the store may hold: a SQL statement in a string, `sqlx`, and the store's exported
/// query macros.
const SQL: &[(Kind, &str)] =
    &[(Sql, ""), (Crate, "sqlx"), (Macro, "with_db"), (Macro, "with_writer"), (Macro, "in_transaction")];

/// SQL lives in the store alone; only the CLI reaches the simulator (behind the `sim` feature).
#[test]
fn only_the_store_writes_sql_and_only_cli_reaches_the_simulator() {
    let mut broken = Vec::new();
    for (relative, source) in sources("src") {
        if !relative.starts_with("src/store") {
            broken.extend(broken_in(&relative, &source, SQL));
        }
        if !relative.starts_with("src/cli") {
            broken.extend(broken_in(&relative, &source, &[(Crate, "stripe_sim")]));
        }
    }
    assert!(broken.is_empty(), "outside their layer:\n{}", broken.join("\n"));
}

/// The rule checker itself: every spelling of a forbidden module is found, the same name in a
/// comment or a string is not.
#[test]
fn the_layering_check_sees_every_spelling_and_ignores_comments_and_strings() {
    let http = &[(Layer, "http")][..];
    let caught = |source: &str| broken_in("src/billing/usage.rs", source, http);
    // Grouped, nested groups, `self` in a group, inline without `use`, relative, `$crate`.
    for source in [
        "use crate::{domain::clock::Clock, http::AppState};",
        "use crate::{domain, store::{Store, TenantRow}, http::{self, error::ApiError}};",
        "pub use crate::{\n    store,\n    http,\n};",
        "fn f(s: &crate::http::AppState) { let _ = crate::http::router(s.clone()); }",
        "use super::super::http::AppState;",
        "let r = super::super::http::router(state);",
        "use super::super::{store, http};",
        "macro_rules! m { () => { $crate::http::router } }",
        "fn f() -> <X as crate::http::Y>::Z {}",
        "use crate as root;",
        "use {std::fmt, crate::http::AppState};",
    ] {
        assert!(!caught(source).is_empty(), "not caught: {source}");
    }
    let found = caught("use crate::{domain::clock::Clock,\n    http::AppState};");
    assert_eq!(found, vec!["src/billing/usage.rs:2 names crate::http".to_owned()]);
    // `super` counts the file's inline modules (here `billing::usage::tests`, so this is
    // `billing::http`), and from a layer's own root it is the crate root.
    assert!(caught("mod tests { use super::super::http; }").is_empty());
    assert!(!broken_in("src/billing/mod.rs", "mod tests { use super::super::http; }", http).is_empty());
    assert!(!broken_in("src/billing/mod.rs", "use super::http::AppState;", http).is_empty());
    assert!(broken_in("src/billing/mod.rs", "use super::store::Store;", http).is_empty());
    // Not code: comments (nested too), strings, raw strings, char literals; and a sibling path.
    for source in [
        "// crate::http is only mentioned here\nlet x = 1; // crate::http",
        "/* outer /* crate::http */ still crate::http */ fn f() {}",
        "let s = \"crate::http::AppState\"; let r = r#\"use crate::http;\"#;",
        "let c = '{'; let q = '\"'; fn f<'a>(x: &'a str) -> &'a str { x } use super::usage::http;",
        "let v = store.http::<u8>(); let w = x.http;",
        "/// use crate::http;\n//! crate::http\nfn f() {}",
    ] {
        assert!(caught(source).is_empty(), "wrongly caught in {source}: {:?}", caught(source));
    }
    // A brace inside a char literal neither ends an inline module early nor keeps it open.
    let in_mod = "mod tests { let c = '}'; use super::http; }";
    assert!(broken_in("src/billing/mod.rs", in_mod, http).is_empty(), "billing::http, inside tests");
    let after_mod = "mod tests { let c = '{'; }\nuse super::http;";
    assert!(!broken_in("src/billing/mod.rs", after_mod, http).is_empty(), "crate::http, after tests");

    // Macros, idents, crates and SQL.
    let bench = "use hydra_billing::with_db;\nwith_db!(&store, |pool| {\n    sqlx::query(\"UPDATE tenants SET a = 1\")\n})";
    let found = broken_in("benches/x.rs", bench, SQL);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(broken_in("src/billing/x.rs", "use crate::with_db;", SQL).len(), 1);
    assert!(broken_in("src/billing/x.rs", "let m = \"Select a plan\"; if a != b {}", SQL).is_empty());
    let api_error = &[(Ident, "ApiError")][..];
    assert!(!broken_in("src/store/x.rs", "use crate::http::error::{self, ApiError};", api_error).is_empty());
    assert!(broken_in("src/store/x.rs", "// ApiError\nlet s = \"ApiError\";", api_error).is_empty());
}

/// A server running its background tasks (as `serve` does) on a fresh database and a manual
/// clock; stopped by sending on the returned channel.
struct WithJobs {
    store: hydra_billing::store::Store,
    clock: hydra_billing::domain::clock::Clock,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: crate::helpers::TestDb,
}

async fn spawn_with_jobs() -> WithJobs {
    use hydra_billing::billing::Billing;
    use hydra_billing::http::{AppState, Application};

    let test_db = crate::helpers::fresh_db().await;
    let config = hydra_billing::config::Config::from_vars(&crate::helpers::test_env()).unwrap();
    test_db.db.migrate_up().await.unwrap();
    let clock = hydra_billing::domain::clock::Clock::manual(crate::helpers::START);
    let billing = Billing::open(config, test_db.db.clone(), clock.clone()).await.unwrap();
    let store = billing.store.clone();
    let app = Application::build(AppState::new(billing)).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(true, async move {
        let _ = stopped.await;
    }));
    WithJobs { store, clock, stop, server, _db: test_db }
}

/// The background tasks `serve` runs (the event worker and the jobs) belong to the server: they
/// work while it runs and are stopped, not left behind, when it shuts down.
#[tokio::test]
async fn background_tasks_run_with_the_server_and_stop_with_it() {
    let WithJobs { store, stop, server, _db, .. } = spawn_with_jobs().await;
    // An event for no customer: a running worker parks it.
    let store_event = |id: &'static str| {
        let store = store.clone();
        async move {
            let event = hydra_billing::store::NewEvent {
                id,
                kind: "invoice.paid",
                livemode: false,
                created: crate::helpers::START,
                customer_id: None,
                payload: "{}",
                status: "received",
                error: None,
                received_at: crate::helpers::START,
                received_ms: crate::helpers::START * 1_000,
            };
            assert!(store.store_event(event).await.unwrap());
        }
    };
    let status_of = |id: &'static str| {
        let store = store.clone();
        async move {
            let all = store.list_events(None, 10).await.unwrap();
            all.into_iter().find(|e| e.id == id).map(|e| e.status).unwrap_or_default()
        }
    };
    store_event("evt_while_running").await;
    assert!(
        eventually(Duration::from_secs(5), async || status_of("evt_while_running").await == "parked").await,
        "the worker processes events while the server runs"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("shutdown waits for the background tasks and returns")
        .unwrap()
        .unwrap();
    store_event("evt_after_shutdown").await;
    // The worker polls every second even unwoken: three seconds would have seen it work.
    assert!(
        !eventually(Duration::from_secs(3), async || status_of("evt_after_shutdown").await != "received")
            .await,
        "no worker is left running after shutdown"
    );
}

/// Each job runs on its own cadence as the service's clock moves (a test clock here), and only
/// once per period: the run is claimed in the database, as replicas would have to.
#[tokio::test]
async fn each_job_runs_on_its_cadence_of_the_service_clock() {
    use hydra_billing::billing::jobs::Job;
    let w = spawn_with_jobs().await;
    let starts = || async {
        w.store.job_starts().await.unwrap().into_iter().collect::<std::collections::HashMap<_, _>>()
    };
    let all_at = |at: i64| async move {
        let s = starts().await;
        Job::ALL.iter().all(|j| s.get(j.name()).is_some_and(|t| *t >= at))
    };
    let start = crate::helpers::START;
    assert!(
        eventually(Duration::from_secs(10), async || all_at(start).await).await,
        "every job runs at start: {:?}",
        starts().await
    );
    // A minute on: the per-minute and per-10-second jobs are due, the others are not.
    w.clock.advance(60);
    let minute = |name: &'static str| async move { starts().await.get(name).copied() == Some(start + 60) };
    for name in ["reservation-expiry", "outbox"] {
        assert!(
            eventually(Duration::from_secs(10), async || minute(name).await).await,
            "{name} runs a minute on: {:?}",
            starts().await
        );
    }
    let s = starts().await;
    for job in [Job::PeriodEnd, Job::GraceExpiry, Job::FreeTierReset, Job::Reconcile] {
        assert_eq!(s.get(job.name()), Some(&start), "{} is not due after a minute", job.name());
    }
    // An hour on: every job has run again, once.
    w.clock.advance(3600 - 60);
    assert!(
        eventually(Duration::from_secs(10), async || all_at(start + 3600).await).await,
        "every job runs an hour on: {:?}",
        starts().await
    );
    let s = starts().await;
    assert!(Job::ALL.iter().all(|j| s.get(j.name()) == Some(&(start + 3600))), "{s:?}");
    w.stop.send(()).unwrap();
    let _ = w.server.await;
}

/// A run that outlasted its period (slow SMTP, a long reconcile) records its outcome without
/// moving the start back behind the claim made since, so the job is not run a second time.
#[tokio::test]
async fn a_late_record_never_moves_a_jobs_start_back() {
    let test_db = crate::helpers::fresh_db().await;
    test_db.db.migrate_up().await.unwrap();
    let store = &test_db.db;
    let t = crate::helpers::START;
    assert!(store.claim_job_run("outbox", t, 10).await.unwrap());
    assert!(store.claim_job_run("outbox", t + 10, 10).await.unwrap(), "the next period is claimed");
    store.record_job_run("outbox", t, "ok", 1).await.unwrap();
    let starts: std::collections::HashMap<_, _> = store.job_starts().await.unwrap().into_iter().collect();
    assert_eq!(starts.get("outbox"), Some(&(t + 10)));
    assert!(!store.claim_job_run("outbox", t + 10, 10).await.unwrap(), "that period stays claimed once");
}
