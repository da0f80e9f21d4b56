//! Owns `stripe setup` (the catalogue as code) and `stripe sim` (the offline simulator alone,
//! built only with the `sim` feature).

#[cfg(feature = "sim")]
use anyhow::Context;

use crate::config;
use crate::stripe::StripeClient;

/// Reads only the key, the base and PUBLIC_URL ([`config::stripe_setup`]), not the full `Config`:
/// it runs before the price ids that `Config` requires exist (it is what makes them).
pub(super) async fn setup() -> anyhow::Result<()> {
    let setup = config::stripe_setup(&config::env_map())?;
    let stripe = StripeClient::new(&setup.api_base, setup.secret_key);
    let report = crate::stripe::setup::run(&stripe, &setup.public_url).await?;
    for created in &report.created {
        eprintln!("created {created}");
    }
    if report.created.is_empty() {
        eprintln!("everything already existed; nothing created");
    }
    for line in &report.env {
        println!("{line}");
    }
    Ok(())
}

#[cfg(feature = "sim")]
pub(super) async fn simulator(
    addr: std::net::SocketAddr,
    chaos_seed: Option<u64>,
    latency: Option<&str>,
    rate_limit: Option<u32>,
    fail_rate: Option<f64>,
) -> anyhow::Result<()> {
    let (latency, jitter) = match latency {
        Some(spec) => parse_latency(spec).context("--latency is MS or MS,JITTER (milliseconds)")?,
        None => Default::default(),
    };
    let fail_rate = fail_rate.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&fail_rate) {
        anyhow::bail!("--fail-rate is a share from 0 to 1");
    }
    if rate_limit == Some(0) {
        anyhow::bail!("--rate-limit is at least 1 call a second");
    }
    let settings = stripe_sim::SimSettings {
        chaos: chaos_seed.map(stripe_sim::Chaos::with_seed),
        conditions: stripe_sim::Conditions {
            latency,
            jitter,
            rate_limit,
            fail_rate,
            seed: chaos_seed.unwrap_or(0),
            hang: None,
            exempt_keys: Vec::new(),
        },
        ..stripe_sim::SimSettings::default()
    };
    let sim = stripe_sim::Simulator::start(addr, settings)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    super::print_banner(&format!(
        "Stripe simulator listening; point a service at it with:\nSTRIPE_API_BASE={}\n",
        sim.base_url
    ));
    crate::http::shutdown_signal().await;
    Ok(())
}

/// `300` or `300,100`: the latency and its jitter, in milliseconds.
#[cfg(feature = "sim")]
fn parse_latency(spec: &str) -> Option<(std::time::Duration, std::time::Duration)> {
    let (ms, jitter) = spec.split_once(',').unwrap_or((spec, "0"));
    let ms = std::time::Duration::from_millis(ms.trim().parse().ok()?);
    let jitter = std::time::Duration::from_millis(jitter.trim().parse().ok()?);
    Some((ms, jitter))
}
