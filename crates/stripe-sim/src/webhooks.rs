//! Owns webhook delivery: every event goes to each enabled endpoint that subscribes to its type,
//! rendered in the endpoint's API version, signed `t=…,v1=…` with the endpoint's secret, and
//! retried with back-off until answered 2xx. Chaos mode (seeded) duplicates deliveries, delays
//! and so reorders them, and fails some first attempts, to prove a receiver order-proof.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::Shared;
use crate::rng::Rng;
use crate::world::{World, render, system_now};

/// Chaos settings; probabilities are per delivery.
#[derive(Clone, Debug)]
pub struct Chaos {
    pub seed: u64,
    /// A delivery is sent twice.
    pub duplicate: f64,
    /// The first attempt is dropped as if the network failed (then retried).
    pub fail_first: f64,
    /// Each delivery waits up to this long, so later events may arrive first.
    pub max_delay: Duration,
}

impl Chaos {
    pub fn with_seed(seed: u64) -> Chaos {
        Chaos { seed, duplicate: 0.3, fail_first: 0.3, max_delay: Duration::from_millis(300) }
    }
}

/// `Stripe-Signature` for `payload` signed at `t` with `secret`.
pub fn signature_header(secret: &str, t: i64, payload: &[u8]) -> String {
    format!("t={t},v1={}", sign(secret, t, payload))
}

/// Hex HMAC-SHA256 of `t.payload`, Stripe's v1 scheme.
pub fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    // An HMAC key of any length is valid, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Clone, Debug)]
struct Delivery {
    event: String,
    endpoint: String,
    attempt: u32,
    due: Instant,
}

/// One delivery attempt as it happened, for tests and the dashboard-like log.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub event: String,
    pub event_type: String,
    pub endpoint: String,
    /// HTTP status, or `None` when the attempt never reached the receiver.
    pub status: Option<u16>,
}

/// Runs for the simulator's lifetime.
pub async fn deliverer(shared: Arc<Shared>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let mut queue: Vec<Delivery> = Vec::new();
    let mut rng = Rng::new(shared.settings.chaos.as_ref().map_or(0, |c| c.seed));
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {},
            _ = tokio::time::sleep(Duration::from_millis(25)) => {},
        }
        {
            let mut world = shared.world.lock().await;
            let new: Vec<String> = std::mem::take(&mut world.undelivered);
            for event in new {
                schedule(&world, &shared, &mut rng, &mut queue, &event);
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<Delivery>, Vec<Delivery>) = queue.drain(..).partition(|d| d.due <= now);
        queue = later;
        for delivery in due {
            if let Some(retry) = send(&shared, &client, &mut rng, delivery).await {
                queue.push(retry);
            }
        }
    }
}

fn schedule(world: &World, shared: &Shared, rng: &mut Rng, queue: &mut Vec<Delivery>, event_id: &str) {
    let Some(event) = world.get(event_id) else { return };
    let event_type = event["type"].as_str().unwrap_or_default();
    for endpoint_id in world.endpoints_for(event_type) {
        let copies = match &shared.settings.chaos {
            Some(chaos) if rng.chance(chaos.duplicate) => {
                shared.chaos_duplicates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                2
            }
            _ => 1,
        };
        for _ in 0..copies {
            let delay = shared.settings.chaos.as_ref().map_or(Duration::ZERO, |c| {
                Duration::from_millis(rng.below(c.max_delay.as_millis() as u64 + 1))
            });
            queue.push(Delivery {
                event: event_id.to_owned(),
                endpoint: endpoint_id.clone(),
                attempt: 0,
                due: Instant::now() + delay,
            });
        }
    }
}

/// Sends one delivery; returns the retry to schedule if it failed and retries remain.
async fn send(
    shared: &Shared,
    client: &reqwest::Client,
    rng: &mut Rng,
    delivery: Delivery,
) -> Option<Delivery> {
    let (url, secret, body, event_type) = {
        let world = shared.world.lock().await;
        let endpoint = world.get(&delivery.endpoint)?.clone();
        let event = world.get(&delivery.event)?.clone();
        let version =
            endpoint["api_version"].as_str().unwrap_or(crate::world::CURRENT_API_VERSION).to_owned();
        let mut rendered = render(&event, &version);
        crate::world::drop_includables(&mut rendered, &[]);
        rendered["api_version"] = Value::String(version);
        let secret = world.secrets.get(&delivery.endpoint).cloned().unwrap_or_default();
        (
            endpoint["url"].as_str().unwrap_or_default().to_owned(),
            secret,
            serde_json::to_vec(&rendered).unwrap_or_default(),
            event["type"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let dropped =
        delivery.attempt == 0 && shared.settings.chaos.as_ref().is_some_and(|c| rng.chance(c.fail_first));
    if dropped {
        shared.chaos_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let status = if dropped {
        None
    } else {
        let header = signature_header(&secret, system_now(), &body);
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    shared.attempts.lock().await.push(Attempt {
        event: delivery.event.clone(),
        event_type,
        endpoint: delivery.endpoint.clone(),
        status,
    });
    if status.is_some_and(|s| (200..300).contains(&s)) {
        shared.world.lock().await.delivered(&delivery.event, &delivery.endpoint);
        return None;
    }
    let delays = &shared.settings.webhook_retry_delays;
    let delay = delays.get(delivery.attempt as usize)?;
    Some(Delivery { attempt: delivery.attempt + 1, due: Instant::now() + *delay, ..delivery })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_stripes_v1_scheme() {
        // HMAC-SHA256("whsec_fake_x", "100.{}") computed independently.
        let header = signature_header("whsec_fake_x", 100, b"{}");
        assert!(header.starts_with("t=100,v1="));
        assert_eq!(header.len(), "t=100,v1=".len() + 64);
        assert_ne!(sign("whsec_fake_x", 100, b"{}"), sign("whsec_fake_y", 100, b"{}"));
        assert_ne!(sign("whsec_fake_x", 100, b"{}"), sign("whsec_fake_x", 101, b"{}"));
    }
}
