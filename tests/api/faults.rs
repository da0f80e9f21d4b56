//! Fault drills as tests: a full SQLite disk, a PostgreSQL outage, kill -9 of a serving process,
//! two replicas on one database. Each proves what a 2xx promised is in the database afterwards.

use std::time::{Duration, Instant};

use hydra_billing::store::Store;
use hydra_billing::with_db;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, count, eventually, spawn_app};

/// Sets `PRAGMA max_page_count` on every connection of both SQLite pools, the general one and
/// the hot writers' (the pragma is per connection): holding all of them at once guarantees none
/// is missed.
async fn limit_pages(db: &Store, pages: Option<i64>) {
    let mut held = Vec::new();
    for pool in [db.db(), db.writer()] {
        let hydra_billing::store::Db::Sqlite(pool) = pool else { return };
        for _ in 0..pool.options().get_max_connections() {
            held.push(tokio::time::timeout(Duration::from_secs(10), pool.acquire()).await.unwrap().unwrap());
        }
    }
    for conn in &mut held {
        let limit = pages.unwrap_or(1_073_741_823);
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {limit}")))
            .execute(&mut **conn)
            .await
            .unwrap();
    }
}

async fn page_count(db: &Store) -> i64 {
    let hydra_billing::store::Db::Sqlite(pool) = db.db() else { return 0 };
    let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count").fetch_one(pool).await.unwrap();
    pages
}

/// A distinct, signed event the service stores (no customer it knows: parked, never fetched).
fn drill_event(id: &str) -> Value {
    json!({
        "id": id, "object": "event", "type": "invoice.paid", "livemode": false, "created": 1,
        "api_version": "2026-10-28.endive",
        // A large body: the fill reaches the limit in a few dozen requests, not thousands.
        "data": {"object": {"object": "invoice", "id": format!("in_{id}"), "customer": "cus_drill",
                 "description": "x".repeat(4000)}}
    })
}

/// What one drill request was, and what it was answered.
#[derive(Debug, Clone)]
enum Write {
    Event(String),
    Tenant(String),
    Reserve(String),
    Commit(String),
}

/// How a drill request was answered: its status and, for an error, its code and `Retry-After`.
#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    code: Option<String>,
    retry_after: Option<String>,
}

impl Answer {
    /// The answer and its JSON body.
    async fn of(response: reqwest::Response) -> (Answer, Value) {
        let status = response.status();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("?").to_owned());
        let body: Value = response.json().await.unwrap_or_default();
        let code = body["error"]["code"].as_str().map(str::to_owned);
        (Answer { status, code, retry_after }, body)
    }

    fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// Refused as the README promises while the database cannot write: 503
    /// `database_unavailable` with a `Retry-After` of some seconds, so the caller (Stripe too)
    /// comes back.
    fn is_database_unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
            && self.code.as_deref() == Some("database_unavailable")
            && self.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s > 0)
    }
}

/// One write of each kind against `app`, each logged with its answer.
async fn write_round(app: &TestApp, tag: &str, log: &mut Vec<(Write, Answer)>) {
    let event = format!("evt_{tag}");
    let r =
        crate::helpers::signed_webhook(&app.client, &app.base, &drill_event(&event)).send().await.unwrap();
    log.push((Write::Event(event.clone()), Answer::of(r).await.0));
    let tenant = format!("t_{tag}");
    let r = app.put_tenant(&tenant, &json!({"name": "x".repeat(200)})).await;
    log.push((Write::Tenant(tenant.clone()), Answer::of(r).await.0));
    let (answer, body) = Answer::of(app.reserve(&tenant, "fix").await).await;
    if let Some(id) = body["reservation_id"].as_str() {
        log.push((Write::Reserve(id.to_owned()), answer));
        let r = app.settle(id, "commit").await;
        log.push((Write::Commit(id.to_owned()), Answer::of(r).await.0));
    } else {
        log.push((Write::Reserve(String::new()), answer));
    }
}

/// Free tenants whose counters differ from their committed reservations (the ledger).
pub async fn ledger_mismatches(db: &Store) -> i64 {
    let sql = "SELECT COUNT(*) FROM tenants t WHERE t.free_tier_fixes_used <> (SELECT COUNT(*) \
               FROM usage_reservations r WHERE r.tenant_id = t.id AND r.metric = 'fix' \
               AND r.tier = 'free' AND r.status = 'committed')";
    count(db, sql, None).await
}

async fn in_db(db: &Store, what: &Write) -> bool {
    let (sql, id): (&str, &str) = match what {
        Write::Event(id) => ("SELECT COUNT(*) FROM stripe_events WHERE id = $1", id),
        Write::Tenant(id) => ("SELECT COUNT(*) FROM tenants WHERE id = $1", id),
        Write::Reserve(id) => ("SELECT COUNT(*) FROM usage_reservations WHERE id = $1", id),
        Write::Commit(id) => {
            ("SELECT COUNT(*) FROM usage_reservations WHERE id = $1 AND status = 'committed'", id)
        }
    };
    count(db, sql, Some(id)).await == 1
}

/// Whether `/readyz` answers 200 within `deadline`.
async fn ready_within(app: &TestApp, deadline: Duration) -> bool {
    eventually(deadline, async || {
        app.client.get(app.url("/readyz")).send().await.unwrap().status() == StatusCode::OK
    })
    .await
}

/// SQLite's page limit reached (`max_page_count`, deterministic, no real disk needed): requests
/// that cannot be written are refused (503, never a hang or a 500), the service says it is not
/// ready, and once the limit is raised writes resume without a restart and every write answered
/// 2xx before, during and after is in the database.
#[tokio::test]
async fn a_full_sqlite_database_refuses_writes_and_recovers_without_losing_an_acknowledged_one() {
    let app = spawn_app().await;
    if app.db.kind() != "sqlite" {
        return; // max_page_count is SQLite's; the PostgreSQL outage drill covers the other store.
    }
    let db = app.db.clone();
    let full = async || limit_pages(&db, Some(page_count(&db).await)).await;
    full_disk_drill(&app, full, full, async || limit_pages(&db, None).await).await;
}

/// A tmpfs of 8 MiB mounted for one test, unmounted on drop: a real disk that fills.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// None where mounting is not allowed (not root, or a container without the right).
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { dir })
    }

    fn ballast(&self) -> std::path::PathBuf {
        self.dir.path().join("ballast")
    }

    /// Fills every free byte (again, if something was freed since).
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(self.ballast()).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.ballast()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The same with a real full disk: the database on a small tmpfs that a ballast file fills, then
/// frees. Where mounting is not allowed (not root) it says so and checks nothing more.
#[tokio::test]
async fn a_really_full_disk_refuses_writes_and_recovers_without_losing_an_acknowledged_one() {
    if std::env::var("HYDRA_TEST_POSTGRES_URL").is_ok() {
        return; // SQLite's drill: once, in the SQLite pass.
    }
    let Some(disk) = SmallDisk::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let url = format!("sqlite://{}", disk.dir.path().join("billing.db").display());
    let db = Store::connect(&url).await.unwrap();
    let test_db = crate::helpers::TestDb::external(db, url);
    let clock = hydra_billing::domain::clock::Clock::manual(crate::helpers::START);
    let app = crate::helpers::spawn_app_on(test_db, clock, |_| {}).await;
    full_disk_drill(&app, async || disk.fill(), async || disk.fill(), async || disk.free()).await;
}

/// Writes before, during and after a full disk; `fill` and `free` make and end it.
///
/// `refill` runs again just before readiness is asked: the page limit is a per-connection
/// setting, and a connection the service closed and reopened during the fill has none.
async fn full_disk_drill(app: &TestApp, fill: impl AsyncFn(), refill: impl AsyncFn(), free: impl AsyncFn()) {
    let mut log = Vec::new();
    for i in 0..3 {
        write_round(app, &format!("before_{i}"), &mut log).await;
    }
    assert!(log.iter().all(|(_, s)| s.is_success()), "{log:?}");

    fill().await;
    let started = Instant::now();
    let mut refused = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let before = log.len();
        let t = Instant::now();
        write_round(app, &format!("full_{i}"), &mut log).await;
        slowest = slowest.max(t.elapsed());
        for (what, answer) in &log[before..] {
            assert!(
                answer.is_success() || answer.is_database_unavailable(),
                "{what:?} answered {answer:?} while the disk is full (2xx, or 503 database_unavailable with Retry-After)"
            );
            refused += usize::from(!answer.is_success());
        }
    }
    assert!(refused > 20, "the limit refused writes ({refused} of {})", log.len());
    refill().await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap().status();
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE, "not ready while no write can commit");
    eprintln!("full disk: {refused} refused, slowest round {slowest:?}, in {:?}", started.elapsed());

    // Space comes back; the same process carries on.
    free().await;
    let back = Instant::now();
    assert!(ready_within(app, Duration::from_secs(10)).await, "ready again without a restart");
    for i in 0..5 {
        let before = log.len();
        write_round(app, &format!("after_{i}"), &mut log).await;
        assert!(log[before..].iter().all(|(_, s)| s.is_success()), "{:?}", &log[before..]);
    }
    eprintln!("writes resumed {:?} after space came back", back.elapsed());

    // Every 2xx is there, read through a connection the service never used.
    let fresh = Store::connect(&app.shared_db().url).await.unwrap();
    let mut missing = Vec::new();
    for (what, answer) in &log {
        if answer.is_success() && !in_db(&fresh, what).await {
            missing.push(what.clone());
        }
    }
    assert!(missing.is_empty(), "answered 2xx but not in the database: {missing:?}");
    assert_eq!(ledger_mismatches(&fresh).await, 0, "every counter equals its committed reservations");
}

/// The statuses a drill's events may end in once the worker is done with them.
pub async fn unsettled_events(db: &Store) -> i64 {
    count(db, "SELECT COUNT(*) FROM stripe_events WHERE status IN ('received', 'processing')", None).await
}

/// Free tenants with more committed fixes than the free tier allows.
async fn tenants_over_the_limit(db: &Store) -> i64 {
    let limit = hydra_billing::domain::catalogue::Metric::Fix.free_limit();
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT tenant_id FROM usage_reservations WHERE metric = 'fix' \
         AND tier = 'free' AND status = 'committed' GROUP BY tenant_id HAVING COUNT(*) > {limit}) o"
    );
    count(db, &sql, None).await
}

/// kill -9 in the middle of a burst of distinct signed webhooks and of racing reserve/commit
/// pairs: after a restart on the same database every event answered 2xx is stored and gets
/// processed, every reservation and commit answered 2xx is there, counters equal the ledger and
/// no tenant is over its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_nothing_that_was_answered() {
    let test_db = crate::helpers::fresh_db().await;
    let serve = crate::cli::Serve::start_on(&test_db.url, &[]);
    let base = format!("http://127.0.0.1:{}", serve.port);
    let serve = std::sync::Arc::new(std::sync::Mutex::new(serve));
    let client = reqwest::Client::new();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Write>::new()));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let (client, base, acknowledged, answered) =
            (client.clone(), base.clone(), acknowledged.clone(), answered.clone());
        load.spawn(async move {
            for i in 0.. {
                let (what, ok) = if worker % 2 == 0 {
                    let id = format!("evt_kill_{worker}_{i}");
                    let mut event = drill_event(&id);
                    event["data"]["object"]["customer"] = json!(format!("cus_kill_{}", i % 7));
                    let sent = crate::helpers::signed_webhook(&client, &base, &event).send().await;
                    (Write::Event(id), sent.map(|r| r.status().is_success()))
                } else {
                    // Workers race on the same few tenants, each capped at the free limit.
                    let tenant = format!("k{}", i % 40);
                    let sent = client
                        .post(format!("{base}/api/tenants/{tenant}/usage/fix/reserve"))
                        .bearer_auth(crate::helpers::SERVICE_TOKEN)
                        .send()
                        .await;
                    let Ok(r) = sent else { break };
                    let ok = r.status().is_success();
                    let body: Value = r.json().await.unwrap_or_default();
                    match body["reservation_id"].as_str().filter(|_| ok) {
                        Some(id) => {
                            acknowledged.lock().unwrap().push(Write::Reserve(id.to_owned()));
                            let sent = client
                                .post(format!("{base}/api/usage/reservations/{id}/commit"))
                                .bearer_auth(crate::helpers::SERVICE_TOKEN)
                                .send()
                                .await;
                            (Write::Commit(id.to_owned()), sent.map(|r| r.status().is_success()))
                        }
                        None => continue,
                    }
                };
                match ok {
                    Ok(true) => {
                        acknowledged.lock().unwrap().push(what);
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    // The process is gone: this worker's burst is over.
                    Err(_) => break,
                }
            }
        });
    }
    // Killed mid-burst: well after the load is flowing, long before it could end.
    let flowing = eventually(Duration::from_secs(60), async || {
        answered.load(std::sync::atomic::Ordering::Relaxed) >= 300
    })
    .await;
    assert!(flowing, "the burst got going");
    serve.lock().unwrap().kill_9();
    while load.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().unwrap().clone();

    // A new process on the same database finishes what was stored.
    let restarted = crate::cli::Serve::start_on(&test_db.url, &[]);
    let drained = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(60), async || unsettled_events(&test_db.db).await == 0).await,
        "the restarted worker processes every stored event"
    );
    let lost: Vec<_> = {
        let mut lost = Vec::new();
        for what in &acknowledged {
            if !in_db(&test_db.db, what).await {
                lost.push(what.clone());
            }
        }
        lost
    };
    assert!(lost.is_empty(), "answered 2xx before the kill, missing after: {lost:?}");
    assert_eq!(ledger_mismatches(&test_db.db).await, 0, "counters equal the committed reservations");
    assert_eq!(tenants_over_the_limit(&test_db.db).await, 0, "no tenant over its free limit");
    eprintln!(
        "kill -9 on {}: {} writes acknowledged before the kill, all kept; the restart settled every event in {:?}",
        test_db.db.kind(),
        acknowledged.len(),
        drained.elapsed()
    );
    drop(restarted);
}

/// A PostgreSQL instance of the test's own (initdb in a temp dir, another port), so an outage
/// can be staged without touching the shared server. Stopped and removed on drop.
struct OwnPostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    /// None when this machine has no PostgreSQL server binaries.
    fn init() -> Option<OwnPostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|v| v.path().join("bin"))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = OwnPostgres { bin, dir, port };
        if pg.as_root() {
            // initdb and postgres refuse to run as root: the data belongs to the postgres user.
            let chown = std::process::Command::new("chown").arg("postgres:").arg(pg.dir.path()).status();
            assert!(chown.unwrap().success());
        }
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"]);
        Some(pg)
    }

    fn as_root(&self) -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let output = if self.as_root() {
            std::process::Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .arg(exe)
                .args(args)
                .output()
        } else {
            std::process::Command::new(exe).args(args).output()
        }
        .unwrap();
        assert!(output.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]);
    }

    /// The server dies at once, as a crash or a lost host would look to the service.
    fn stop_now(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(if self.as_root() { "runuser" } else { "true" })
            .args(if self.as_root() { vec!["-u", "postgres", "--"] } else { vec![] })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// A PostgreSQL outage in the middle of traffic: while the database is down every one of 20
/// concurrent requests (webhook, tenant, reserve, access, status) is answered within 3 s (the
/// pool's acquire timeout is 2 s) with 503 `database_unavailable` and Retry-After, never a 500
/// or a hang, and `/readyz` fails; once it is back the service recovers by itself, and every write
/// answered 2xx is there. Runs in the PostgreSQL pass (it starts its own instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_answered_fast_and_clearly_and_recovers_by_itself() {
    if std::env::var("HYDRA_TEST_POSTGRES_URL").is_err() {
        return;
    }
    let Some(pg) = OwnPostgres::init() else {
        panic!("the PostgreSQL pass needs PostgreSQL's server binaries under /usr/lib/postgresql");
    };
    pg.start();
    let db = Store::connect(&pg.url()).await.unwrap();
    let test_db = crate::helpers::TestDb::external(db, pg.url());
    let app = crate::helpers::spawn_app_on(
        test_db,
        hydra_billing::domain::clock::Clock::manual(crate::helpers::START),
        |_| {},
    )
    .await;
    let mut log = Vec::new();
    write_round(&app, "up_0", &mut log).await;
    assert!(log.iter().all(|(_, s)| s.is_success()), "{log:?}");

    pg.stop_now();
    // Concurrent traffic while it is down: each request waits for a connection at most the pool's
    // acquire timeout (2 s), so none may queue behind another's wait (3 s allows for that one).
    let token = app.tenant_token("t_up_0");
    let mut slowest = Duration::ZERO;
    for burst in 0..2 {
        let mut answers = tokio::task::JoinSet::new();
        for i in 0..4 {
            let event = drill_event(&format!("evt_down_{burst}_{i}"));
            let requests = [
                crate::helpers::signed_webhook(&app.client, &app.base, &event),
                app.client
                    .put(app.url(&format!("/api/tenants/t_down_{burst}_{i}")))
                    .bearer_auth(crate::helpers::SERVICE_TOKEN)
                    .json(&json!({"name": "Down"})),
                app.client
                    .post(app.url("/api/tenants/t_up_0/usage/fix/reserve"))
                    .bearer_auth(crate::helpers::SERVICE_TOKEN),
                app.client
                    .get(app.url("/api/tenants/t_up_0/access?feature=jira"))
                    .bearer_auth(crate::helpers::SERVICE_TOKEN),
                app.client.get(app.url("/api/billing/status")).bearer_auth(&token),
            ];
            for request in requests {
                answers.spawn(async move {
                    let started = Instant::now();
                    let r = request.send().await.unwrap();
                    let path = r.url().path().to_owned();
                    let (answer, _) = Answer::of(r).await;
                    (path, answer, started.elapsed())
                });
            }
        }
        let answered: Vec<(String, Answer, Duration)> = answers.join_all().await;
        assert_eq!(answered.len(), 20);
        for (path, answer, took) in &answered {
            slowest = slowest.max(*took);
            assert!(answer.is_database_unavailable(), "{path} while the database is down: {answer:?}");
        }
        let slow: Vec<_> = answered.iter().filter(|(_, _, took)| *took >= Duration::from_secs(3)).collect();
        assert!(slow.is_empty(), "burst {burst}: answered in 3 s or more: {slow:?}");
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap().status();
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);

    pg.start();
    let back = Instant::now();
    assert!(ready_within(&app, Duration::from_secs(20)).await, "ready again by itself");
    let before = log.len();
    write_round(&app, "up_1", &mut log).await;
    assert!(log[before..].iter().all(|(_, s)| s.is_success()), "{:?}", &log[before..]);
    for (what, answer) in &log {
        if answer.is_success() {
            assert!(in_db(&app.db, what).await, "{what:?} was answered 2xx and is gone");
        }
    }
    eprintln!(
        "postgres outage: every request answered 503 database_unavailable within {slowest:?}; ready {:?} after the restart",
        back.elapsed()
    );
}

/// A transaction whose rollback fails (SQLite had already ended it, as after SQLITE_FULL) leaves
/// its connection believing it is still inside one: that connection is closed when it comes
/// back, and every connection lent afterwards is outside any transaction.
#[tokio::test]
async fn a_connection_whose_rollback_failed_is_closed_not_lent_again() {
    use sqlx::Connection;
    let test_db = crate::helpers::fresh_db().await;
    test_db.db.migrate_up().await.unwrap();
    with_db!(&test_db.db, |pool| {
        let mut conn = pool.acquire().await.unwrap();
        {
            let mut tx = conn.begin().await.unwrap();
            // The database ends the transaction behind the driver's back.
            sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
        }
        drop(conn);
        // The pool takes a connection back in the background: wait until none is on its way.
        let back = eventually(Duration::from_secs(5), async || pool.num_idle() as u32 == pool.size()).await;
        assert!(back, "the connection came back or was closed");
        let size = pool.size();
        let mut lent = Vec::new();
        for _ in 0..size.max(1) {
            lent.push(tokio::time::timeout(Duration::from_secs(5), pool.acquire()).await.unwrap().unwrap());
        }
        for conn in &lent {
            assert!(!conn.is_in_transaction(), "a connection was lent inside a transaction");
        }
    });
}
