//! Owns what the settings page shows of a paying tenant's Stripe account that our rows do not
//! hold: the card that pays, the credit on the balance, what is owed, and the last invoices.
//! Read live from Stripe, within a short deadline; the page renders without it when Stripe is
//! slow or down (and says so), because nothing here decides access.

use std::time::Duration;

use serde_json::Value;

use super::Billing;
use crate::domain::clock::Timestamp;
use crate::store::TenantRow;

/// How long the page waits for Stripe before it renders without these details.
pub const DETAILS_DEADLINE: Duration = Duration::from_secs(2);

/// How many invoices the page lists.
const INVOICES_SHOWN: usize = 5;

pub struct InvoiceSummary {
    pub number: String,
    pub created: Timestamp,
    /// Cents: what the invoice came to (negative for a credit note of a decrease).
    pub total: i64,
    /// `paid`, `open`, `void`, `uncollectible`, `draft`.
    pub status: String,
    /// Stripe's hosted page for it, with a PDF and a way to pay an open one.
    pub hosted_url: Option<String>,
}

pub struct AccountDetails {
    /// "Visa •4242".
    pub card: Option<String>,
    /// Cents the customer's balance holds for the next invoices (from a decrease).
    pub credit: i64,
    /// Cents still due on the newest open invoice (a failed renewal).
    pub owed: Option<i64>,
    pub invoices: Vec<InvoiceSummary>,
}

/// "Visa •4242" from a payment method object (an unexpanded id says nothing).
pub fn card_label(payment_method: &Value) -> Option<String> {
    let card = &payment_method["card"];
    let brand = card["brand"].as_str()?;
    let last4 = card["last4"].as_str()?;
    let brand = match brand {
        "amex" => "American Express".to_owned(),
        "mastercard" => "Mastercard".to_owned(),
        other => {
            let mut chars = other.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
        }
    };
    Some(format!("{brand} •{last4}"))
}

/// The card Stripe charges a subscription: its own default (Checkout sets one), else its
/// customer's (`invoice_settings.default_payment_method`, expanded); either object may be `Null`.
pub fn paying_card(subscription: &Value, customer: &Value) -> Option<String> {
    card_label(&subscription["default_payment_method"])
        .or_else(|| card_label(&customer["invoice_settings"]["default_payment_method"]))
}

/// The customer, with its default payment method expanded (what [`paying_card`] reads).
pub const CUSTOMER_EXPAND: &str = "invoice_settings.default_payment_method";

impl Billing {
    /// The tenant's card, balance, amount owed and last invoices, or `None` when Stripe does not
    /// answer within [`DETAILS_DEADLINE`] (or the tenant has no customer).
    pub async fn account_details(&self, row: &TenantRow) -> Option<AccountDetails> {
        let customer = row.stripe_customer_id.as_deref()?;
        let read = async {
            let customer_query =
                [("expand[]".to_owned(), "invoice_settings.default_payment_method".to_owned())];
            let invoice_query = [
                ("customer".to_owned(), customer.to_owned()),
                ("limit".to_owned(), INVOICES_SHOWN.to_string()),
            ];
            let subscription = async {
                match row.stripe_subscription_id.as_deref() {
                    Some(id) => {
                        let query = [("expand[]".to_owned(), "default_payment_method".to_owned())];
                        self.stripe.get(&format!("/v1/subscriptions/{id}"), &query).await.map(Some)
                    }
                    None => Ok(None),
                }
            };
            let customer_path = format!("/v1/customers/{customer}");
            let (customer, invoices, subscription) = tokio::join!(
                self.stripe.get(&customer_path, &customer_query),
                self.stripe.get("/v1/invoices", &invoice_query),
                subscription,
            );
            Some((customer.ok()?, invoices.ok()?, subscription.ok()?))
        };
        let (customer, invoices, subscription) = match tokio::time::timeout(DETAILS_DEADLINE, read).await {
            Ok(Some(read)) => read,
            Ok(None) | Err(_) => {
                tracing::warn!(tenant = %row.id, "the account details were not read from Stripe in time");
                return None;
            }
        };
        let card = paying_card(subscription.as_ref().unwrap_or(&Value::Null), &customer);
        let raw: Vec<&Value> = invoices["data"].as_array().into_iter().flatten().collect();
        // Newest first: the first open one is the renewal still waiting for its payment.
        let owed = raw.iter().find(|i| i["status"] == "open").and_then(|i| i["amount_remaining"].as_i64());
        let invoices: Vec<InvoiceSummary> = raw
            .iter()
            .map(|i| InvoiceSummary {
                number: i["number"].as_str().or(i["id"].as_str()).unwrap_or_default().to_owned(),
                created: i["created"].as_i64().unwrap_or(0),
                total: i["total"].as_i64().unwrap_or(0),
                status: i["status"].as_str().unwrap_or("draft").to_owned(),
                // Only a web address becomes a link (Stripe's are https; the simulator's http).
                hosted_url: i["hosted_invoice_url"]
                    .as_str()
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                    .map(str::to_owned),
            })
            .collect();
        Some(AccountDetails {
            card,
            // Stripe's balance is negative when it is the customer's credit.
            credit: customer["balance"].as_i64().filter(|b| *b < 0).map_or(0, |b| -b),
            owed,
            invoices,
        })
    }
}
