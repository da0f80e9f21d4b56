#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fidelity: every object the simulator returns has every field of Stripe's own example object,
//! with the same JSON type. The facts come from Stripe's `fixtures3.json`, reduced by
//! `scripts/stripe-shapes` to `tests/stripe_shapes.json` (field names and JSON types per object
//! kind, committed, so the check runs in every clone; the script says how to refresh it).

use std::path::PathBuf;

use serde_json::{Value, json};
use stripe_sim::objects::{self, KINDS};

/// Fields where one side holds an expandable reference as an id string and the other the
/// expanded object, both legitimately. Each entry is a full path as reported by the check and
/// must say why. An entry that no longer matches anything fails the test, so this cannot rot.
/// (Fields Stripe always expands, like `price` inside a subscription item, are NOT listed: they
/// must be objects on both sides.) Empty today: every reference is a string (or null) on both
/// sides, and the example's expanded `entitlements.data[].feature` is never compared because our
/// default list is empty.
const EXPANDABLE: &[&str] = &[];

/// Paths whose contents depend on context, so the example's contents say nothing about ours.
const OPAQUE: &[&str] = &[
    // The event's subject: a plan in the example, anything in practice. Each subject kind is
    // checked on its own, and `complete("event", ..)` completes a known subject as its kind.
    "event.data.object",
];

/// Kinds the simulator serves only inside other objects or lists (no defaults of their own): a
/// Checkout Session's line `item` and an invoice's `invoice_payment`. Checked as served.
const SERVED_ONLY: &[&str] = &["invoice_payment", "item"];

/// Fields holding user-defined maps: their keys are the example's data, not Stripe's fields.
const FREE_FORM: &[&str] = &["metadata"];

fn shapes_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/stripe_shapes.json")
}

/// A value of each leaf's type, standing in for Stripe's example (only types are compared).
fn example_of(shape: &Value) -> Value {
    match shape {
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), example_of(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(example_of).collect()),
        Value::String(kind) => match kind.as_str() {
            "null" => Value::Null,
            "boolean" => json!(false),
            "integer" => json!(0),
            "float" => json!(0.5),
            _ => json!(""),
        },
        other => other.clone(),
    }
}

/// Stripe's examples, as typed stand-ins, by object kind.
fn stripe_examples() -> Value {
    let text = std::fs::read_to_string(shapes_path()).expect("tests/stripe_shapes.json is committed");
    let shapes: Value = serde_json::from_str(&text).expect("stripe_shapes.json is valid JSON");
    example_of(&shapes)
}

/// The JSON type of a value; integers and floats differ (Stripe amounts and times are integers).
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

struct Check {
    mismatches: Vec<String>,
    used_allowances: Vec<&'static str>,
    /// Object-valued fixture fields that are `null` in our defaults, as (kind, keys from the root).
    null_objects: Vec<(&'static str, Vec<String>)>,
}

impl Check {
    /// Compares `ours` with `fixture` at `path` (for messages) / `keys` (object keys from the
    /// kind's root, `None` once inside an array: such fields cannot be probed by key alone).
    fn compare(
        &mut self,
        kind: &'static str,
        path: &str,
        keys: Option<&[String]>,
        fixture: &Value,
        ours: &Value,
    ) {
        if fixture.is_object()
            && ours.is_null()
            && let Some(keys) = keys
        {
            self.null_objects.push((kind, keys.to_vec()));
        }
        // Nullable fields: either side may be null whatever the other holds.
        if fixture.is_null() || ours.is_null() || OPAQUE.contains(&path) {
            return;
        }
        let field = path.rsplit('.').next().unwrap_or(path);
        if FREE_FORM.contains(&field) && fixture.is_object() && ours.is_object() {
            return;
        }
        match (fixture, ours) {
            (Value::Object(fixture), Value::Object(ours)) => {
                for (key, fixture_value) in fixture {
                    let child = format!("{path}.{key}");
                    let child_keys = keys.map(|keys| [keys, std::slice::from_ref(key)].concat());
                    match ours.get(key) {
                        Some(our_value) => {
                            self.compare(kind, &child, child_keys.as_deref(), fixture_value, our_value);
                        }
                        None => self
                            .mismatches
                            .push(format!("{child}: missing (fixture has {})", type_name(fixture_value))),
                    }
                }
            }
            (Value::Array(fixture), Value::Array(ours)) => {
                if let (Some(fixture_first), Some(our_first)) = (fixture.first(), ours.first()) {
                    self.compare(kind, &format!("{path}[0]"), None, fixture_first, our_first);
                }
            }
            (Value::String(_), Value::Object(_)) | (Value::Object(_), Value::String(_))
                if EXPANDABLE.contains(&path) =>
            {
                if let Some(entry) = EXPANDABLE.iter().find(|entry| **entry == path) {
                    self.used_allowances.push(entry);
                }
            }
            _ if type_name(fixture) == type_name(ours) => {}
            _ => self.mismatches.push(format!(
                "{path}: fixture has {}, ours has {}",
                type_name(fixture),
                type_name(ours)
            )),
        }
    }

    /// A nullable sub-object that is `null` by default must, once the engine fills it (here: with
    /// `{}`), come out with the fixture's keys too, if `complete` knows a shape for it at all.
    fn probe_null_objects(&mut self, resources: &Value) {
        for (kind, keys) in std::mem::take(&mut self.null_objects) {
            let pointer: String = keys.iter().map(|key| format!("/{key}")).collect();
            let known = keys.iter().rev().fold(json!({}), |inner, key| json!({ key.as_str(): inner }));
            let filled = objects::complete(kind, known);
            let (Some(example), Some(ours)) = (resources[kind].pointer(&pointer), filled.pointer(&pointer))
            else {
                continue;
            };
            if ours.as_object().is_some_and(|fields| !fields.is_empty()) {
                let path = format!("{kind}.{}", keys.join("."));
                self.compare(kind, &path, None, example, ours);
            }
        }
    }
}

#[test]
fn every_object_kind_has_every_fixture_field_with_the_same_type() {
    let path = shapes_path();
    let examples = stripe_examples();
    let resources = &examples;
    let mut check = Check { mismatches: Vec::new(), used_allowances: Vec::new(), null_objects: Vec::new() };
    for kind in KINDS {
        let Some(example) = resources.get(*kind) else {
            check.mismatches.push(format!("{kind}: the fixture file has no example of this kind"));
            continue;
        };
        let ours = objects::complete(kind, json!({}));
        check.compare(kind, kind, Some(&[]), example, &ours);
    }
    check.probe_null_objects(resources);
    for entry in EXPANDABLE {
        if !check.used_allowances.contains(entry) {
            check.mismatches.push(format!("{entry}: stale EXPANDABLE allow-list entry (no longer needed)"));
        }
    }

    assert!(
        check.mismatches.is_empty(),
        "{} fidelity mismatch(es) against {}:\n  {}",
        check.mismatches.len(),
        path.display(),
        check.mismatches.join("\n  ")
    );
    eprintln!("fidelity check passed: {} object kinds match {}", KINDS.len(), path.display());
}

#[test]
fn every_kind_completes_to_an_object_that_names_itself() {
    for kind in KINDS {
        let ours = objects::complete(kind, json!({}));
        assert_eq!(ours["object"], json!(kind), "{kind}: wrong `object`");
        // A summary has no id; everything else starts with an empty one for the engine to set.
        if *kind != "entitlements.active_entitlement_summary" {
            assert_eq!(ours["id"], json!(""), "{kind}: `id` must default to \"\"");
        }
        // Not every kind carries `livemode` (a subscription item does not); where present it is false.
        if let Some(livemode) = ours.get("livemode") {
            assert_eq!(livemode, &json!(false), "{kind}: the simulator is never live");
        }
    }
}

#[test]
fn merge_merges_objects_key_by_key_and_replaces_arrays_and_scalars() {
    let mut base = json!({
        "a": 1,
        "nested": { "keep": true, "change": "old", "deeper": { "x": 1, "y": 2 } },
        "list": [1, 2, 3],
        "gone": { "k": 1 },
    });
    objects::merge(
        &mut base,
        json!({
            "a": 2,
            "nested": { "change": "new", "deeper": { "y": 3 }, "added": null },
            "list": [9],
            "gone": null,
            "fresh": [],
        }),
    );
    assert_eq!(
        base,
        json!({
            "a": 2,
            "nested": { "keep": true, "change": "new", "deeper": { "x": 1, "y": 3 }, "added": null },
            "list": [9],
            "gone": null,
            "fresh": [],
        })
    );
}

#[test]
fn complete_lays_known_values_over_defaults_and_completes_embedded_objects() {
    let sub = objects::complete(
        "subscription",
        json!({
            "id": "sub_1",
            "customer": "cus_1",
            "items": { "data": [{ "id": "si_1", "price": { "id": "price_1", "unit_amount": 500 } }] },
        }),
    );
    assert_eq!(sub["id"], "sub_1");
    assert_eq!(sub["customer"], "cus_1");
    assert_eq!(sub["items"]["object"], "list");
    let item = &sub["items"]["data"][0];
    assert_eq!(item["object"], "subscription_item");
    assert_eq!(item["price"]["unit_amount"], 500);
    assert_eq!(item["price"]["recurring"]["interval"], "month");
    // The legacy plan mirrors the price, and a single-item subscription mirrors the item.
    assert_eq!(item["plan"]["id"], "price_1");
    assert_eq!(item["plan"]["amount"], 500);
    assert_eq!(sub["plan"]["id"], "price_1");
    assert_eq!(sub["quantity"], 1);

    let two_items = objects::complete(
        "subscription",
        json!({ "items": { "data": [{ "id": "si_1" }, { "id": "si_2" }] } }),
    );
    assert_eq!(two_items["plan"], Value::Null);
    assert_eq!(two_items["quantity"], Value::Null);

    // Completing a complete object changes nothing.
    assert_eq!(objects::complete("subscription", sub.clone()), sub);

    // A nullable sub-object stays null until the engine fills it, then gets all of its keys.
    let open = objects::complete("checkout.session", json!({}));
    assert_eq!(open["customer_details"], Value::Null);
    let done = objects::complete("checkout.session", json!({ "customer_details": { "email": "a@b.c" } }));
    assert_eq!(done["customer_details"]["email"], "a@b.c");
    assert_eq!(done["customer_details"]["tax_exempt"], "none");
    assert_eq!(done["customer_details"]["address"]["country"], Value::Null);

    let event = objects::complete(
        "event",
        json!({ "type": "invoice.paid", "data": { "object": { "object": "invoice", "id": "in_1" } } }),
    );
    assert_eq!(event["data"]["object"]["status_transitions"]["paid_at"], Value::Null);
    assert_eq!(event["data"]["object"]["lines"]["object"], "list");
}

#[test]
fn an_unknown_kind_returns_the_known_fields_unchanged() {
    assert_eq!(objects::complete("no_such_kind", json!({ "a": 1 })), json!({ "a": 1 }));
}

/// The same check on what the simulator actually serves: a flow through its HTTP API produces
/// one object of every kind, each compared with Stripe's example.
#[tokio::test]
async fn every_object_the_simulator_serves_over_http_matches_its_example() {
    let path = shapes_path();
    let examples = stripe_examples();
    let resources = &examples;
    let sim =
        stripe_sim::Simulator::start("127.0.0.1:0".parse().unwrap(), stripe_sim::SimSettings::default())
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, params: Vec<(&'static str, String)>| {
        let req = http
            .request(method.clone(), format!("{}{path}", sim.base_url))
            .bearer_auth("sk_test_fake_fidelity");
        let req = if method == reqwest::Method::GET { req.query(&params) } else { req.form(&params) };
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            assert!(status.is_success(), "{path}: {body}");
            body
        }
    };
    use reqwest::Method as M;
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let mut served: Vec<(&str, Value)> = Vec::new();

    let product = call(M::POST, "/v1/products".into(), vec![("name", "Hydra Team".into())]).await;
    let price = call(
        M::POST,
        "/v1/prices".into(),
        vec![
            ("product", id(&product)),
            ("unit_amount", "2000".into()),
            ("currency", "usd".into()),
            ("recurring[interval]", "month".into()),
            ("lookup_key", "tm".into()),
        ],
    )
    .await;
    let feature = call(
        M::POST,
        "/v1/entitlements/features".into(),
        vec![("name", "Jira".into()), ("lookup_key", "jira".into())],
    )
    .await;
    let product_feature = call(
        M::POST,
        format!("/v1/products/{}/features", id(&product)),
        vec![("entitlement_feature", id(&feature))],
    )
    .await;
    let endpoint = call(
        M::POST,
        "/v1/webhook_endpoints".into(),
        vec![("url", "http://127.0.0.1:9/none".into()), ("enabled_events[]", "*".into())],
    )
    .await;
    let clock =
        call(M::POST, "/v1/test_helpers/test_clocks".into(), vec![("frozen_time", "1767225600".into())])
            .await;
    let customer =
        call(M::POST, "/v1/customers".into(), vec![("email", "a@b.test".into()), ("test_clock", id(&clock))])
            .await;
    let pm =
        call(M::POST, "/v1/payment_methods/pm_card_visa/attach".into(), vec![("customer", id(&customer))])
            .await;
    let session = call(
        M::POST,
        "/v1/checkout/sessions".into(),
        vec![
            ("mode", "subscription".into()),
            ("customer", id(&customer)),
            ("line_items[0][price]", id(&price)),
            ("success_url", "http://x.test/ok".into()),
        ],
    )
    .await;
    served.push(("checkout.session", session.clone()));
    let done = call(
        M::POST,
        format!("/v1/test_helpers/checkout/sessions/{}/complete", id(&session)),
        vec![("payment_method", "pm_card_visa".into())],
    )
    .await;
    let sub_id = done["subscription"].as_str().unwrap().to_owned();
    let sub = call(M::GET, format!("/v1/subscriptions/{sub_id}"), vec![]).await;
    let item = id(&sub["items"]["data"][0]);
    let invoice = call(
        M::GET,
        format!("/v1/invoices/{}", done["invoice"].as_str().unwrap()),
        vec![("expand[]", "payments".to_owned())],
    )
    .await;
    let pi = call(
        M::GET,
        format!(
            "/v1/payment_intents/{}",
            invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap()
        ),
        vec![],
    )
    .await;
    call(
        M::POST,
        format!("/v1/subscriptions/{sub_id}"),
        vec![
            ("items[0][id]", item),
            ("items[0][quantity]", "3".into()),
            ("proration_behavior", "create_prorations".into()),
        ],
    )
    .await;
    let config = call(
        M::POST,
        "/v1/billing_portal/configurations".into(),
        vec![("features[invoice_history][enabled]", "true".into())],
    )
    .await;
    let portal = call(
        M::POST,
        "/v1/billing_portal/sessions".into(),
        vec![("customer", id(&customer)), ("return_url", "http://x.test/billing".into())],
    )
    .await;
    let entitlements =
        call(M::GET, "/v1/entitlements/active_entitlements".into(), vec![("customer", id(&customer))]).await;
    let events = call(M::GET, "/v1/events".into(), vec![("limit", "100".into())]).await;
    let event_of = |kind: &str| {
        events["data"].as_array().unwrap().iter().find(|e| e["type"] == kind).cloned().unwrap_or(Value::Null)
    };
    served.extend([
        ("customer", call(M::GET, format!("/v1/customers/{}", id(&customer)), vec![]).await),
        ("product", product),
        ("price", price),
        ("payment_method", pm),
        ("checkout.session", done.clone()),
        ("subscription", sub.clone()),
        ("subscription_item", sub["items"]["data"][0].clone()),
        ("invoice", invoice.clone()),
        ("line_item", invoice["lines"]["data"][0].clone()),
        ("payment_intent", pi),
        ("charge", event_of("charge.succeeded")["data"]["object"].clone()),
        ("billing_portal.configuration", config),
        ("billing_portal.session", portal),
        ("webhook_endpoint", endpoint),
        ("event", event_of("invoice.paid")),
        ("test_helpers.test_clock", clock),
        ("entitlements.feature", feature),
        ("product_feature", product_feature),
        ("entitlements.active_entitlement", entitlements["data"][0].clone()),
        (
            "entitlements.active_entitlement_summary",
            event_of("entitlements.active_entitlement_summary.updated")["data"]["object"].clone(),
        ),
        ("invoiceitem", event_of("invoiceitem.created")["data"]["object"].clone()),
        ("invoice_payment", invoice["payments"]["data"][0].clone()),
        (
            "item",
            call(M::GET, format!("/v1/checkout/sessions/{}/line_items", id(&session)), vec![]).await["data"]
                [0]
            .clone(),
        ),
    ]);

    let mut check = Check { mismatches: Vec::new(), used_allowances: Vec::new(), null_objects: Vec::new() };
    for kind in KINDS.iter().chain(SERVED_ONLY) {
        let ours: Vec<&Value> = served.iter().filter(|(k, _)| k == kind).map(|(_, v)| v).collect();
        if ours.is_empty() || ours.iter().any(|v| v.is_null()) {
            check.mismatches.push(format!("{kind}: the flow did not serve one"));
        }
        for value in ours {
            check.compare(kind, kind, Some(&[]), &resources[*kind], value);
        }
    }
    assert!(
        check.mismatches.is_empty(),
        "served objects differ from Stripe's examples:\n  {}",
        check.mismatches.join("\n  ")
    );
    eprintln!(
        "fidelity check passed: {} object kinds served over HTTP match {}",
        KINDS.len(),
        path.display()
    );
}
