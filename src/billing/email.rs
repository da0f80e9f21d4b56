//! Owns billing emails: what a failed or action-required payment says, the outbox rows written in
//! the same transaction as the state change, and the sender that delivers them over SMTP (or to
//! the log when `SMTP_URL` is unset). A dedupe key (kind, invoice, attempt) makes each email exist
//! once however often its event is delivered, retried or replayed.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::sync::Trigger;
use crate::config::Secret;
use crate::domain::clock::Timestamp;
use crate::domain::subscription::Retry;
use crate::store::{NewMail, PendingMail, QueueAttempt, Store};

/// A minute, doubling, at most an hour apart; failed after ten tries.
const RETRY: Retry = Retry { first_secs: 60, cap_secs: 3600, max_attempts: 10 };
/// How long a claimed email is held by its sender (SMTP timeouts are shorter).
const CLAIM_SECS: i64 = 300;

pub struct Mail {
    pub dedupe_key: String,
    pub subject: String,
    pub body: String,
}

impl Mail {
    /// The outbox row for this email to `to` of tenant `tenant_id`.
    pub fn to(self, tenant_id: &str, to: &str) -> NewMail {
        NewMail {
            dedupe_key: self.dedupe_key,
            tenant_id: tenant_id.to_owned(),
            to: to.to_owned(),
            subject: self.subject,
            body: self.body,
        }
    }
}

/// The email an invoice event causes, if any: one per failed attempt, one per invoice needing
/// authentication (with Stripe's hosted link to authenticate).
pub fn for_event(trigger: &Trigger<'_>, public_url: &str) -> Option<Mail> {
    let invoice = trigger.object;
    let id = invoice["id"].as_str()?;
    let amount = crate::domain::money::dollars(invoice["amount_due"].as_i64().unwrap_or(0));
    match trigger.kind {
        "invoice.payment_failed" => {
            let attempt = invoice["attempt_count"].as_i64().unwrap_or(0);
            Some(Mail {
                dedupe_key: format!("payment_failed:{id}:{attempt}"),
                subject: format!("Hydra: your payment of {amount} failed"),
                body: format!(
                    "We could not charge your card for invoice {id} ({amount}), attempt {attempt}.\n\
                     Your plan stays active while we retry. To keep it, update your payment method:\n\
                     {public_url}/billing\n"
                ),
            })
        }
        "invoice.payment_action_required" => {
            let link = invoice["hosted_invoice_url"]
                .as_str()
                .map_or_else(|| format!("{public_url}/billing"), str::to_owned);
            Some(Mail {
                dedupe_key: format!("action_required:{id}"),
                subject: format!("Hydra: please confirm your payment of {amount}"),
                body: format!(
                    "Your bank asks you to confirm the payment for invoice {id} ({amount}).\n\
                     Confirm it here: {link}\nYour plan stays active in the meantime.\n"
                ),
            })
        }
        _ => None,
    }
}

/// Sends every due email once. Returns how many were sent. The claim is its own statement and
/// the result its own write: no transaction is open during the SMTP conversation.
pub async fn send_pending(
    store: &Store,
    smtp_url: Option<&Secret>,
    from: &str,
    now: Timestamp,
) -> anyhow::Result<u64> {
    let transport = match smtp_url {
        Some(url) => Some(
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                .map_err(|_| anyhow::anyhow!("SMTP_URL is not a valid smtp:// URL"))?
                .build(),
        ),
        None => None,
    };
    let from: Mailbox = from.parse().map_err(|_| anyhow::anyhow!("the sender address is invalid"))?;
    let mut sent = 0;
    while let Some(mail) = store.claim_mail(now, now + CLAIM_SECS).await? {
        let result = deliver(transport.as_ref(), &from, &mail).await;
        let (status, error, next) = match &result {
            Ok(()) => ("sent", None, None),
            Err(e) => match RETRY.next_attempt(mail.attempts, now) {
                Some(next) => ("pending", Some(e.to_string()), Some(next)),
                None => ("failed", Some(e.to_string()), None),
            },
        };
        let attempt = QueueAttempt { status, error: error.as_deref(), next_attempt_at: next };
        store.finish_mail(&mail.id, attempt, now).await?;
        if result.is_ok() {
            sent += 1;
        }
    }
    Ok(sent)
}

async fn deliver(
    transport: Option<&AsyncSmtpTransport<Tokio1Executor>>,
    from: &Mailbox,
    mail: &PendingMail,
) -> anyhow::Result<()> {
    let Some(transport) = transport else {
        // No SMTP configured: the outbox row is the delivery (preflight fails this with a live key).
        // The body stays out of the log: it carries Stripe's hosted invoice link.
        tracing::info!(email = %mail.id, subject = %mail.subject, "outbox email kept unsent (SMTP_URL unset)");
        return Ok(());
    };
    let to: Mailbox = mail.to_address.parse().map_err(|_| anyhow::anyhow!("invalid recipient"))?;
    let message =
        Message::builder().from(from.clone()).to(to).subject(&mail.subject).body(mail.body.clone())?;
    transport.send(message).await.map_err(|e| anyhow::anyhow!("SMTP send failed: {e}"))?;
    Ok(())
}
