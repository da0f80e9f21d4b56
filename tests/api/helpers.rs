//! Owns the test harness: `spawn_app` builds the real service on port 0 with a fresh database and
//! a manual clock, and `TestApp` has one method per endpoint.

use std::collections::HashMap;
use std::str::FromStr;

use hydra_billing::app::{AppState, Application};
use hydra_billing::auth::{self, MintRequest, Role};
use hydra_billing::clock::{Clock, Timestamp};
use hydra_billing::config::Config;
use hydra_billing::db::Db;
use hydra_billing::with_db;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;

/// 2026-01-01T00:00:00Z: tests start from a fixed instant and move the clock explicitly.
pub const START: Timestamp = 1_767_225_600;
pub const DAY: i64 = 86_400;
pub const SERVICE_TOKEN: &str = "fake-service-token-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "fake-admin-token-0123456789abcdef00";
pub const AUTH_SECRET: &str = "fake-auth-secret-0123456789abcdef0123";

/// The environment a test service starts from (all fake secrets).
pub fn test_env() -> HashMap<String, String> {
    [
        ("BIND", "127.0.0.1:0"),
        ("PUBLIC_URL", "http://billing.test"),
        ("STRIPE_SECRET_KEY", "sk_test_fake_harness"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_fake_harness"),
        ("STRIPE_TEAM_MONTHLY_PRICE_ID", "price_fake_team_monthly"),
        ("STRIPE_TEAM_ANNUAL_PRICE_ID", "price_fake_team_annual"),
        ("STRIPE_BUSINESS_MONTHLY_PRICE_ID", "price_fake_business_monthly"),
        ("STRIPE_BUSINESS_ANNUAL_PRICE_ID", "price_fake_business_annual"),
        ("HYDRA_AUTH_SECRET", AUTH_SECRET),
        ("HYDRA_SERVICE_TOKEN", SERVICE_TOKEN),
        ("HYDRA_ADMIN_TOKEN", ADMIN_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A fresh, empty database: a temp SQLite file, or a new schema in HYDRA_TEST_POSTGRES_URL.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn fresh_db() -> TestDb {
    match std::env::var("HYDRA_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("hb_test_{}", uuid::Uuid::new_v4().simple());
            let admin = Db::connect(&base).await.expect("HYDRA_TEST_POSTGRES_URL is reachable");
            with_db!(&admin, |pool| {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(pool)
                    .await
                    .map(|_| ())
            })
            .unwrap();
            let options =
                PgConnectOptions::from_str(&base).unwrap().options([("search_path", schema.as_str())]);
            let db = Db::connect_postgres(options).await.unwrap();
            let url = format!("{base}?options=-c%20search_path%3D{schema}");
            TestDb { db, url, _dir: None }
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("billing.db").display());
            let db = Db::connect(&url).await.unwrap();
            TestDb { db, url, _dir: Some(dir) }
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub clock: Clock,
    pub state: AppState,
    _test_db: TestDb,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the service with the test environment changed by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    let test_db = fresh_db().await;
    spawn_app_on(test_db, Clock::manual(START), tweak).await
}

/// Starts the service on an existing database and clock (a restart, or a second replica).
pub async fn spawn_app_on(
    test_db: TestDb,
    clock: Clock,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    let mut env = test_env();
    tweak(&mut env);
    let config = Config::from_vars(&env).expect("the test environment is complete");
    let state = AppState::new(config, test_db.db.clone(), clock.clone()).await.unwrap();
    let app = Application::build(state.clone()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(false, std::future::pending()));
    TestApp { base, client: reqwest::Client::new(), db: test_db.db.clone(), clock, state, _test_db: test_db }
}

impl TestApp {
    /// Hands the database over for a restart; this app's server keeps running but is unused.
    pub fn into_db(self) -> (TestDb, Clock) {
        (self._test_db, self.clock)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn tenant_token(&self, tenant: &str) -> String {
        self.tenant_token_with(tenant, Role::BillingAdmin, 3600)
    }

    pub fn tenant_token_with(&self, tenant: &str, role: Role, ttl_secs: i64) -> String {
        auth::mint(
            &hydra_billing::config::Secret::new(AUTH_SECRET),
            MintRequest { tenant, uid: "user-1", role, email: None, ttl_secs, now: self.clock.now() },
        )
        .unwrap()
    }

    pub async fn put_tenant(&self, id: &str, body: &Value) -> Response {
        self.client
            .put(self.url(&format!("/api/tenants/{id}")))
            .bearer_auth(SERVICE_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn reserve(&self, tenant: &str, metric: &str) -> Response {
        self.client
            .post(self.url(&format!("/api/tenants/{tenant}/usage/{metric}/reserve")))
            .bearer_auth(SERVICE_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn settle(&self, reservation: &str, how: &str) -> Response {
        self.client
            .post(self.url(&format!("/api/usage/reservations/{reservation}/{how}")))
            .bearer_auth(SERVICE_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// Reserve then commit: one counted run. Returns the reservation id.
    pub async fn run(&self, tenant: &str, metric: &str) -> String {
        let r = self.reserve(tenant, metric).await;
        assert_eq!(r.status(), StatusCode::OK, "reserve {metric} for {tenant}");
        let id = r.json::<Value>().await.unwrap()["reservation_id"].as_str().unwrap().to_owned();
        assert_eq!(self.settle(&id, "commit").await.status(), StatusCode::OK);
        id
    }

    pub async fn access(&self, tenant: &str, query: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/tenants/{tenant}/access?{query}")))
            .bearer_auth(SERVICE_TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn status(&self, tenant: &str) -> Response {
        self.client
            .get(self.url("/api/billing/status"))
            .bearer_auth(self.tenant_token(tenant))
            .send()
            .await
            .unwrap()
    }

    pub async fn set_plan(&self, tenant: &str, body: &Value) -> Response {
        self.client
            .post(self.url(&format!("/api/admin/tenants/{tenant}/plan")))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-hydra-actor", "ops@hydra.test")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn run_job(&self, name: &str) -> u64 {
        let job = hydra_billing::jobs::Job::parse(name).unwrap();
        hydra_billing::jobs::run_once(&self.db, job, self.clock.now()).await.unwrap()
    }

    /// Stands in for a provisioned subscription until webhooks write it (stored columns only).
    pub async fn store_subscription(&self, tenant: &str, tier: &str, status: &str, period_end: Timestamp) {
        with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE tenants SET plan_tier = $2, stripe_subscription_status = $3, \
                 stripe_current_period_end = $4, stripe_seat_count = 3, \
                 stripe_customer_id = 'cus_' || id, stripe_subscription_id = 'sub_' || id WHERE id = $1",
            )
            .bind(tenant)
            .bind(tier)
            .bind(status)
            .bind(period_end)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .unwrap();
    }

    pub async fn exec(&self, sql: &'static str, tenant: &str) {
        with_db!(&self.db, |pool| sqlx::query(sql).bind(tenant).execute(pool).await.map(|_| ())).unwrap();
    }

    pub async fn tenant(&self, id: &str) -> hydra_billing::tenants::TenantRow {
        hydra_billing::tenants::get(&self.db, id).await.unwrap().expect("tenant exists")
    }
}

/// The body's `error` object, after checking the status and the shape every error shares.
pub async fn error_of(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error bodies are JSON");
    let error = body["error"].clone();
    assert!(error["code"].is_string(), "no error.code in {body}");
    assert!(error["message"].is_string(), "no error.message in {body}");
    error
}

pub async fn json(response: Response) -> Value {
    response.json().await.unwrap()
}
