//! Owns the tenants table: the row type, id validation, create-or-update, the manual plan and the
//! billing audit log that records every plan or status change.

use serde_json::{Value, json};

use crate::access::{BillingState, Tier};
use crate::clock::Timestamp;
use crate::db::{Db, new_id};
use crate::error::{ApiError, ApiResult};
use crate::with_db;

/// Every column of `tenants`, in [`TenantRow`]'s order; a macro so queries stay `'static` strings.
#[macro_export]
macro_rules! tenant_columns {
    () => {
        "id, name, billing_email, created_at, updated_at, \
         free_tier_fixes_used, free_tier_doc_runs_used, free_tier_cycles_used, free_tier_reset_at, \
         stripe_customer_id, stripe_subscription_id, stripe_subscription_status, stripe_price_id, \
         stripe_current_period_end, stripe_seat_count, plan_tier, stripe_interval, \
         cancel_at_period_end, cancel_at, cancellation_reason, grace_started_at, \
         manual_plan_tier, manual_plan_reason, manual_contract_ends_at, entitlements"
    };
}

/// Locks a tenant's row for the rest of the transaction and reads it: a write first, so
/// PostgreSQL takes the row lock and SQLite its write lock. Every read-decide-write on a tenant
/// (reserve, checkout, sync, manual plan) starts here, so such writers queue instead of racing.
pub const LOCK_SQL: &str =
    concat!("UPDATE tenants SET updated_at = updated_at WHERE id = $1 RETURNING ", tenant_columns!());

#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub billing_email: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub free_tier_fixes_used: i64,
    pub free_tier_doc_runs_used: i64,
    pub free_tier_cycles_used: i64,
    pub free_tier_reset_at: Option<i64>,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub stripe_subscription_status: Option<String>,
    pub stripe_price_id: Option<String>,
    pub stripe_current_period_end: Option<i64>,
    pub stripe_seat_count: Option<i64>,
    pub plan_tier: String,
    pub stripe_interval: Option<String>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub grace_started_at: Option<i64>,
    pub manual_plan_tier: Option<String>,
    pub manual_plan_reason: Option<String>,
    pub manual_contract_ends_at: Option<i64>,
    /// Active entitlement lookup keys (a JSON array), as Stripe last reported them.
    pub entitlements: Option<String>,
}

impl TenantRow {
    /// What the access rules read from this row.
    pub fn billing_state(&self) -> BillingState {
        BillingState {
            plan_tier: Tier::parse(&self.plan_tier),
            subscription_status: self.stripe_subscription_status.clone(),
            current_period_end: self.stripe_current_period_end,
            cancel_at_period_end: self.cancel_at_period_end,
            cancel_at: self.cancel_at,
            cancellation_reason: self.cancellation_reason.clone(),
            grace_started_at: self.grace_started_at,
            manual_plan_tier: self.manual_plan_tier.as_deref().and_then(Tier::parse),
            manual_contract_ends_at: self.manual_contract_ends_at,
        }
    }

    /// The manual-plan columns as the audit log records them.
    fn manual_plan_json(&self) -> Value {
        json!({
            "manual_plan_tier": self.manual_plan_tier,
            "manual_plan_reason": self.manual_plan_reason,
            "manual_contract_ends_at": self.manual_contract_ends_at,
        })
    }
}

pub const MAX_TENANT_ID_LEN: usize = 64;

/// Tenant ids are Hydra's: 1 to 64 of `A-Z a-z 0-9 _ - .`, starting with a letter or digit, so
/// they are safe in URLs, logs and Stripe metadata.
pub fn validate_tenant_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TENANT_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "a tenant id is 1 to {MAX_TENANT_ID_LEN} letters, digits, '_', '-' or '.', starting with a letter or digit"
        )))
    }
}

pub async fn get(db: &Db, id: &str) -> Result<Option<TenantRow>, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query_as(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
}

/// Tenants on a manual plan, as `id (tier)`: preflight lists them for the go-live review.
pub async fn manual_plans(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String, String)> = with_db!(db, |pool| {
        sqlx::query_as(
            "SELECT id, manual_plan_tier FROM tenants WHERE manual_plan_tier IS NOT NULL ORDER BY id",
        )
        .fetch_all(pool)
        .await
    })?;
    Ok(rows.into_iter().map(|(id, tier)| format!("{id} ({tier})")).collect())
}

/// Creates the tenant (free) if Hydra has not announced it yet; an existing one is untouched.
pub async fn ensure(db: &Db, id: &str, now: Timestamp) -> Result<(), sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ($1, '', $2, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
    })
}

/// The tenant whose stored Stripe customer is `customer`.
pub async fn by_customer(db: &Db, customer: &str) -> Result<Option<TenantRow>, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query_as(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE stripe_customer_id = $1"))
            .bind(customer)
            .fetch_optional(pool)
            .await
    })
}

/// Every tenant that has a Stripe customer (what reconciliation walks).
pub async fn with_customers(db: &Db) -> Result<Vec<TenantRow>, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query_as(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM tenants WHERE stripe_customer_id IS NOT NULL ORDER BY id"
        ))
        .fetch_all(pool)
        .await
    })
}

/// Creates the tenant (free) or updates its name and billing email. Returns the row and whether
/// it was created.
pub async fn upsert(
    db: &Db,
    id: &str,
    name: &str,
    billing_email: Option<&str>,
    now: Timestamp,
) -> Result<(TenantRow, bool), sqlx::Error> {
    let existed = get(db, id).await?.is_some();
    let row = with_db!(db, |pool| {
        sqlx::query_as(concat!(
            "INSERT INTO tenants (id, name, billing_email, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 billing_email = excluded.billing_email, updated_at = excluded.updated_at \
             RETURNING ",
            tenant_columns!()
        ))
        .bind(id)
        .bind(name)
        .bind(billing_email)
        .bind(now)
        .fetch_one(pool)
        .await
    })?;
    Ok((row, !existed))
}

pub const INSERT_AUDIT_SQL: &str = "INSERT INTO billing_audit_log \
     (id, tenant_id, actor, action, before_state, after_state, reason, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct AuditRow {
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub before_state: Option<String>,
    pub after_state: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
}

pub async fn audit_log(db: &Db, tenant_id: &str) -> Result<Vec<AuditRow>, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query_as(
            "SELECT tenant_id, actor, action, before_state, after_state, reason, created_at \
             FROM billing_audit_log WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(pool)
        .await
    })
}

/// What an admin asks for: a tier by hand (`None` removes the manual plan).
pub struct ManualPlan<'a> {
    pub tier: Option<Tier>,
    pub reason: &'a str,
    pub contract_ends_at: Option<Timestamp>,
}

/// Sets or removes the manual plan and writes the audit entry in the same transaction, so a
/// change is never without its record.
pub async fn set_manual_plan(
    db: &Db,
    id: &str,
    plan: ManualPlan<'_>,
    actor: &str,
    now: Timestamp,
) -> ApiResult<TenantRow> {
    let tier = plan.tier.map(Tier::as_str);
    let contract_ends_at = plan.tier.and(plan.contract_ends_at);
    let reason = Some(plan.reason).filter(|_| tier.is_some());
    with_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let before: Option<TenantRow> = sqlx::query_as(LOCK_SQL).bind(id).fetch_optional(&mut *tx).await?;
        let Some(before) = before else {
            return Err(ApiError::not_found(format!("no tenant {id}")));
        };
        let after: TenantRow = sqlx::query_as(concat!(
            "UPDATE tenants SET manual_plan_tier = $2, manual_plan_reason = $3, \
                 manual_contract_ends_at = $4, updated_at = $5 WHERE id = $1 RETURNING ",
            tenant_columns!()
        ))
        .bind(id)
        .bind(tier)
        .bind(reason)
        .bind(contract_ends_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(INSERT_AUDIT_SQL)
            .bind(new_id("aud"))
            .bind(id)
            .bind(actor)
            .bind(if tier.is_some() { "manual_plan_set" } else { "manual_plan_removed" })
            .bind(before.manual_plan_json().to_string())
            .bind(after.manual_plan_json().to_string())
            .bind(plan.reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked_for_length_and_charset() {
        for ok in ["t1", "acme-corp", "org_42.eu", &"a".repeat(64)] {
            assert!(validate_tenant_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-lead", "has space", "slash/y", "ünï", "semi;colon", &"a".repeat(65)] {
            assert!(validate_tenant_id(bad).is_err(), "{bad}");
        }
    }
}
