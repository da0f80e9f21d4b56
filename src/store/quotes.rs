//! Owns the quotes table: a preview's exact terms, read back for the confirm and taken once.

use super::{Store, StoreResult};
use crate::domain::clock::Timestamp;
use crate::with_db;

/// A priced change as the preview stores it.
pub struct NewQuote<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub kind: &'a str,
    pub subscription_id: &'a str,
    pub item_id: &'a str,
    pub from_price_id: &'a str,
    pub from_quantity: i64,
    pub period_start: Option<i64>,
    pub price_id: &'a str,
    pub quantity: i64,
    pub proration_date: i64,
    pub amount_due: i64,
    pub currency: &'a str,
    pub lines_json: &'a str,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
pub struct QuoteRow {
    pub kind: String,
    pub subscription_id: String,
    pub item_id: String,
    pub from_price_id: String,
    pub from_quantity: i64,
    pub period_start: Option<i64>,
    pub price_id: String,
    pub quantity: i64,
    pub proration_date: i64,
    pub amount_due: i64,
    pub status: String,
    pub expires_at: Timestamp,
}

impl Store {
    pub async fn insert_quote(&self, q: NewQuote<'_>) -> StoreResult<()> {
        with_db!(self, |pool| {
            sqlx::query(
                "INSERT INTO quotes (id, tenant_id, kind, subscription_id, item_id, from_price_id, from_quantity, \
                 period_start, price_id, quantity, proration_date, amount_due, currency, lines, status, expires_at, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'open', $15, $16)",
            )
            .bind(q.id)
            .bind(q.tenant_id)
            .bind(q.kind)
            .bind(q.subscription_id)
            .bind(q.item_id)
            .bind(q.from_price_id)
            .bind(q.from_quantity)
            .bind(q.period_start)
            .bind(q.price_id)
            .bind(q.quantity)
            .bind(q.proration_date)
            .bind(q.amount_due)
            .bind(q.currency)
            .bind(q.lines_json)
            .bind(q.expires_at)
            .bind(q.created_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// One of the tenant's quotes; another tenant's is indistinguishable from a missing one.
    pub async fn quote_of(&self, tenant_id: &str, id: &str) -> StoreResult<Option<QuoteRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT kind, subscription_id, item_id, from_price_id, from_quantity, period_start, price_id, \
                 quantity, proration_date, amount_due, status, expires_at FROM quotes WHERE id = $1 AND tenant_id = $2",
            )
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Single use: true for the one caller that takes the open quote.
    pub async fn take_quote(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let taken = with_db!(self, |pool| {
            sqlx::query("UPDATE quotes SET status = 'used', used_at = $2 WHERE id = $1 AND status = 'open'")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(taken == 1)
    }
}
