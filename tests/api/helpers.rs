//! Owns the test harness: `spawn_app` builds the real service on port 0 with a fresh database and
//! a manual clock, and `TestApp` has one method per endpoint.

use std::collections::HashMap;

use hydra_billing::billing::Billing;
use hydra_billing::config::Config;
use hydra_billing::domain::clock::{Clock, Timestamp};
use hydra_billing::http::auth::{self, MintRequest, Role};
use hydra_billing::http::{AppState, Application};
use hydra_billing::store::Store;
use hydra_billing::with_db;
use reqwest::{Response, StatusCode};
use serde_json::Value;

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
        // The simulator has no rate limit; the suites drive thousands of calls through it.
        ("STRIPE_CALLS_PER_SECOND", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A fresh, empty database: a temp SQLite file, or a new schema in HYDRA_TEST_POSTGRES_URL.
/// Clones share it (a second service instance on the same database).
#[derive(Clone)]
pub struct TestDb {
    pub db: Store,
    pub url: String,
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl TestDb {
    /// A database the test started itself (its own PostgreSQL instance).
    pub fn external(db: Store, url: String) -> TestDb {
        TestDb { db, url, _dir: None }
    }
}

pub async fn fresh_db() -> TestDb {
    match std::env::var("HYDRA_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("hb_test_{}", uuid::Uuid::new_v4().simple());
            let admin = Store::connect(&base).await.expect("HYDRA_TEST_POSTGRES_URL is reachable");
            let db = admin.with_new_schema(&schema).await.unwrap();
            let url = format!("{base}?options=-c%20search_path%3D{schema}");
            TestDb { db, url, _dir: None }
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("billing.db").display());
            let db = Store::connect(&url).await.unwrap();
            TestDb { db, url, _dir: Some(std::sync::Arc::new(dir)) }
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: Store,
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
    spawn_app_listening(test_db, clock, tweak, None).await
}

/// The same on a listener bound beforehand (when the URL must be known before the config).
pub async fn spawn_app_listening(
    test_db: TestDb,
    clock: Clock,
    tweak: impl FnOnce(&mut HashMap<String, String>),
    listener: Option<tokio::net::TcpListener>,
) -> TestApp {
    let mut env = test_env();
    tweak(&mut env);
    let config = Config::from_vars(&env).expect("the test environment is complete");
    test_db.db.migrate_up().await.unwrap();
    let billing = Billing::open(config, test_db.db.clone(), clock.clone()).await.unwrap();
    let state = AppState::new(billing);
    let app = match listener {
        Some(l) => Application::on_listener(state.clone(), l),
        None => Application::build(state.clone()).await.unwrap(),
    };
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(false, std::future::pending()));
    TestApp { base, client: reqwest::Client::new(), db: test_db.db.clone(), clock, state, _test_db: test_db }
}

impl TestApp {
    /// The database, shared, for a second instance of the service.
    pub fn shared_db(&self) -> TestDb {
        self._test_db.clone()
    }

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
        let job = hydra_billing::billing::jobs::Job::parse(name).unwrap();
        self.state.run_job(job).await.unwrap()
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
        // Written behind the store's back: tell it, as its own writes do.
        self.db.tenant_changed(tenant).await;
    }

    /// Runs SQL about one tenant (`$1`) behind the store's back, then tells the store.
    pub async fn exec(&self, sql: &'static str, tenant: &str) {
        with_db!(&self.db, |pool| sqlx::query(sql).bind(tenant).execute(pool).await.map(|_| ())).unwrap();
        self.db.tenant_changed(tenant).await;
    }

    pub async fn tenant(&self, id: &str) -> hydra_billing::store::TenantRow {
        self.db.tenant(id).await.unwrap().expect("tenant exists")
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

pub const WEBHOOK_SECRET: &str = "whsec_fake_harness";
/// The key the tests' own calls to the simulator use (the service has `sk_test_fake_harness`):
/// the simulator's slow, limited and failing conditions can then exempt the harness, which plays
/// the Dashboard and the customer's browser.
pub const HARNESS_KEY: &str = "sk_test_fake_harness_direct";

/// The app wired to a Stripe: a fresh in-process simulator with the four prices created on it, or
/// (online) Stripe test mode itself.
pub struct WithStripe {
    pub app: TestApp,
    /// `None` against real Stripe.
    pub simulator: Option<stripe_sim::Simulator>,
    pub api_base: String,
    pub api_key: String,
    pub prices: Prices,
    /// No webhooks reach the service (Stripe test mode without `stripe listen`): `settle`
    /// reconciles the tenant instead, which is the same code.
    pub observe_by_reconcile: bool,
}

pub use hydra_billing::domain::catalogue::Prices;

pub async fn sim_call(
    sim: &stripe_sim::Simulator,
    method: reqwest::Method,
    path: &str,
    params: &[(&str, &str)],
) -> Value {
    api_call(&sim.base_url, HARNESS_KEY, method, path, params).await
}

/// One call to a Stripe API (the simulator's or Stripe's), asserting success.
pub async fn api_call(
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    params: &[(&str, &str)],
) -> Value {
    let client = reqwest::Client::new();
    let req = client.request(method.clone(), format!("{base}{path}")).bearer_auth(key);
    let req = if method == reqwest::Method::GET { req.query(params) } else { req.form(params) };
    let response = req.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {body}");
    body
}

/// The app and the simulator wired as in production: the simulator delivers signed webhooks
/// (in chaos mode with a seed) to the app's endpoint, with the endpoint's own secret.
pub async fn spawn_with_deliveries(chaos: Option<u64>) -> WithStripe {
    spawn_with_deliveries_and(chaos, |_, _| {}).await
}

/// The app as a browser sees it: PUBLIC_URL is its real address (Checkout returns there and the
/// cookie rule checks it), the simulator delivers webhooks and the event worker runs.
pub async fn spawn_site() -> WithStripe {
    let s = spawn_with_deliveries_and(None, |env, base| {
        env.insert("PUBLIC_URL".into(), base.to_owned());
    })
    .await;
    tokio::spawn(s.app.state.billing.clone().event_worker());
    s
}

/// `spawn_with_deliveries`, with the environment changed by `tweak` (given the app's base URL).
pub async fn spawn_with_deliveries_and(
    chaos: Option<u64>,
    tweak: impl FnOnce(&mut HashMap<String, String>, &str),
) -> WithStripe {
    let settings =
        stripe_sim::SimSettings { chaos: chaos.map(stripe_sim::Chaos::with_seed), ..Default::default() };
    spawn_with_deliveries_on(settings, tweak).await
}

/// The same on a simulator started with `settings` (chaos, slow, limited or failing).
pub async fn spawn_with_deliveries_on(
    settings: stripe_sim::SimSettings,
    tweak: impl FnOnce(&mut HashMap<String, String>, &str),
) -> WithStripe {
    let sim = stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), settings).await.unwrap();
    let prices = create_prices(&sim).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let url = format!("{base}/api/webhooks/stripe");
    let mut params = vec![("url", url.as_str())];
    params.extend(hydra_billing::stripe::HANDLED_EVENTS.iter().map(|t| ("enabled_events[]", *t)));
    let endpoint = sim_call(&sim, reqwest::Method::POST, "/v1/webhook_endpoints", &params).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let env = stripe_env(&sim, &prices);
    let app = spawn_app_listening(
        fresh_db().await,
        Clock::manual(START),
        move |e| {
            e.extend(env);
            e.insert("STRIPE_WEBHOOK_SECRET".into(), secret);
            tweak(e, &base);
        },
        Some(listener),
    )
    .await;
    WithStripe::on_simulator(app, sim, prices)
}

/// The catalogue's products and prices in the simulator, at the catalogue's own amounts.
pub async fn create_prices(sim: &stripe_sim::Simulator) -> Prices {
    use hydra_billing::domain::catalogue::{PLANS, PRODUCTS};
    let mut ids = Vec::new();
    for product in &PRODUCTS {
        let id = sim_call(sim, reqwest::Method::POST, "/v1/products", &[("name", product.name)]).await;
        let id = id["id"].as_str().unwrap().to_owned();
        for plan in PLANS.iter().filter(|p| p.tier == product.tier) {
            let price = sim_call(
                sim,
                reqwest::Method::POST,
                "/v1/prices",
                &[
                    ("product", &id),
                    ("unit_amount", &plan.unit_amount.to_string()),
                    ("currency", "usd"),
                    ("recurring[interval]", plan.interval.as_str()),
                ],
            )
            .await;
            ids.push(price["id"].as_str().unwrap().to_owned());
        }
    }
    Prices {
        team_monthly: ids[0].clone(),
        team_annual: ids[1].clone(),
        business_monthly: ids[2].clone(),
        business_annual: ids[3].clone(),
    }
}

/// The environment that points the app at `sim` and its prices.
pub fn stripe_env(sim: &stripe_sim::Simulator, prices: &Prices) -> HashMap<String, String> {
    [
        ("STRIPE_API_BASE", sim.base_url.clone()),
        ("STRIPE_TEAM_MONTHLY_PRICE_ID", prices.team_monthly.clone()),
        ("STRIPE_TEAM_ANNUAL_PRICE_ID", prices.team_annual.clone()),
        ("STRIPE_BUSINESS_MONTHLY_PRICE_ID", prices.business_monthly.clone()),
        ("STRIPE_BUSINESS_ANNUAL_PRICE_ID", prices.business_annual.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub async fn spawn_with_stripe() -> WithStripe {
    spawn_with_stripe_and(|_| {}).await
}

/// The same, with the test environment changed by `tweak` as well.
pub async fn spawn_with_stripe_and(
    tweak: impl FnOnce(&mut HashMap<String, String>) + Send + 'static,
) -> WithStripe {
    let sim =
        stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), stripe_sim::SimSettings::default())
            .await
            .unwrap();
    let prices = create_prices(&sim).await;
    let env = stripe_env(&sim, &prices);
    let app = spawn_app_with(move |e| {
        e.extend(env);
        tweak(e);
    })
    .await;
    WithStripe::on_simulator(app, sim, prices)
}

/// The app against the simulator through a [`crate::stripe_proxy::StripeProxy`], which can slow,
/// hold and record the service's calls (the harness's own calls go to the simulator directly).
pub async fn spawn_with_stripe_proxy() -> (WithStripe, crate::stripe_proxy::StripeProxy) {
    spawn_with_stripe_proxy_on(Clock::manual(START), |_| {}).await
}

/// The same on `clock` (the system clock, for what depends on real seconds passing), with the
/// environment changed by `tweak`.
pub async fn spawn_with_stripe_proxy_on(
    clock: Clock,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> (WithStripe, crate::stripe_proxy::StripeProxy) {
    let sim =
        stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), stripe_sim::SimSettings::default())
            .await
            .unwrap();
    let prices = create_prices(&sim).await;
    let proxy = crate::stripe_proxy::StripeProxy::start(&sim.base_url).await;
    let mut env = stripe_env(&sim, &prices);
    env.insert("STRIPE_API_BASE".into(), proxy.base.clone());
    tweak(&mut env);
    let app = spawn_app_on(fresh_db().await, clock, move |e| e.extend(env)).await;
    (WithStripe::on_simulator(app, sim, prices), proxy)
}

/// The app against Stripe test mode with `key`: the catalogue made (or found) by `stripe setup`.
/// Webhooks are not forwarded here; state is observed through reconciliation (the same code).
pub async fn spawn_online(key: &str) -> WithStripe {
    let base = hydra_billing::config::DEFAULT_STRIPE_API_BASE.to_owned();
    let stripe = hydra_billing::stripe::StripeClient::new(&base, hydra_billing::config::Secret::new(key));
    // Products and prices only: no webhook endpoint or portal configuration on a real account.
    let mut report = hydra_billing::stripe::setup::SetupReport::default();
    hydra_billing::stripe::setup::catalogue(&stripe, &mut report).await.expect("the catalogue in test mode");
    let env: HashMap<String, String> = report
        .env
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let price = |k: &str| env.get(k).cloned().unwrap_or_default();
    let prices = Prices {
        team_monthly: price("STRIPE_TEAM_MONTHLY_PRICE_ID"),
        team_annual: price("STRIPE_TEAM_ANNUAL_PRICE_ID"),
        business_monthly: price("STRIPE_BUSINESS_MONTHLY_PRICE_ID"),
        business_annual: price("STRIPE_BUSINESS_ANNUAL_PRICE_ID"),
    };
    let (key_owned, base_owned) = (key.to_owned(), base.clone());
    let app = spawn_app_with(move |e| {
        e.extend(env);
        e.insert("STRIPE_API_BASE".into(), base_owned);
        e.insert("STRIPE_SECRET_KEY".into(), key_owned);
        // Stripe test mode allows 25 calls a second.
        e.insert("STRIPE_CALLS_PER_SECOND".into(), "20".into());
    })
    .await;
    WithStripe {
        app,
        simulator: None,
        api_base: base,
        api_key: key.to_owned(),
        prices,
        observe_by_reconcile: true,
    }
}

impl WithStripe {
    fn on_simulator(app: TestApp, sim: stripe_sim::Simulator, prices: Prices) -> WithStripe {
        let api_base = sim.base_url.clone();
        WithStripe {
            app,
            simulator: Some(sim),
            api_base,
            api_key: HARNESS_KEY.into(),
            prices,
            observe_by_reconcile: false,
        }
    }

    /// The simulator, for the tests that use its test helpers or inspect its deliveries.
    pub fn sim(&self) -> &stripe_sim::Simulator {
        self.simulator.as_ref().expect("this test runs on the simulator")
    }

    pub async fn post(&self, path: &str, params: &[(&str, &str)]) -> Value {
        api_call(&self.api_base, &self.api_key, reqwest::Method::POST, path, params).await
    }

    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        api_call(&self.api_base, &self.api_key, reqwest::Method::GET, path, params).await
    }

    /// A tenant with a billing email and a Stripe customer on a fresh test clock at the app's
    /// start time, linked the way checkout links them. Returns (customer, clock).
    pub async fn tenant_with_customer(&self, tenant: &str, card: &str) -> (String, String) {
        self.app
            .put_tenant(
                tenant,
                &serde_json::json!({"name": tenant, "billing_email": format!("billing@{tenant}.test")}),
            )
            .await;
        let clock = self.post("/v1/test_helpers/test_clocks", &[("frozen_time", &START.to_string())]).await;
        let clock = clock["id"].as_str().unwrap().to_owned();
        let customer = self
            .post(
                "/v1/customers",
                &[
                    ("email", &format!("billing@{tenant}.test")),
                    ("test_clock", &clock),
                    ("payment_method", card),
                    ("metadata[hydra_tenant_id]", tenant),
                ],
            )
            .await;
        let customer = customer["id"].as_str().unwrap().to_owned();
        with_db!(&self.app.db, |pool| {
            sqlx::query("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1")
                .bind(tenant)
                .bind(&customer)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .unwrap();
        (customer, clock)
    }

    /// A call to our service as a billing admin of `tenant`, with an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        tenant: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req =
            self.app.client.request(method, self.app.url(path)).bearer_auth(self.app.tenant_token(tenant));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// A subscription created through the API, paid with the customer's default card.
    pub async fn subscribe(&self, customer: &str, price: &str, quantity: &str) -> Value {
        self.post(
            "/v1/subscriptions",
            &[
                ("customer", customer),
                ("items[0][price]", price),
                ("items[0][quantity]", quantity),
                ("billing_mode[type]", "classic"),
            ],
        )
        .await
    }

    /// Waits (processing stored events as they arrive) until the tenant's row satisfies `done`.
    pub async fn settle(
        &self,
        tenant: &str,
        what: &str,
        done: impl Fn(&hydra_billing::store::TenantRow) -> bool,
    ) {
        let reached = eventually(std::time::Duration::from_secs(20), async || {
            self.app.drain().await;
            if self.observe_by_reconcile {
                let _ = self.app.state.reconcile(Some(tenant), "scenario").await;
            }
            self.app.db.tenant(tenant).await.unwrap().is_some_and(|r| done(&r))
        })
        .await;
        if !reached {
            let row = self.app.tenant(tenant).await;
            panic!("{what}: never reached; the row is {row:?}");
        }
    }

    /// Makes the subscription's card one that attaches and then declines every charge (0341),
    /// so its next renewal fails.
    pub async fn card_starts_failing(&self, customer: &str, subscription: &str) {
        let pm = self
            .post("/v1/payment_methods/pm_card_chargeCustomerFail/attach", &[("customer", customer)])
            .await;
        let pm = pm["id"].as_str().unwrap().to_owned();
        self.post(&format!("/v1/subscriptions/{subscription}"), &[("default_payment_method", &pm)]).await;
    }

    pub async fn advance(&self, clock: &str, to: Timestamp) {
        self.post(
            &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
            &[("frozen_time", &to.to_string())],
        )
        .await;
        let ready = eventually(std::time::Duration::from_secs(10), async || {
            self.get(&format!("/v1/test_helpers/test_clocks/{clock}"), &[]).await["status"] == "ready"
        })
        .await;
        assert!(ready, "test clock never ready");
    }

    /// `tenant` on Team monthly whose first renewal needs 3-D Secure (its default card becomes
    /// Stripe's authenticate-every-payment card, then its test clock passes the period end):
    /// (customer, every event the simulator recorded for it).
    pub async fn renewal_needing_authentication(&self, tenant: &str) -> (String, Vec<Value>) {
        let (customer, clock) = self.tenant_with_customer(tenant, "pm_card_visa").await;
        let sub = self.subscribe(&customer, &self.prices.team_monthly, "1").await;
        self.post(
            &format!("/v1/customers/{customer}"),
            &[("invoice_settings[default_payment_method]", "pm_card_authenticationRequired")],
        )
        .await;
        self.advance(&clock, sub["items"]["data"][0]["current_period_end"].as_i64().unwrap() + 3600).await;
        let events = self.events_of(&customer).await;
        (customer, events)
    }

    /// Every event the simulator has recorded for `customer`, oldest first, of the types we handle.
    pub async fn events_of(&self, customer: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut params = vec![("limit", "100".to_owned())];
            if let Some(a) = &after {
                params.push(("starting_after", a.clone()));
            }
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = self.get("/v1/events", &params).await;
            let data = page["data"].as_array().unwrap().clone();
            after = data.last().and_then(|e| e["id"].as_str()).map(str::to_owned);
            all.extend(data);
            if page["has_more"] != true {
                break;
            }
        }
        all.reverse();
        all.into_iter()
            .filter(|e| {
                hydra_billing::stripe::HANDLED_EVENTS.contains(&e["type"].as_str().unwrap_or_default())
            })
            .filter(|e| hydra_billing::http::webhooks::event_customer(e).as_deref() == Some(customer))
            .collect()
    }
}

/// `event` as Stripe posts it to the service at `base`: signed with the test secret, now.
pub fn signed_webhook(client: &reqwest::Client, base: &str, event: &Value) -> reqwest::RequestBuilder {
    let body = serde_json::to_vec(event).unwrap();
    let header = stripe_sim::signature_header(WEBHOOK_SECRET, Clock::System.now(), &body);
    client
        .post(format!("{base}/api/webhooks/stripe"))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
}

impl TestApp {
    /// Posts `event` to the webhook endpoint signed with the configured secret at the app's time.
    pub async fn deliver(&self, event: &Value) -> StatusCode {
        signed_webhook(&self.client, &self.base, event).send().await.unwrap().status()
    }

    pub async fn deliver_raw(&self, body: &[u8], signature: Option<&str>) -> StatusCode {
        let mut req = self
            .client
            .post(self.url("/api/webhooks/stripe"))
            .body(body.to_vec())
            .header("content-type", "application/json");
        if let Some(s) = signature {
            req = req.header("stripe-signature", s);
        }
        req.send().await.unwrap().status()
    }

    pub async fn metrics_text(&self) -> String {
        metrics_text(&self.client, &self.base).await
    }

    pub async fn drain(&self) -> usize {
        self.state.drain_events().await.unwrap()
    }

    /// The tenant's row and audit log as text: equal snapshots mean nothing changed.
    pub async fn snapshot(&self, tenant: &str) -> String {
        let mut row = self.tenant(tenant).await;
        // Bookkeeping that moves on every touch, not billing state.
        row.updated_at = 0;
        let audit = self.db.audit_log(tenant).await.unwrap();
        let emails: Vec<(String,)> = with_db!(&self.db, |pool| {
            sqlx::query_as("SELECT dedupe_key FROM email_outbox WHERE tenant_id = $1 ORDER BY dedupe_key")
                .bind(tenant)
                .fetch_all(pool)
                .await
        })
        .unwrap();
        format!("{row:?}\n{audit:?}\n{emails:?}")
    }
}

/// Polls `cond` until it holds (true) or `within` has passed (false): every wait in the tests goes
/// through here, so none stands in a sleep for synchronisation. The caller says what never happened.
pub async fn eventually(within: std::time::Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// `hydra-billing demo --port 0`, as a newcomer runs it: no environment at all. Killed on drop.
pub struct Demo {
    pub base: String,
    child: std::process::Child,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn spawn_demo() -> Demo {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hydra-billing"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["demo", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The reader closes the pipe as soon as it has the URL, like a launcher that stops listening:
    // the demo must keep serving (a `println!` after the URL line once killed it on EPIPE).
    let base = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.trim().strip_prefix("Open").map(|u| u.trim().trim_end_matches('/').to_owned()))
    })
    .await
    .unwrap();
    let demo = Demo { base: base.unwrap_or_default(), child };
    assert!(!demo.base.is_empty(), "demo prints the URL to open");
    hydra_billing::stripe::install_crypto_provider();
    demo
}

/// A real SMTP server on loopback (aiosmtpd, installed by .ci/run) that keeps each message.
pub struct SmtpSink {
    child: std::process::Child,
    pub port: u16,
    folder: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        use std::io::BufRead;
        let folder = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(folder.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the SMTP sink");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the SMTP sink did not start (pip install aiosmtpd; .ci/run does): {line:?}")
        });
        SmtpSink { child, port, folder }
    }

    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.folder.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/metrics` of the service at `base`, read with the service token.
pub async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `SELECT COUNT(*) …` with `$1` bound to `arg` when given.
pub async fn count(db: &Store, sql: &str, arg: Option<&str>) -> i64 {
    let (n,): (i64,) = with_db!(db, |pool| {
        let query = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()));
        match arg {
            Some(a) => query.bind(a.to_owned()),
            None => query,
        }
        .fetch_one(pool)
        .await
    })
    .unwrap();
    n
}

/// Every route of the router as (path, method), read from its one definition in
/// `src/http/routes.rs`: `("/api/tenants/{id}", "put")`, … Tests that must cover every route
/// compare their own list with this one.
pub fn route_table() -> Vec<(String, String)> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/routes.rs");
    let source = std::fs::read_to_string(file).unwrap();
    source
        .split(".route(\"")
        .skip(1)
        .filter_map(|rest| {
            let (path, after) = rest.split_once('"')?;
            let method = after.trim_start_matches([',', ' ']).split('(').next()?.trim().to_owned();
            Some((path.to_owned(), method))
        })
        .collect()
}
