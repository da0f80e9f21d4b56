//! Owns the simulator's tiny hosted pages: a Checkout page (pick a test card or type a test card
//! number, pay, pass or fail 3-D Secure) that redirects to the success URL, showing the product,
//! seats and total; a customer portal (seats, plan, cancel at period end, invoice history with
//! dates, payment method) that returns to the return URL; and the hosted invoice page every
//! finalized invoice links to (`hosted_invoice_url`), where a payment waiting for 3-D Secure is
//! authenticated and paid. Plain HTML forms, all escaped.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::billing;
use crate::cards::{Card, ChargeOutcome};
use crate::form::{self, Params};

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width,initial-scale=1\"><title>{t}</title><style>body{{font-family:system-ui,\
         sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}}.sim{{background:#fff3cd;\
         padding:.4rem .6rem;border-radius:4px;font-size:.85rem}}label{{display:block;margin:.6rem 0}}\
         button{{padding:.5rem 1rem;margin:.3rem .3rem 0 0}}.error{{color:#a40000}}</style></head><body>\
         <p class=\"sim\">Stripe simulator: test mode, no real money.</p><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    ))
}

fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}${}.{:02}", minor.abs() / 100, minor.abs() % 100)
}

/// A Unix time as people read it: `1 March 2026`.
fn date(t: &Value) -> String {
    t.as_i64()
        .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
        .map_or_else(|| "—".to_owned(), |d| d.format("%-d %B %Y").to_string())
}

const CARDS: [(&str, &str); 6] = [
    ("pm_card_visa", "4242 4242 4242 4242: succeeds"),
    ("pm_card_chargeDeclined", "4000 0000 0000 0002: declined"),
    ("pm_card_chargeCustomerFail", "4000 0000 0000 0341: attaches, every charge declined"),
    ("pm_card_chargeDeclinedInsufficientFunds", "4000 0000 0000 9995: declined, insufficient funds"),
    ("pm_card_authenticationRequiredOnSetup", "4000 0025 0000 3155: 3-D Secure now, then set up"),
    ("pm_card_authenticationRequired", "4000 0027 6000 3184: 3-D Secure on every payment"),
];

fn checkout_form(session: &Value, items: &Value, product: &str, error: Option<&str>) -> String {
    let price = &items["line_item"]["price"];
    let unit = price["unit_amount"].as_i64().unwrap_or(0);
    let quantity = items["quantity"].as_i64().unwrap_or(1);
    let interval = price["recurring"]["interval"].as_str().unwrap_or("month");
    let adjustable = items["adjustable"]["enabled"] == true;
    let quantity_input = if adjustable {
        format!(
            "<label>Seats <input name=\"quantity\" type=\"number\" min=\"{}\" max=\"{}\" value=\"{quantity}\"></label>",
            items["adjustable"]["minimum"].as_i64().unwrap_or(1),
            items["adjustable"]["maximum"].as_i64().unwrap_or(99)
        )
    } else {
        format!("<p>Seats: {quantity}</p>")
    };
    let cards: String = CARDS
        .iter()
        .enumerate()
        .map(|(i, (token, label))| {
            format!(
                "<label><input type=\"radio\" name=\"card\" value=\"{token}\"{}> {}</label>",
                if i == 0 { " checked" } else { "" },
                escape(label)
            )
        })
        .collect();
    format!(
        "{}<h2>{}</h2><p>{} per seat / {interval}</p><p><strong>Total due today: {} for {quantity} seat{}</strong>, \
         then {} every {interval}.</p><form method=\"post\">{quantity_input}<fieldset><legend>Test card</legend>{cards}\
         {NUMBER_INPUT}</fieldset><button type=\"submit\">Subscribe</button></form><p><a href=\"{}\">Cancel</a></p>",
        error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default(),
        escape(product),
        money(unit),
        money(unit * quantity),
        if quantity == 1 { "" } else { "s" },
        money(unit * quantity),
        escape(session["cancel_url"].as_str().unwrap_or("/")),
        interval = escape(interval),
    )
}

/// Where Stripe takes card numbers: its hosted card forms. A number filled in wins over the
/// chosen test card.
const NUMBER_INPUT: &str = "<label>Or a test card number <input name=\"number\" inputmode=\"numeric\" \
                            autocomplete=\"cc-number\"></label>";

/// The test PaymentMethod a card form's answer stands for: the typed number's, else the chosen
/// card's; an error message for a number that is not a test card.
fn chosen_card(params: &Value) -> Result<String, String> {
    match params.str_param("number").filter(|n| !n.trim().is_empty()) {
        Some(number) => Card::from_number(number)
            .map(|c| c.token().to_owned())
            .ok_or_else(|| "Your card number is not one of Stripe's test cards.".to_owned()),
        None => Ok(params.str_param("card").unwrap_or("pm_card_visa").to_owned()),
    }
}

pub async fn checkout_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let world = shared.world.lock().await;
    let Ok(session) = world.fetch("checkout.session", &id) else {
        return (StatusCode::NOT_FOUND, page("Not found", "<p>No such Checkout Session.</p>"))
            .into_response();
    };
    if session["status"] != "open" {
        return page(
            "Checkout",
            &format!("<p>This session is {}.</p>", escape(session["status"].as_str().unwrap_or("closed"))),
        )
        .into_response();
    }
    let items = world.checkout_items.get(&id).cloned().unwrap_or(Value::Null);
    page("Checkout", &checkout_form(&session, &items, &product_name(&world, &items), None)).into_response()
}

/// The name of the product a Checkout Session sells.
fn product_name(world: &crate::world::World, items: &Value) -> String {
    let product = items["line_item"]["price"]["product"].as_str().unwrap_or_default();
    world.get(product).and_then(|p| p["name"].as_str()).unwrap_or("Subscription").to_owned()
}

/// Pays the session; a 3-D Secure card first shows the challenge, answered by `auth`.
pub async fn checkout_submit(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let params = form::decode(&body).unwrap_or(Value::Null);
    let quantity = params.int_param("quantity").ok().flatten();
    let card = chosen_card(&params);
    let needs_challenge = card.as_deref().is_ok_and(|c| {
        matches!(Card::from_token(c), Some(Card::AuthenticateUnlessSetUp | Card::AlwaysAuthenticate))
    });
    let mut world = shared.world.lock().await;
    let Ok(session) = world.fetch("checkout.session", &id) else {
        return (StatusCode::NOT_FOUND, page("Not found", "<p>No such Checkout Session.</p>"))
            .into_response();
    };
    let items = world.checkout_items.get(&id).cloned().unwrap_or(Value::Null);
    let product = product_name(&world, &items);
    let card = match card {
        Ok(card) => card,
        Err(message) => {
            return page("Checkout", &checkout_form(&session, &items, &product, Some(&message)))
                .into_response();
        }
    };
    match (needs_challenge, params.str_param("auth")) {
        (true, None) => {
            let q = quantity
                .map(|q| format!("<input type=\"hidden\" name=\"quantity\" value=\"{q}\">"))
                .unwrap_or_default();
            return page(
                "3-D Secure",
                &format!(
                    "<p>Your bank asks you to confirm this payment.</p><form method=\"post\">\
                     <input type=\"hidden\" name=\"card\" value=\"{}\">{q}<button name=\"auth\" value=\"succeed\">\
                     Complete authentication</button><button name=\"auth\" value=\"fail\">Fail authentication</button></form>",
                    escape(&card)
                ),
            )
            .into_response();
        }
        (true, Some("fail")) => {
            return page(
                "Checkout",
                &checkout_form(
                    &session,
                    &items,
                    &product,
                    Some("We are unable to authenticate your payment method."),
                ),
            )
            .into_response();
        }
        _ => {}
    }
    let result = super::complete_checkout(&mut world, &shared, &id, &card, quantity);
    drop(world);
    shared.wake.notify_one();
    match result {
        Ok(done) => {
            let url = done["success_url"].as_str().unwrap_or("/").replace("{CHECKOUT_SESSION_ID}", &id);
            Redirect::to(&url).into_response()
        }
        Err(e) => {
            page("Checkout", &checkout_form(&session, &items, &product, Some(&e.message))).into_response()
        }
    }
}

pub async fn portal_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let world = shared.world.lock().await;
    let Ok(session) = world.fetch("billing_portal.session", &id) else {
        return (StatusCode::NOT_FOUND, page("Not found", "<p>No such portal session.</p>")).into_response();
    };
    let customer = session["customer"].as_str().unwrap_or_default();
    let config =
        world.get(session["configuration"].as_str().unwrap_or_default()).cloned().unwrap_or(Value::Null);
    let subs: Vec<Value> = world
        .list("subscription")
        .into_iter()
        .filter(|s| {
            s["customer"] == customer
                && !matches!(s["status"].as_str(), Some("canceled" | "incomplete_expired"))
        })
        .collect();
    let mut body = String::new();
    for sub in &subs {
        let item = &sub["items"]["data"][0];
        let price = &item["price"];
        let product = world
            .get(price["product"].as_str().unwrap_or_default())
            .and_then(|p| p["name"].as_str())
            .unwrap_or("Plan");
        let period_end = date(&item["current_period_end"]);
        body.push_str(&format!(
            "<h2>{}</h2><p>{} seats, {} per seat / {}, status {}. {}</p>",
            escape(product),
            item["quantity"],
            money(price["unit_amount"].as_i64().unwrap_or(0)),
            escape(price["recurring"]["interval"].as_str().unwrap_or("month")),
            escape(sub["status"].as_str().unwrap_or("")),
            if sub["cancel_at_period_end"] == true {
                format!("Cancels on {period_end}.")
            } else {
                format!("Renews on {period_end}.")
            }
        ));
        let sid = escape(sub["id"].as_str().unwrap_or_default());
        body.push_str(&format!(
            "<form method=\"post\"><input type=\"hidden\" name=\"subscription\" value=\"{sid}\">\
             <label>Seats <input name=\"quantity\" type=\"number\" min=\"1\" max=\"500\" value=\"{}\"></label>\
             <button name=\"action\" value=\"seats\">Update seats</button></form>",
            item["quantity"]
        ));
        let prices: Vec<String> = config["features"]["subscription_update"]["products"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .flat_map(|p| p["prices"].as_array().cloned().unwrap_or_default())
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let options: String = prices
            .iter()
            .filter_map(|p| world.get(p))
            .map(|p| {
                format!(
                    "<option value=\"{}\">{} {} / {}</option>",
                    escape(p["id"].as_str().unwrap_or_default()),
                    escape(
                        world
                            .get(p["product"].as_str().unwrap_or_default())
                            .and_then(|x| x["name"].as_str())
                            .unwrap_or("")
                    ),
                    money(p["unit_amount"].as_i64().unwrap_or(0)),
                    escape(p["recurring"]["interval"].as_str().unwrap_or(""))
                )
            })
            .collect();
        if !options.is_empty() {
            body.push_str(&format!(
                "<form method=\"post\"><input type=\"hidden\" name=\"subscription\" value=\"{sid}\"><label>Plan \
                 <select name=\"price\">{options}</select></label><button name=\"action\" value=\"plan\">Switch plan</button></form>"
            ));
        }
        body.push_str(&format!(
            "<form method=\"post\"><input type=\"hidden\" name=\"subscription\" value=\"{sid}\">{}</form>",
            if sub["cancel_at_period_end"] == true {
                "<button name=\"action\" value=\"renew\">Don't cancel</button>"
            } else {
                "<button name=\"action\" value=\"cancel\">Cancel at period end</button>"
            }
        ));
    }
    let invoices: String = world
        .list("invoice")
        .into_iter()
        .filter(|i| i["customer"] == customer)
        .map(|i| {
            format!(
                "<li>{}: {} ({})</li>",
                date(&i["created"]),
                money(i["amount_due"].as_i64().unwrap_or(0)),
                escape(i["status"].as_str().unwrap_or(""))
            )
        })
        .collect();
    body.push_str(&format!("<h2>Invoice history</h2><ul>{invoices}</ul>"));
    // Payment method: the default card, and a form to replace it with another test card.
    let current = world
        .get(customer)
        .and_then(|c| c["invoice_settings"]["default_payment_method"].as_str())
        .and_then(|pm| world.get(pm))
        .and_then(|pm| pm["card"]["last4"].as_str().map(|l| format!("Card ending in {l}")))
        .unwrap_or_else(|| "No card on file".to_owned());
    let cards: String = CARDS
        .iter()
        .map(|(token, label)| format!("<option value=\"{token}\">{}</option>", escape(label)))
        .collect();
    body.push_str(&format!(
        "<h2>Payment method</h2><p>{}</p><form method=\"post\"><label>New card <select name=\"card\">{cards}</select></label>\
         {NUMBER_INPUT}<button name=\"action\" value=\"payment_method\">Update payment method</button></form>",
        escape(&current)
    ));
    body.push_str(&format!(
        "<p><a href=\"{}\">Return</a></p>",
        escape(session["return_url"].as_str().unwrap_or("/"))
    ));
    page("Manage your subscription", &body).into_response()
}

/// Applies a portal action the way Stripe's portal does: changes are invoiced at once
/// (`always_invoice`), cancellation is at period end.
pub async fn portal_submit(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let params = form::decode(&body).unwrap_or(Value::Null);
    let mut world = shared.world.lock().await;
    let Ok(session) = world.fetch("billing_portal.session", &id) else {
        return (StatusCode::NOT_FOUND, page("Not found", "<p>No such portal session.</p>")).into_response();
    };
    if params.str_param("action") == Some("payment_method") {
        let customer = session["customer"].as_str().unwrap_or_default().to_owned();
        let attached = chosen_card(&params)
            .map_err(crate::error::StripeError::state)
            .and_then(|card| super::attach_payment_method(&mut world, &card, &customer));
        let method = match attached {
            Ok(m) => m["id"].as_str().unwrap_or_default().to_owned(),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    page("Portal", &format!("<p class=\"error\">{}</p>", escape(&e.message))),
                )
                    .into_response();
            }
        };
        if let Some(c) = world.get_mut(&customer) {
            c["invoice_settings"]["default_payment_method"] = json!(method);
            let c = c.clone();
            world.emit("customer.updated", &c, None, None);
        }
        drop(world);
        shared.wake.notify_one();
        return Redirect::to(&format!("/portal/{id}")).into_response();
    }
    let sub_id = params.str_param("subscription").unwrap_or_default().to_owned();
    let sub = match world.fetch("subscription", &sub_id) {
        Ok(s) if s["customer"] == session["customer"] => s,
        _ => {
            return (StatusCode::NOT_FOUND, page("Not found", "<p>No such subscription.</p>"))
                .into_response();
        }
    };
    let now = world.customer_now(sub["customer"].as_str().unwrap_or_default());
    let item = sub["items"]["data"][0].clone();
    let (new_price, new_quantity) = match params.str_param("action") {
        Some("seats") => {
            (item["price"].clone(), params.int_param("quantity").ok().flatten().unwrap_or(1).clamp(1, 500))
        }
        Some("plan") => match params.str_param("price").and_then(|p| world.get(p)).cloned() {
            Some(p) => (p, item["quantity"].as_i64().unwrap_or(1)),
            None => return (StatusCode::BAD_REQUEST, page("Portal", "<p>Unknown plan.</p>")).into_response(),
        },
        Some(action @ ("cancel" | "renew")) => {
            let cancel = action == "cancel";
            billing::update_subscription(&mut world, &sub_id, |s| {
                s["cancel_at_period_end"] = json!(cancel);
                s["cancel_at"] =
                    if cancel { s["items"]["data"][0]["current_period_end"].clone() } else { Value::Null };
                s["canceled_at"] = if cancel { json!(now) } else { Value::Null };
                s["cancellation_details"]["reason"] =
                    if cancel { json!("cancellation_requested") } else { Value::Null };
            });
            drop(world);
            shared.wake.notify_one();
            return Redirect::to(&format!("/portal/{id}")).into_response();
        }
        _ => return (StatusCode::BAD_REQUEST, page("Portal", "<p>Unknown action.</p>")).into_response(),
    };
    let lines = billing::proration_lines(&mut world, &sub, &new_price, new_quantity, now);
    let invoice = billing::new_invoice(&mut world, &sub, "subscription_update", lines, now);
    let invoice_id = invoice["id"].as_str().unwrap_or_default().to_owned();
    super::finalize_now(&mut world, &invoice_id, now);
    billing::update_subscription(&mut world, &sub_id, |s| {
        billing::set_item(s, &new_price, new_quantity);
        s["latest_invoice"] = json!(invoice_id);
    });
    let outcome = billing::attempt_payment(&mut world, &shared.settings.billing, &invoice_id, false, now);
    crate::entitlements::refresh(&mut world, sub["customer"].as_str().unwrap_or_default());
    drop(world);
    shared.wake.notify_one();
    if outcome == ChargeOutcome::Succeeded {
        Redirect::to(&format!("/portal/{id}")).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page("Portal", "<p class=\"error\">The payment for this change failed.</p>"),
        )
            .into_response()
    }
}

/// The invoice's payment intent, when its payment waits for the customer's 3-D Secure answer.
fn intent_awaiting_action(world: &crate::world::World, invoice: &Value) -> Option<Value> {
    let pi = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str()?;
    world.get(pi).filter(|pi| invoice["status"] == "open" && pi["status"] == "requires_action").cloned()
}

/// The hosted invoice page's body: what is billed and when, what it costs, where it stands,
/// and, while its payment waits for 3-D Secure, the challenge.
fn invoice_body(world: &crate::world::World, invoice: &Value, error: Option<&str>) -> String {
    let mut body = String::new();
    if let Some(e) = error {
        body.push_str(&format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)));
    }
    let customer = [&invoice["customer_name"], &invoice["customer_email"]]
        .iter()
        .filter_map(|v| v.as_str())
        .map(escape)
        .collect::<Vec<_>>()
        .join(", ");
    if !customer.is_empty() {
        body.push_str(&format!("<p>Billed to {customer}</p>"));
    }
    let issued = match &invoice["status_transitions"]["finalized_at"] {
        Value::Null => &invoice["created"],
        at => at,
    };
    body.push_str(&format!("<p>Issued {}</p>", date(issued)));
    let lines: String = invoice["lines"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "<tr><td>{}</td><td>{} – {}</td><td>{}</td></tr>",
                escape(l["description"].as_str().unwrap_or("")),
                date(&l["period"]["start"]),
                date(&l["period"]["end"]),
                money(l["amount"].as_i64().unwrap_or(0))
            )
        })
        .collect();
    body.push_str(&format!(
        "<table><thead><tr><th>Description</th><th>Period</th><th>Amount</th></tr></thead><tbody>{lines}</tbody></table>\
         <p>Total: {}</p>",
        money(invoice["total"].as_i64().unwrap_or(0))
    ));
    let credit = invoice["starting_balance"].as_i64().unwrap_or(0);
    if credit < 0 {
        body.push_str(&format!("<p>Credit applied: {}</p>", money(credit)));
    }
    match invoice["status"].as_str() {
        Some("paid") => body.push_str(&format!(
            "<p><strong>Paid</strong> on {}: {}</p>",
            date(&invoice["status_transitions"]["paid_at"]),
            money(invoice["amount_paid"].as_i64().unwrap_or(0))
        )),
        Some("void") => body.push_str("<p><strong>Void</strong>: this invoice will not be collected.</p>"),
        _ => {
            body.push_str(&format!(
                "<p><strong>Amount due: {}</strong> (status: {})</p>",
                money(invoice["amount_remaining"].as_i64().unwrap_or(0)),
                escape(invoice["status"].as_str().unwrap_or("open"))
            ));
            if let Some(pi) = intent_awaiting_action(world, invoice) {
                let card = pi["payment_method"]
                    .as_str()
                    .and_then(|pm| world.get(pm))
                    .and_then(|pm| pm["card"]["last4"].as_str())
                    .map(|l| format!(" with the card ending in {}", escape(l)))
                    .unwrap_or_default();
                body.push_str(&format!(
                    "<p>Your bank asks you to confirm this payment{card}.</p><form method=\"post\">\
                     <button name=\"auth\" value=\"succeed\">Complete authentication</button>\
                     <button name=\"auth\" value=\"fail\">Fail authentication</button></form>"
                ));
            } else if !invoice["next_payment_attempt"].is_null() {
                body.push_str(&format!(
                    "<p>The next payment attempt is on {}.</p>",
                    date(&invoice["next_payment_attempt"])
                ));
            }
        }
    }
    body
}

/// The invoice a hosted invoice URL names: finalized ones only (a draft has no page yet).
fn hosted_invoice(world: &crate::world::World, id: &str) -> Option<Value> {
    world.fetch("invoice", id).ok().filter(|i| i["status"] != "draft")
}

fn invoice_title(invoice: &Value) -> String {
    format!("Invoice {}", invoice["number"].as_str().or(invoice["id"].as_str()).unwrap_or_default())
}

pub async fn invoice_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let world = shared.world.lock().await;
    let Some(invoice) = hosted_invoice(&world, &id) else {
        return (StatusCode::NOT_FOUND, page("Not found", "<p>No such invoice.</p>")).into_response();
    };
    page(&invoice_title(&invoice), &invoice_body(&world, &invoice, None)).into_response()
}

/// Answers the 3-D Secure challenge as the test helper does; a pass pays the invoice, and the
/// page then shows it paid.
pub async fn invoice_submit(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let params = form::decode(&body).unwrap_or(Value::Null);
    let mut world = shared.world.lock().await;
    let Some(invoice) = hosted_invoice(&world, &id) else {
        return (StatusCode::NOT_FOUND, page("Not found", "<p>No such invoice.</p>")).into_response();
    };
    let Some(pi) = intent_awaiting_action(&world, &invoice) else {
        let body =
            invoice_body(&world, &invoice, Some("This invoice has no payment waiting for authentication."));
        return (StatusCode::BAD_REQUEST, page(&invoice_title(&invoice), &body)).into_response();
    };
    let succeed = params.str_param("auth") == Some("succeed");
    let pi_id = pi["id"].as_str().unwrap_or_default().to_owned();
    let result = super::authenticate_payment(&mut world, &shared.settings.billing, &pi_id, succeed);
    let after = hosted_invoice(&world, &id).unwrap_or(invoice);
    let error = match result {
        Err(e) => Some(e.message),
        Ok(_) if !succeed => Some("We are unable to authenticate your payment method.".to_owned()),
        Ok(_) => None,
    };
    let answer = match error {
        None => Redirect::to(&format!("/invoice/{id}")).into_response(),
        Some(e) => page(&invoice_title(&after), &invoice_body(&world, &after, Some(&e))).into_response(),
    };
    drop(world);
    shared.wake.notify_one();
    answer
}
