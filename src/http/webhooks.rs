//! Owns `POST /api/webhooks/stripe`: verify `Stripe-Signature` on every request, store the event
//! (unique on its id) before answering 2xx, and answer 5xx when it cannot be stored so Stripe
//! retries. Processing happens later, in `billing::events`. Every log line of an intake carries
//! the event's `event_id` and `event_type` (the handler's future is instrumented with its span).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::AppState;
use super::error::ApiError;
use crate::config::Secret;
use crate::domain::clock::Clock;
use crate::store::NewEvent;
use crate::stripe::HANDLED_EVENTS;

/// Stripe's SDKs accept signatures up to 5 minutes old.
pub const TOLERANCE_SECS: i64 = 300;
/// A real header is about 80 bytes plus 68 per signature; these caps leave room for several.
const MAX_HEADER_BYTES: usize = 1024;
const MAX_HEADER_ENTRIES: usize = 10;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the signature is older than the tolerance")]
    Stale,
    #[error("no v1 signature matches a configured secret")]
    NoMatch,
}

/// Checks `t=…,v1=…[,v1=…][,v0=…]`: any `v1` may match any secret (several during a roll), each
/// compared in constant time; `v0` and unknown schemes are ignored (no downgrade).
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    // Stripe sends a timestamp and one signature per active secret (two during a roll): anything
    // much larger is refused before any hashing, so a forged header cannot buy CPU.
    if header.len() > MAX_HEADER_BYTES || header.split(',').count() > MAX_HEADER_ENTRIES {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match key {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoMatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    // One HMAC of the body per secret, compared with every v1 in constant time.
    let matched = secrets.iter().any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        signatures.iter().any(|signature| bool::from(expected.as_slice().ct_eq(signature.as_slice())))
    });
    if matched { Ok(()) } else { Err(SignatureError::NoMatch) }
}

fn bad_request(message: &str) -> Response {
    ApiError::invalid(message).into_response()
}

/// The customer an event is about: its object's `customer`, or the object itself for customers.
pub fn event_customer(event: &Value) -> Option<String> {
    let object = &event["data"]["object"];
    crate::stripe::id_of(&object["customer"])
        .or_else(|| (object["object"] == "customer").then(|| object["id"].as_str()).flatten())
        .map(str::to_owned)
}

/// Stripe's webhook deliveries. The event is stored before the 2xx; any 5xx makes Stripe retry.
#[utoipa::path(post, path = "/api/webhooks/stripe", tag = "stripe",
    params(("Stripe-Signature" = String, Header, description = "`t=…,v1=…`: HMAC-SHA256 with the endpoint's signing secret")),
    request_body(content = Object, description = "A Stripe event, exactly as Stripe signed it"),
    responses(
        (status = 200, description = "Stored (or stored before)", body = super::openapi::ReceivedAnswer),
        (status = 400, description = "A bad signature or not a Stripe event", body = super::openapi::ErrorBody),
        (status = 503, description = "Not stored: Stripe delivers it again", body = super::openapi::ErrorBody),
    ))]
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    // The tolerance is about when the request was signed, in wall-clock time: Stripe signs with
    // real time even while test clocks move simulated time, so the business clock is not used.
    let wall_clock = Clock::System.now();
    if let Err(e) = verify_signature(header, &body, &state.config.stripe.webhook_secrets, wall_clock) {
        tracing::warn!(reason = %e, "webhook refused");
        metrics::counter!("hydra_webhooks_total", "outcome" => "bad_signature").increment(1);
        return bad_request(&e.to_string());
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("the body is not JSON");
    };
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return bad_request("the body is not a Stripe event");
    };
    // Stripe's ids are plain: one the store could not hold is not Stripe's (and a 5xx would
    // make a sender retry it for days).
    let storable = |text: &str, max: usize| text.len() <= max && !text.chars().any(char::is_control);
    if crate::domain::ids::EventId::parse(id).is_err() || !storable(kind, 100) {
        return bad_request("the event's id or type is not Stripe's");
    }
    // The customer is stored beside the event (a NUL would make PostgreSQL refuse the row, and
    // the 503 would bring the event back for days); an odd but storable one is kept and parked.
    let customer = event_customer(&event);
    if customer.as_deref().is_some_and(|customer| !storable(customer, 255)) {
        return bad_request("the event's customer is not a Stripe customer id");
    }
    let span = tracing::info_span!("webhook", event_id = %id, event_type = %kind);
    store_verified(&state, &event, customer, id, kind, &body).instrument(span).await
}

/// Stores a verified event and answers Stripe: 200 once stored (or already stored), 503 when it
/// could not be, so Stripe delivers it again.
async fn store_verified(
    state: &AppState,
    event: &Value,
    customer_id: Option<String>,
    id: &str,
    kind: &str,
    body: &[u8],
) -> Response {
    let livemode = event["livemode"].as_bool().unwrap_or(false);
    let (status, error) = if livemode != state.config.stripe.is_live() {
        // An event from the other mode is never applied; kept, visible, as failed.
        ("failed", Some("the event's livemode differs from the key's mode"))
    } else if HANDLED_EVENTS.contains(&kind) {
        ("received", None)
    } else {
        ("ignored", None)
    };
    let new = NewEvent {
        id,
        kind,
        livemode,
        created: event["created"].as_i64().unwrap_or(0),
        customer_id,
        payload: std::str::from_utf8(body).unwrap_or_default(),
        status,
        error,
        received_at: state.clock.now(),
        received_ms: crate::domain::clock::wall_millis_ago(std::time::Duration::ZERO),
    };
    match state.store.store_event(new).await {
        Ok(inserted) => {
            tracing::info!(inserted, status, "webhook stored");
            metrics::counter!("hydra_webhooks_total", "outcome" => if inserted { "stored" } else { "duplicate" }).increment(1);
            state.wake_worker();
            (StatusCode::OK, axum::Json(super::openapi::ReceivedAnswer { received: true })).into_response()
        }
        Err(e) => {
            // Not stored: a 5xx makes Stripe deliver it again.
            tracing::error!(error = %e, "webhook could not be stored");
            metrics::counter!("hydra_webhooks_total", "outcome" => "store_failed").increment(1);
            ApiError::from(crate::billing::BillingError::DatabaseUnavailable).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_are_checked_as_stripe_documents() {
        let secrets = [Secret::new("whsec_fake_old"), Secret::new("whsec_fake_new")];
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_000_000;
        let good = format!("t={now},v1={}", sign("whsec_fake_new", now, body));
        assert_eq!(verify_signature(Some(&good), body, &secrets, now), Ok(()));
        // During a roll Stripe sends one v1 per secret; any may match.
        let rolled = format!(
            "t={now},v1={},v1={}",
            sign("whsec_fake_gone", now, body),
            sign("whsec_fake_old", now, body)
        );
        assert_eq!(verify_signature(Some(&rolled), body, &secrets, now), Ok(()));
        assert_eq!(verify_signature(None, body, &secrets, now), Err(SignatureError::Missing));
        assert_eq!(verify_signature(Some("garbage"), body, &secrets, now), Err(SignatureError::Malformed));
        let wrong = format!("t={now},v1={}", sign("whsec_fake_other", now, body));
        assert_eq!(verify_signature(Some(&wrong), body, &secrets, now), Err(SignatureError::NoMatch));
        assert_eq!(
            verify_signature(Some(&good), br#"{"id":"evt_2"}"#, &secrets, now),
            Err(SignatureError::NoMatch)
        );
        let old = format!("t={},v1={}", now - 301, sign("whsec_fake_new", now - 301, body));
        assert_eq!(verify_signature(Some(&old), body, &secrets, now), Err(SignatureError::Stale));
        let edge = format!("t={},v1={}", now - 300, sign("whsec_fake_new", now - 300, body));
        assert_eq!(verify_signature(Some(&edge), body, &secrets, now), Ok(()));
        // A header stuffed with signatures is refused before any hashing.
        let stuffed = format!("t={now}{}", ",v1=00".repeat(5_000));
        assert_eq!(verify_signature(Some(&stuffed), body, &secrets, now), Err(SignatureError::Malformed));
        let long = format!("t={now},v1={}", "a".repeat(2_000));
        assert_eq!(verify_signature(Some(&long), body, &secrets, now), Err(SignatureError::Malformed));
        // A v0 (test-mode decoy) alone is never enough.
        let v0 = format!("t={now},v0={}", sign("whsec_fake_new", now, body));
        assert_eq!(verify_signature(Some(&v0), body, &secrets, now), Err(SignatureError::NoMatch));
    }
}
