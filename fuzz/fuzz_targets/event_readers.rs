//! Fuzzes what reads a Stripe event's JSON: the customer it is about, a subscription in either
//! API shape, an invoice's subscription in either shape. Any JSON must be read without panicking.
#![no_main]

use hydra_billing::http::webhooks::event_customer;
use hydra_billing::stripe::{SubscriptionView, invoice_subscription};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let _ = event_customer(&event);
    let object = &event["data"]["object"];
    for candidate in [&event, object] {
        if let Some(view) = SubscriptionView::read(candidate) {
            let _ = view.is_live();
            assert_eq!(Some(view.id.as_str()), candidate["id"].as_str());
        }
        let _ = invoice_subscription(candidate);
    }
});
