//! Owns billing emails: what a failed or action-required payment says, the outbox rows written in
//! the same transaction as the state change, and the sender that delivers them over SMTP (or to
//! the log when `SMTP_URL` is unset). A dedupe key (kind, invoice, attempt) makes each email exist
//! once however often its event is delivered, retried or replayed.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::clock::Timestamp;
use crate::config::Secret;
use crate::db::Db;
use crate::sync::Trigger;
use crate::with_db;

pub const INSERT_SQL: &str = "INSERT INTO email_outbox \
     (id, dedupe_key, tenant_id, to_address, subject, body, status, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) ON CONFLICT (dedupe_key) DO NOTHING";

/// Send attempts before an email is marked failed.
const MAX_ATTEMPTS: i64 = 10;

pub struct Mail {
    pub dedupe_key: String,
    pub subject: String,
    pub body: String,
}

/// The email an invoice event causes, if any: one per failed attempt, one per invoice needing
/// authentication (with Stripe's hosted link to authenticate).
pub fn for_event(trigger: &Trigger<'_>, public_url: &str) -> Option<Mail> {
    let invoice = trigger.object;
    let id = invoice["id"].as_str()?;
    let amount = crate::money::dollars(invoice["amount_due"].as_i64().unwrap_or(0));
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

#[derive(sqlx::FromRow)]
struct Pending {
    id: String,
    to_address: String,
    subject: String,
    body: String,
    attempts: i64,
}

/// Sends every due email once. Returns how many were sent.
pub async fn send_pending(
    db: &Db,
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
    loop {
        // Claim: push the next attempt out first, so a second sender (or a crash) cannot
        // send the same row again before this one finishes.
        let claimed: Option<Pending> = with_db!(db, |pool| {
            sqlx::query_as(
                "UPDATE email_outbox SET attempts = attempts + 1, next_attempt_at = $2 \
                 WHERE id = (SELECT id FROM email_outbox WHERE status = 'pending' \
                     AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY created_at LIMIT 1) \
                 AND status = 'pending' RETURNING id, to_address, subject, body, attempts",
            )
            .bind(now)
            .bind(now + 300)
            .fetch_optional(pool)
            .await
        })?;
        let Some(mail) = claimed else { return Ok(sent) };
        let result = deliver(transport.as_ref(), &from, &mail).await;
        let (status, error, next) = match &result {
            Ok(()) => ("sent", None, None),
            Err(e) if mail.attempts >= MAX_ATTEMPTS => ("failed", Some(e.to_string()), None),
            Err(e) => ("pending", Some(e.to_string()), Some(now + 60 * mail.attempts)),
        };
        with_db!(db, |pool| {
            sqlx::query(
                "UPDATE email_outbox SET status = $2, last_error = $3, next_attempt_at = $4, \
                 sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END WHERE id = $1",
            )
            .bind(&mail.id)
            .bind(status)
            .bind(error)
            .bind(next)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        if result.is_ok() {
            sent += 1;
        }
    }
}

async fn deliver(
    transport: Option<&AsyncSmtpTransport<Tokio1Executor>>,
    from: &Mailbox,
    mail: &Pending,
) -> anyhow::Result<()> {
    let Some(transport) = transport else {
        // No SMTP configured: the outbox log is the delivery (preflight fails this with a live key).
        tracing::info!(to = %mail.to_address, subject = %mail.subject, body = %mail.body, "outbox email (SMTP_URL unset)");
        return Ok(());
    };
    let to: Mailbox = mail.to_address.parse().map_err(|_| anyhow::anyhow!("invalid recipient"))?;
    let message =
        Message::builder().from(from.clone()).to(to).subject(&mail.subject).body(mail.body.clone())?;
    transport.send(message).await.map_err(|e| anyhow::anyhow!("SMTP send failed: {e}"))?;
    Ok(())
}

/// The sender address: no-reply at the public host.
pub fn sender(public_url: &str) -> String {
    let host =
        public_url.split("://").nth(1).unwrap_or(public_url).split(['/', ':']).next().unwrap_or("localhost");
    let host = if host.contains('.') { host.to_owned() } else { format!("{host}.localdomain") };
    format!("Hydra Billing <no-reply@{host}>")
}
