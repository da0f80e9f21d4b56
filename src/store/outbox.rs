//! Owns the email outbox: rows written in the same transaction as the change that causes them
//! (unique on a dedupe key, so each email exists once however often its event is retried), and
//! the queue the sender claims them from.

use super::{Queue, QueueAttempt, Store, StoreResult, claim_sql, finish_sql};
use crate::domain::clock::Timestamp;

/// An email to queue: the dedupe key (kind, invoice, attempt) makes repeats no-ops.
#[derive(Clone, Debug)]
pub struct NewMail {
    pub dedupe_key: String,
    pub tenant_id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The one outbox insert, inside the caller's transaction.
macro_rules! insert_mail {
    ($conn:expr, $mail:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO email_outbox (id, dedupe_key, tenant_id, to_address, subject, body, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind($crate::store::new_id("eml"))
        .bind(&$mail.dedupe_key)
        .bind(&$mail.tenant_id)
        .bind(&$mail.to)
        .bind(&$mail.subject)
        .bind(&$mail.body)
        .bind($now)
        .execute($conn)
        .await
    };
}
pub(super) use insert_mail;

#[derive(sqlx::FromRow)]
pub struct PendingMail {
    pub id: String,
    pub to_address: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
}

/// pending (a claim only pushes its next attempt out) → sent | failed, or pending again later.
const OUTBOX: Queue = Queue {
    claim: claim_sql!(
        table = "email_outbox",
        ready = "pending",
        claimed = "pending",
        order = "created_at",
        returning = "id, to_address, subject, body, attempts"
    ),
    finish: finish_sql!(table = "email_outbox", done_column = "sent_at", done_statuses = "'sent'"),
};

impl Store {
    /// Claims the oldest due email until `until`.
    pub async fn claim_mail(&self, now: Timestamp, until: Timestamp) -> StoreResult<Option<PendingMail>> {
        self.claim_from(&OUTBOX, now, until).await
    }

    /// Ends a send attempt: `sent`, `failed` for good, or `pending` again at `next_attempt_at`.
    pub async fn finish_mail(&self, id: &str, attempt: QueueAttempt<'_>, now: Timestamp) -> StoreResult<()> {
        self.finish_in(&OUTBOX, id, attempt, now).await
    }
}
