//! Owns reading Stripe's objects: lenient readers that take only the fields we use, in either API
//! shape (before and after 2025-03-31), the event types we act on, and form encoding.

use serde_json::Value;

use crate::domain::subscription::is_live_status;

/// The event types we act on; any other verified event is stored as `ignored`.
pub const HANDLED_EVENTS: [&str; 8] = [
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "entitlements.active_entitlement_summary.updated",
];

/// Form parameters in Stripe's nested encoding: `[("items[0][price]", "price_x"), …]`.
pub fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The id of an expandable field, whether it arrived as an id or as the object.
pub fn id_of(field: &Value) -> Option<&str> {
    field.as_str().or_else(|| field["id"].as_str())
}

/// What we read from a subscription, in either API shape.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionView {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub price_id: Option<String>,
    pub quantity: Option<i64>,
    pub interval: Option<String>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub tenant_metadata: Option<String>,
    pub latest_invoice: Option<String>,
    pub created: i64,
}

impl SubscriptionView {
    /// Reads a subscription object; `None` if it is not one.
    pub fn read(sub: &Value) -> Option<SubscriptionView> {
        if sub["object"] != "subscription" {
            return None;
        }
        let item = &sub["items"]["data"][0];
        // Current shape: periods on the item; before 2025-03-31: on the subscription.
        let period = |field: &str| item[field].as_i64().or_else(|| sub[field].as_i64());
        Some(SubscriptionView {
            id: sub["id"].as_str()?.to_owned(),
            customer: id_of(&sub["customer"])?.to_owned(),
            status: sub["status"].as_str()?.to_owned(),
            price_id: id_of(&item["price"]).map(str::to_owned),
            quantity: item["quantity"].as_i64().or_else(|| sub["quantity"].as_i64()),
            interval: item["price"]["recurring"]["interval"].as_str().map(str::to_owned),
            current_period_start: period("current_period_start"),
            current_period_end: period("current_period_end"),
            cancel_at_period_end: sub["cancel_at_period_end"].as_bool().unwrap_or(false),
            cancel_at: sub["cancel_at"].as_i64(),
            cancellation_reason: sub["cancellation_details"]["reason"].as_str().map(str::to_owned),
            tenant_metadata: sub["metadata"]["hydra_tenant_id"].as_str().map(str::to_owned),
            latest_invoice: id_of(&sub["latest_invoice"]).map(str::to_owned),
            created: sub["created"].as_i64().unwrap_or(0),
        })
    }

    pub fn is_live(&self) -> bool {
        is_live_status(&self.status)
    }
}

/// The subscription an invoice belongs to, in either API shape.
pub fn invoice_subscription(invoice: &Value) -> Option<&str> {
    id_of(&invoice["parent"]["subscription_details"]["subscription"])
        .or_else(|| id_of(&invoice["subscription"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_subscription_shapes_read_the_same() {
        let current = json!({
            "object": "subscription", "id": "sub_1", "customer": "cus_1", "status": "active",
            "cancel_at_period_end": false, "cancel_at": null, "created": 5,
            "items": {"data": [{"price": {"id": "price_t", "recurring": {"interval": "month"}}, "quantity": 3,
                                "current_period_start": 10, "current_period_end": 20}]},
            "metadata": {"hydra_tenant_id": "t1"},
        });
        let mut legacy = current.clone();
        legacy["items"]["data"][0].as_object_mut().unwrap().remove("current_period_end");
        legacy["items"]["data"][0].as_object_mut().unwrap().remove("current_period_start");
        legacy["current_period_start"] = json!(10);
        legacy["current_period_end"] = json!(20);
        let a = SubscriptionView::read(&current).unwrap();
        assert_eq!(a, SubscriptionView::read(&legacy).unwrap());
        assert_eq!(
            (a.quantity, a.current_period_end, a.tenant_metadata.as_deref()),
            (Some(3), Some(20), Some("t1"))
        );
        assert_eq!(invoice_subscription(&json!({"subscription": "sub_1"})), Some("sub_1"));
        assert_eq!(
            invoice_subscription(&json!({"parent": {"subscription_details": {"subscription": "sub_2"}}})),
            Some("sub_2")
        );
    }
}
