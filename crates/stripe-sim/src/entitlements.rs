//! Owns entitlements: features, the features attached to products, and each customer's active
//! entitlements, derived from its live subscriptions (stripe-facts.md §11).

use serde_json::{Value, json};

use crate::world::World;

/// Subscriptions whose products grant features: active, trialing or past_due.
fn granting(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due")
}

/// The feature objects the customer is entitled to now.
pub fn active_features(world: &World, customer: &str) -> Vec<Value> {
    let products: Vec<String> = world
        .list_where("subscription", |s| {
            s["customer"] == customer && s["status"].as_str().is_some_and(granting)
        })
        .iter()
        .filter_map(|s| s["items"]["data"][0]["price"]["product"].as_str().map(str::to_owned))
        .collect();
    let mut features: Vec<Value> = world
        .list("product_feature")
        .iter()
        .filter(|pf| {
            pf["id"]
                .as_str()
                .and_then(|id| world.product_of_feature.get(id))
                .is_some_and(|p| products.iter().any(|x| x == p))
        })
        .map(|pf| pf["entitlement_feature"].clone())
        .collect();
    features.sort_by(|a, b| a["lookup_key"].as_str().cmp(&b["lookup_key"].as_str()));
    features.dedup_by(|a, b| a["id"] == b["id"]);
    features
}

/// Recomputes the customer's entitlements and emits the summary event when they changed.
pub fn refresh(world: &mut World, customer: &str) {
    let features = active_features(world, customer);
    let ids: Vec<String> = features.iter().filter_map(|f| f["id"].as_str().map(str::to_owned)).collect();
    let unchanged = world.entitled.get(customer).map_or(ids.is_empty(), |previous| *previous == ids);
    if unchanged {
        return;
    }
    world.entitled.insert(customer.to_owned(), ids);
    let summary = crate::objects::complete(
        "entitlements.active_entitlement_summary",
        json!({
            "object": "entitlements.active_entitlement_summary",
            "customer": customer,
            "livemode": false,
            "entitlements": {
                "object": "list",
                // The summary carries each feature expanded, as Stripe's example does.
                "data": features.iter().map(|f| {
                    let mut e = active_entitlement(f);
                    e["feature"] = f.clone();
                    e
                }).collect::<Vec<_>>(),
                "has_more": false,
                "url": "/v1/entitlements/active_entitlements",
            },
        }),
    );
    world.emit("entitlements.active_entitlement_summary.updated", &summary, None, None);
}

/// The active-entitlement object for one feature.
pub fn active_entitlement(feature: &Value) -> Value {
    crate::objects::complete(
        "entitlements.active_entitlement",
        json!({
            "id": format!("ent_{}", feature["id"].as_str().unwrap_or_default().trim_start_matches("feat_")),
            "object": "entitlements.active_entitlement",
            "feature": feature["id"],
            "livemode": false,
            "lookup_key": feature["lookup_key"],
        }),
    )
}
