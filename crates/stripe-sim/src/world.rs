//! Owns the simulator's state: every Stripe object by id (stored in the current API shape), the
//! event log, idempotency records, time (system or a test clock's), and rendering objects in the
//! shape of the API version a caller asked for.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::error::StripeError;
use crate::objects;

/// The API version objects are stored in, and the default for callers that send none: the
/// version `fixtures3.json` was generated for.
pub const CURRENT_API_VERSION: &str = "2026-07-29.dahlia";
/// Versions before this one read period fields on the subscription and `invoice.subscription`.
pub const BASIL: &str = "2025-03-31";

/// A recorded response, replayed for a repeated `Idempotency-Key` with the same request.
#[derive(Clone)]
pub struct IdempotentResponse {
    pub fingerprint: String,
    pub status: u16,
    pub body: Value,
}

/// Simulator bookkeeping that is not part of any Stripe object.
#[derive(Clone, Debug, Default)]
pub struct InvoiceState {
    /// When a draft renewal invoice is finalized and first charged.
    pub finalize_at: Option<i64>,
    /// Time of the first payment attempt; retries are scheduled from it.
    pub first_attempt_at: Option<i64>,
    /// A subscription change applied only once this invoice is paid (`pending_if_incomplete`).
    pub pending_update: Option<Value>,
}

pub struct World {
    pub objects: BTreeMap<String, Value>,
    /// Object ids by kind, so a list reads its own kind, not every object: with thousands of
    /// customers (the renewal-storm bench) a scan of everything per call made the simulator the
    /// bottleneck. An id stays after its object is removed; readers skip ids no longer there.
    by_kind: HashMap<String, std::collections::BTreeSet<String>>,
    /// Where this simulator serves (hosted pages such as an invoice's live under it).
    pub base_url: String,
    /// Event ids, oldest first.
    pub events: Vec<String>,
    pub idempotency: HashMap<String, IdempotentResponse>,
    pub invoice_state: HashMap<String, InvoiceState>,
    /// Which test card a payment method behaves as, by payment method id.
    pub cards: HashMap<String, crate::cards::Card>,
    /// Payment methods saved through an on-session authentication (Checkout's 3-D Secure, or an
    /// authenticated invoice payment): a 3155 card among them passes off-session. Per card, not
    /// per customer: another 3155 card the customer adds later was never set up.
    pub set_up: std::collections::HashSet<String>,
    next: u64,
    salt: u64,
    /// Events created since the webhook deliverer last looked.
    pub undelivered: Vec<String>,
    /// The invoice line each pending proration invoice item becomes on the next invoice.
    pub pending_lines: HashMap<String, Value>,
    /// Test clocks asked to advance, with their target time: the advancer works them off after
    /// the request has been answered `advancing`, as Stripe does.
    pub pending_advances: Vec<(String, i64)>,
    /// (event, endpoint) pairs delivered successfully.
    delivered: std::collections::HashSet<(String, String)>,
    /// Checkout Session line items and options, by session id (Stripe returns them only expanded).
    pub checkout_items: HashMap<String, Value>,
    /// The product each product-feature attachment belongs to (not a field of the object).
    pub product_of_feature: HashMap<String, String>,
    /// The feature ids each customer was last told it has, to emit summaries only on change.
    pub entitled: HashMap<String, Vec<String>>,
    /// Webhook endpoint signing secrets (Stripe shows a secret only when the endpoint is created).
    pub secrets: HashMap<String, String>,
    /// Invoices whose payment the customer just authenticated: the next attempt goes through.
    pub authenticated: std::collections::HashSet<String>,
}

impl World {
    /// An empty world whose hosted pages live under `base_url`.
    pub fn serving_at(base_url: &str) -> World {
        World { base_url: base_url.to_owned(), ..World::new() }
    }

    pub fn new() -> World {
        // Ids differ between runs so a service database kept across simulator restarts never sees
        // a reused id.
        let salt = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        World {
            objects: BTreeMap::new(),
            by_kind: HashMap::new(),
            base_url: String::new(),
            events: Vec::new(),
            idempotency: HashMap::new(),
            invoice_state: HashMap::new(),
            cards: HashMap::new(),
            set_up: Default::default(),
            next: 0,
            salt,
            undelivered: Vec::new(),
            pending_lines: HashMap::new(),
            pending_advances: Vec::new(),
            delivered: Default::default(),
            checkout_items: HashMap::new(),
            product_of_feature: HashMap::new(),
            entitled: HashMap::new(),
            secrets: HashMap::new(),
            authenticated: Default::default(),
        }
    }

    /// A fresh id like Stripe's: prefix, underscore, 24 base-62 characters.
    pub fn new_id(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        self.next += 1;
        let mut rng = crate::rng::Rng::new(self.salt ^ self.next);
        let mut s = format!("{prefix}_");
        s.extend((0..24).map(|_| ALPHABET[rng.below(62) as usize] as char));
        s
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.objects.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.objects.get_mut(id)
    }

    /// The object of `kind` with `id`, or Stripe's 404.
    pub fn fetch(&self, kind: &str, id: &str) -> Result<Value, crate::error::StripeError> {
        match self.objects.get(id) {
            Some(o) if o["object"] == kind => Ok(o.clone()),
            _ => Err(crate::error::StripeError::no_such(kind_name(kind), id)),
        }
    }

    pub fn put(&mut self, object: Value) -> Value {
        if let Some(id) = object["id"].as_str()
            && self.objects.insert(id.to_owned(), object.clone()).is_none()
        {
            let kind = object["object"].as_str().unwrap_or_default().to_owned();
            self.by_kind.entry(kind).or_default().insert(id.to_owned());
        }
        object
    }

    /// Builds a complete object of `kind` from the fields we know, with a fresh id.
    pub fn create(&mut self, kind: &str, prefix: &str, known: Value) -> Value {
        let id = self.new_id(prefix);
        let mut object = objects::complete(kind, known);
        object["id"] = Value::String(id);
        object["object"] = Value::String(kind.to_owned());
        self.put(object)
    }

    /// The current time for objects on `clock` (a test clock id), else the system's.
    pub fn now(&self, clock: Option<&str>) -> i64 {
        clock
            .and_then(|c| self.objects.get(c))
            .and_then(|c| c["frozen_time"].as_i64())
            .unwrap_or_else(system_now)
    }

    /// The time of a customer: its test clock's, or the system's.
    pub fn customer_now(&self, customer: &str) -> i64 {
        let clock = self.objects.get(customer).and_then(|c| c["test_clock"].as_str()).map(str::to_owned);
        self.now(clock.as_deref())
    }

    /// Records an event (Stripe's shape) about `object`, with `previous` for `*.updated` events.
    /// The enabled webhook endpoints subscribed to events of `kind`.
    pub fn endpoints_for(&self, kind: &str) -> Vec<String> {
        self.list_where("webhook_endpoint", |e| {
            e["status"] == "enabled"
                && e["enabled_events"].as_array().is_some_and(|t| t.iter().any(|t| t == "*" || t == kind))
        })
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
    }

    /// One endpoint accepted the event: one webhook fewer pending (duplicates count once).
    pub fn delivered(&mut self, event: &str, endpoint: &str) {
        let first = self.delivered.insert((event.to_owned(), endpoint.to_owned()));
        if let Some(e) = self.get_mut(event).filter(|_| first) {
            let left = e["pending_webhooks"].as_i64().unwrap_or(0);
            e["pending_webhooks"] = json!((left - 1).max(0));
        }
    }

    pub fn emit(
        &mut self,
        kind: &str,
        object: &Value,
        previous: Option<Value>,
        request: Option<(&str, Option<&str>)>,
    ) {
        let customer = object["customer"].as_str().map(str::to_owned).or_else(|| {
            (object["object"] == "customer").then(|| object["id"].as_str().unwrap_or_default().to_owned())
        });
        let created = customer.as_deref().map_or_else(system_now, |c| self.customer_now(c));
        let mut data = Map::new();
        data.insert("object".into(), object.clone());
        if let Some(prev) = previous {
            data.insert("previous_attributes".into(), prev);
        }
        let (request_id, idempotency_key) = match request {
            Some((id, key)) => (json!(id), json!(key)),
            None => (Value::Null, Value::Null),
        };
        let event = self.create(
            "event",
            "evt",
            json!({
                "api_version": CURRENT_API_VERSION,
                "created": created,
                "data": Value::Object(data),
                "livemode": false,
                "pending_webhooks": self.endpoints_for(kind).len(),
                "request": {"id": request_id, "idempotency_key": idempotency_key},
                "type": kind,
            }),
        );
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        self.events.push(id.clone());
        self.undelivered.push(id);
    }

    /// All objects of one kind, newest first (Stripe's list order).
    pub fn list(&self, kind: &str) -> Vec<Value> {
        self.list_where(kind, |_| true)
    }

    /// The objects of one kind that `keep` accepts, newest first; only those are copied.
    pub fn list_where(&self, kind: &str, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let ids = self.by_kind.get(kind).into_iter().flatten();
        let mut all: Vec<Value> = ids
            .filter_map(|id| self.objects.get(id))
            .filter(|o| o["object"] == kind && keep(o))
            .cloned()
            .collect();
        all.sort_by(|a, b| b["created"].as_i64().cmp(&a["created"].as_i64()));
        all
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

pub fn system_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The noun Stripe uses in "No such …" messages.
fn kind_name(kind: &str) -> &str {
    match kind {
        "checkout.session" => "checkout.session",
        "billing_portal.configuration" => "configuration",
        "test_helpers.test_clock" => "test_clock",
        "payment_method" => "PaymentMethod",
        other => other,
    }
}

/// Every API version Stripe has released, oldest first: the `ApiVersion` enum of stripe-node's
/// `WebhookEndpointCreateParams` (through 2026-08-26.dahlia) and the endive releases after it
/// (stripe-facts.md §12). Stripe answers any other `Stripe-Version` with an error, a well-formed
/// date or not, so the simulator keeps the list rather than a rule. Add a version here when
/// Stripe publishes one. `2025-03-01.dashboard` (the Dashboard's own) is left out on purpose.
pub const KNOWN_API_VERSIONS: &[&str] = &[
    "2011-01-01",
    "2011-06-21",
    "2011-06-28",
    "2011-08-01",
    "2011-09-15",
    "2011-11-17",
    "2012-02-23",
    "2012-03-25",
    "2012-06-18",
    "2012-06-28",
    "2012-07-09",
    "2012-09-24",
    "2012-10-26",
    "2012-11-07",
    "2013-02-11",
    "2013-02-13",
    "2013-07-05",
    "2013-08-12",
    "2013-08-13",
    "2013-10-29",
    "2013-12-03",
    "2014-01-31",
    "2014-03-13",
    "2014-03-28",
    "2014-05-19",
    "2014-06-13",
    "2014-06-17",
    "2014-07-22",
    "2014-07-26",
    "2014-08-04",
    "2014-08-20",
    "2014-09-08",
    "2014-10-07",
    "2014-11-05",
    "2014-11-20",
    "2014-12-08",
    "2014-12-17",
    "2014-12-22",
    "2015-01-11",
    "2015-01-26",
    "2015-02-10",
    "2015-02-16",
    "2015-02-18",
    "2015-03-24",
    "2015-04-07",
    "2015-06-15",
    "2015-07-07",
    "2015-07-13",
    "2015-07-28",
    "2015-08-07",
    "2015-08-19",
    "2015-09-03",
    "2015-09-08",
    "2015-09-23",
    "2015-10-01",
    "2015-10-12",
    "2015-10-16",
    "2016-02-03",
    "2016-02-19",
    "2016-02-22",
    "2016-02-23",
    "2016-02-29",
    "2016-03-07",
    "2016-06-15",
    "2016-07-06",
    "2016-10-19",
    "2017-01-27",
    "2017-02-14",
    "2017-04-06",
    "2017-05-25",
    "2017-06-05",
    "2017-08-15",
    "2017-12-14",
    "2018-01-23",
    "2018-02-05",
    "2018-02-06",
    "2018-02-28",
    "2018-05-21",
    "2018-07-27",
    "2018-08-23",
    "2018-09-06",
    "2018-09-24",
    "2018-10-31",
    "2018-11-08",
    "2019-02-11",
    "2019-02-19",
    "2019-03-14",
    "2019-05-16",
    "2019-08-14",
    "2019-09-09",
    "2019-10-08",
    "2019-10-17",
    "2019-11-05",
    "2019-12-03",
    "2020-03-02",
    "2020-08-27",
    "2022-08-01",
    "2022-11-15",
    "2023-08-16",
    "2023-10-16",
    "2024-04-10",
    "2024-06-20",
    "2024-09-30.acacia",
    "2024-10-28.acacia",
    "2024-11-20.acacia",
    "2024-12-18.acacia",
    "2025-01-27.acacia",
    "2025-02-24.acacia",
    "2025-03-31.basil",
    "2025-04-30.basil",
    "2025-05-28.basil",
    "2025-06-30.basil",
    "2025-07-30.basil",
    "2025-08-27.basil",
    "2025-09-30.clover",
    "2025-10-29.clover",
    "2025-11-17.clover",
    "2025-12-15.clover",
    "2026-01-28.clover",
    "2026-02-25.clover",
    "2026-03-25.dahlia",
    "2026-04-22.dahlia",
    "2026-05-27.dahlia",
    "2026-06-24.dahlia",
    "2026-07-29.dahlia",
    "2026-08-26.dahlia",
    "2026-09-30.endive",
    "2026-10-28.endive",
];
/// The newest version the simulator knows (what current SDKs send).
pub const LATEST_API_VERSION: &str = "2026-10-28.endive";

/// Refuses a `Stripe-Version` Stripe never released, with Stripe's `api_version_invalid`.
pub fn check_version(version: &str) -> Result<(), StripeError> {
    if KNOWN_API_VERSIONS.contains(&version) { Ok(()) } else { Err(StripeError::invalid_version(version)) }
}

/// Renders a stored (current-shape) object for `version`: callers pinned before
/// 2025-03-31.basil read period fields on the subscription and `invoice.subscription`, which we
/// add; later callers get the stored shape.
pub fn render(object: &Value, version: &str) -> Value {
    let mut out = object.clone();
    if version >= BASIL {
        return out;
    }
    legacy_shape(&mut out);
    out
}

fn legacy_shape(object: &mut Value) {
    match object["object"].as_str() {
        Some("subscription") => {
            let item = object["items"]["data"][0].clone();
            object["current_period_start"] = item["current_period_start"].clone();
            object["current_period_end"] = item["current_period_end"].clone();
        }
        Some("invoice") => {
            object["subscription"] = object["parent"]["subscription_details"]["subscription"].clone();
            if let Some(lines) = object["lines"]["data"].as_array_mut() {
                for line in lines {
                    let details = line["parent"]["subscription_item_details"].clone();
                    line["subscription"] = details["subscription"].clone();
                    line["subscription_item"] = details["subscription_item"].clone();
                    line["proration"] = details["proration"].clone();
                    line["type"] = json!("subscription");
                    line["price"] = line["pricing"]["price_details"]["price"].clone();
                }
            }
        }
        Some("event") => {
            if let Some(inner) = object.get_mut("data").and_then(|d| d.get_mut("object")) {
                legacy_shape(inner);
            }
        }
        _ => {}
    }
}

/// A Checkout Session's line items, as the list Stripe returns (expanded or at `…/line_items`).
pub fn checkout_line_items(world: &World, session: &str) -> Value {
    let items: Vec<Value> =
        world.checkout_items.get(session).map(|i| vec![i["line_item"].clone()]).unwrap_or_default();
    json!({
        "object": "list",
        "data": items,
        "has_more": false,
        "url": format!("/v1/checkout/sessions/{session}/line_items"),
    })
}

/// Fields Stripe returns only when asked for with `expand[]` ("includable"): an invoice's
/// `payments`. Removed from every invoice in `object`, wherever it sits (the object itself, a
/// list's items, an invoice expanded into a subscription or a Checkout Session, an event's
/// subject), unless `paths` names that invoice's `payments` by its full path:
/// `payments`, `data.payments`, `latest_invoice.payments`, `invoice.payments`.
pub fn drop_includables(object: &mut Value, paths: &[String]) {
    drop_includables_at(object, "", paths);
}

fn drop_includables_at(node: &mut Value, prefix: &str, paths: &[String]) {
    match node {
        Value::Object(map) => {
            if map.get("object").and_then(Value::as_str) == Some("invoice") {
                let asked = format!("{prefix}payments");
                if !paths.contains(&asked) {
                    map.remove("payments");
                }
            }
            for (key, child) in map.iter_mut() {
                drop_includables_at(child, &format!("{prefix}{key}."), paths);
            }
        }
        // A list's items are named through the list's field: `data.payments`.
        Value::Array(items) => {
            for item in items {
                drop_includables_at(item, prefix, paths);
            }
        }
        _ => {}
    }
}

/// Replaces the expandable ids named by `expand` (dot paths) with the objects they name.
pub fn expand(world: &World, object: &mut Value, paths: &[String], version: &str) {
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        expand_path(world, object, &segments, version, 0);
    }
}

fn expand_path(world: &World, node: &mut Value, path: &[&str], version: &str, depth: usize) {
    let Some((head, rest)) = path.split_first() else { return };
    if depth > 4 {
        return;
    }
    if *head == "data" {
        if let Some(items) = node.get_mut("data").and_then(Value::as_array_mut) {
            for item in items {
                expand_path(world, item, rest, version, depth + 1);
            }
        }
        return;
    }
    // A Checkout Session's line items are not an id to look up: they are its own list.
    if *head == "line_items" && node["object"] == "checkout.session" {
        let id = node["id"].as_str().unwrap_or_default().to_owned();
        node["line_items"] = checkout_line_items(world, &id);
        return expand_path(world, &mut node["line_items"], rest, version, depth + 1);
    }
    let Some(field) = node.get_mut(*head) else { return };
    if let Some(found) = field.as_str().and_then(|id| world.get(id)) {
        *field = render(found, version);
    }
    expand_path(world, field, rest, version, depth + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_versions_stripe_released_are_known() {
        for known in
            ["2025-03-31.basil", "2026-07-29.dahlia", "2026-10-28.endive", "2024-06-20", LATEST_API_VERSION]
        {
            assert!(check_version(known).is_ok(), "{known}");
        }
        assert!(check_version(CURRENT_API_VERSION).is_ok());
        // Well-formed, right major name, but never released; a date Stripe never used; a real
        // date under another major's name; the Dashboard's own version; garbage.
        for unknown in
            ["2026-08-01.dahlia", "2019-01-01", "2026-07-29.endive", "2025-03-01.dashboard", "latest", ""]
        {
            let e = check_version(unknown).unwrap_err();
            assert_eq!((e.status, e.code.as_deref()), (400, Some("api_version_invalid")), "{unknown}");
        }
        let mut sorted = KNOWN_API_VERSIONS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, KNOWN_API_VERSIONS, "kept in release order");
        assert_eq!(KNOWN_API_VERSIONS.last(), Some(&LATEST_API_VERSION));
    }

    #[test]
    fn an_invoices_payments_come_only_when_its_own_path_is_expanded() {
        let invoice = json!({"object": "invoice", "id": "in_1", "payments": {"object": "list", "data": []}});
        let sub = json!({"object": "subscription", "latest_invoice": invoice.clone()});
        let list = json!({"object": "list", "data": [sub.clone()]});
        let event = json!({"object": "event", "data": {"object": invoice.clone()}});
        let kept = |mut v: Value, paths: &[&str], pointer: &str| {
            drop_includables(&mut v, &paths.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>());
            v.pointer(pointer).is_some()
        };
        assert!(!kept(invoice.clone(), &[], "/payments"));
        assert!(kept(invoice.clone(), &["payments"], "/payments"));
        assert!(!kept(sub.clone(), &["latest_invoice"], "/latest_invoice/payments"));
        assert!(!kept(sub.clone(), &["payments"], "/latest_invoice/payments"), "another object's path");
        assert!(kept(sub, &["latest_invoice.payments"], "/latest_invoice/payments"));
        assert!(!kept(list.clone(), &["data.latest_invoice"], "/data/0/latest_invoice/payments"));
        assert!(kept(list, &["data.latest_invoice.payments"], "/data/0/latest_invoice/payments"));
        assert!(!kept(event, &["payments", "data.payments"], "/data/object/payments"));
    }
}
