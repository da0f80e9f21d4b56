//! Owns what both benchmarks share: calls to the simulator, one reserve+commit pair over HTTP, the
//! service's bench environment, and a PostgreSQL schema of its own per run.
#![allow(dead_code)]

use std::collections::HashMap;

use hydra_billing::store::Store;

pub const SERVICE_TOKEN: &str = "fake-bench-service-token-0123456789abcdef";
pub const AUTH_SECRET: &str = "fake-bench-auth-secret-0123456789abcdef";

/// The service's environment with fake secrets and no Stripe budget to speak of.
pub fn env() -> HashMap<String, String> {
    [
        ("BIND", "127.0.0.1:0"),
        ("STRIPE_SECRET_KEY", "sk_test_fake_bench"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_fake_bench"),
        ("STRIPE_TEAM_MONTHLY_PRICE_ID", "price_fake_tm"),
        ("STRIPE_TEAM_ANNUAL_PRICE_ID", "price_fake_ta"),
        ("STRIPE_BUSINESS_MONTHLY_PRICE_ID", "price_fake_bm"),
        ("STRIPE_BUSINESS_ANNUAL_PRICE_ID", "price_fake_ba"),
        ("HYDRA_AUTH_SECRET", AUTH_SECRET),
        ("HYDRA_SERVICE_TOKEN", SERVICE_TOKEN),
        ("STRIPE_CALLS_PER_SECOND", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub async fn sim_post(base: &str, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
    sim_post_as("sk_test_fake_bench", base, path, params).await
}

/// [`sim_post`] with another key (one the simulator's slow conditions leave alone).
pub async fn sim_post_as(key: &str, base: &str, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .form(params)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

/// A "Hydra Team" product with a $20 price per interval given (`month`, `year`), made with
/// `key`: the price ids, in the same order.
pub async fn team_prices(key: &str, base: &str, intervals: &[&str]) -> Vec<String> {
    let product = sim_post_as(key, base, "/v1/products", &[("name", "Hydra Team")]).await;
    let mut prices = Vec::new();
    for interval in intervals {
        let params = [
            ("product", product["id"].as_str().unwrap()),
            ("unit_amount", "2000"),
            ("currency", "usd"),
            ("recurring[interval]", interval),
        ];
        prices.push(sim_post_as(key, base, "/v1/prices", &params).await["id"].as_str().unwrap().to_owned());
    }
    prices
}

/// One metered run of tenant `bench`: reserve, then commit.
pub async fn reserve_commit(client: &reqwest::Client, base: &str) {
    reserve_settle(client, base, "bench", "commit").await
}

/// One run of `tenant`: reserve, then `settle` (`commit` or `release`) the reservation.
pub async fn reserve_settle(client: &reqwest::Client, base: &str, tenant: &str, settle: &str) {
    let r = client
        .post(format!("{base}/api/tenants/{tenant}/usage/fix/reserve"))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["reservation_id"].as_str().unwrap();
    let r = client
        .post(format!("{base}/api/usage/reservations/{id}/{settle}"))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

/// Runs `bench` on a schema of its own in HYDRA_BENCH_POSTGRES_URL's database (dropped after).
pub async fn on_postgres<T, F: std::future::Future<Output = T>>(bench: impl FnOnce(Store) -> F) -> Option<T> {
    let url = std::env::var("HYDRA_BENCH_POSTGRES_URL").ok()?;
    let schema = format!("hb_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = Store::connect(&url).await.unwrap();
    let result = bench(admin.with_new_schema(&schema).await.unwrap()).await;
    admin.drop_schema(&schema).await.unwrap();
    Some(result)
}
