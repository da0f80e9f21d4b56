//! Owns the tenants table and the billing audit log: reads by id or customer, create-or-update,
//! the manual plan, the leases that keep Stripe work single per tenant or customer, and the
//! one transaction that applies Stripe's state (with its audit entry and email).

use serde_json::{Value, json};

use std::sync::Arc;

use super::{AccessFacts, Db, Store, StoreError, StoreResult, insert_audit};
use crate::domain::access::{BillingState, Tier};
use crate::domain::clock::Timestamp;
use crate::{with_db, with_writer};

/// Every column of `tenants`, in [`TenantRow`]'s order; a macro so queries stay `'static` strings.
macro_rules! tenant_columns {
    () => {
        "id, name, billing_email, created_at, updated_at, \
         free_tier_fixes_used, free_tier_doc_runs_used, free_tier_cycles_used, free_tier_reset_at, \
         stripe_customer_id, stripe_subscription_id, stripe_subscription_status, stripe_price_id, \
         stripe_current_period_end, stripe_seat_count, plan_tier, stripe_interval, \
         cancel_at_period_end, cancel_at, cancellation_reason, grace_started_at, \
         manual_plan_tier, manual_plan_reason, manual_contract_ends_at, entitlements, checkout_session_id"
    };
}

/// Locks a tenant's row for the rest of the transaction and reads it: a write first, so
/// PostgreSQL takes the row lock and SQLite its write lock. Every read-decide-write on a tenant
/// starts here, so such writers queue instead of racing. Only short transactions with no network
/// call inside use it (see `billing`'s module comment).
pub(super) const LOCK_SQL: &str =
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
    /// The tenant's one open Checkout Session, if any (a new one expires it).
    pub checkout_session_id: Option<String>,
}

/// The channel replicas announce tenant changes on (the payload is the tenant id).
const CHANGES_CHANNEL: &str = "hydra_tenant_changed";

impl TenantRow {
    /// The columns the access answer reads, with the granted features parsed.
    pub fn access_facts(&self) -> AccessFacts {
        AccessFacts {
            state: self.billing_state(),
            seats: self.stripe_seat_count,
            granted: self.granted_features(),
        }
    }

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

    /// The lookup keys of the features Stripe's Entitlements grant the tenant, as last synced.
    pub fn granted_features(&self) -> Vec<String> {
        self.entitlements.as_deref().and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default()
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

/// The billing columns Stripe's state decides for a tenant (what fetch-and-sync writes).
#[derive(Clone, Debug, PartialEq)]
pub struct BillingColumns {
    pub subscription_id: Option<String>,
    pub status: Option<String>,
    pub price_id: Option<String>,
    pub plan_tier: Tier,
    pub period_end: Option<i64>,
    pub seats: Option<i64>,
    pub interval: Option<String>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub grace_started_at: Option<i64>,
}

impl BillingColumns {
    pub fn of(row: &TenantRow) -> BillingColumns {
        BillingColumns {
            subscription_id: row.stripe_subscription_id.clone(),
            status: row.stripe_subscription_status.clone(),
            price_id: row.stripe_price_id.clone(),
            plan_tier: Tier::parse(&row.plan_tier).unwrap_or(Tier::Free),
            period_end: row.stripe_current_period_end,
            seats: row.stripe_seat_count,
            interval: row.stripe_interval.clone(),
            cancel_at_period_end: row.cancel_at_period_end,
            cancel_at: row.cancel_at,
            cancellation_reason: row.cancellation_reason.clone(),
            grace_started_at: row.grace_started_at,
        }
    }

    fn audit_json(&self) -> Value {
        json!({
            "plan_tier": self.plan_tier.as_str(),
            "stripe_subscription_status": self.status,
            "stripe_subscription_id": self.subscription_id,
            "stripe_price_id": self.price_id,
            "stripe_seat_count": self.seats,
            "cancel_at_period_end": self.cancel_at_period_end,
        })
    }
}

/// What a sync decided from the locked row: the columns to hold, and an email to queue.
pub struct SyncWrite {
    pub after: BillingColumns,
    pub mail: Option<super::NewMail>,
}

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

/// What linking a customer found.
pub enum Link {
    /// Stored now (and audited).
    Linked(TenantRow),
    /// The tenant had this customer already: nothing written.
    Already(TenantRow),
    /// The tenant has another customer; linking would orphan it.
    HasOther(String),
    /// Another tenant has this customer.
    TakenBy(String),
}

/// What an admin asks for: a tier by hand (`None` removes the manual plan).
pub struct ManualPlan<'a> {
    pub tier: Option<Tier>,
    pub reason: &'a str,
    pub contract_ends_at: Option<Timestamp>,
}

impl Store {
    pub async fn tenant(&self, id: &str) -> StoreResult<Option<TenantRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// The tenant whose stored Stripe customer is `customer`.
    pub async fn tenant_by_customer(&self, customer: &str) -> StoreResult<Option<TenantRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM tenants WHERE stripe_customer_id = $1"
            ))
            .bind(customer)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Every tenant that has a Stripe customer (what reconciliation walks).
    pub async fn tenants_with_customers(&self) -> StoreResult<Vec<TenantRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM tenants WHERE stripe_customer_id IS NOT NULL ORDER BY id"
            ))
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn count_tenants_with_customers(&self) -> StoreResult<i64> {
        let (n,): (i64,) = with_db!(self, |pool| {
            sqlx::query_as("SELECT COUNT(*) FROM tenants WHERE stripe_customer_id IS NOT NULL")
                .fetch_one(pool)
                .await
        })?;
        Ok(n)
    }

    /// Tenants on a manual plan, as `id (tier)`: preflight lists them for the go-live review.
    pub async fn manual_plans(&self) -> StoreResult<Vec<String>> {
        let rows: Vec<(String, String)> = with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT id, manual_plan_tier FROM tenants WHERE manual_plan_tier IS NOT NULL ORDER BY id",
            )
            .fetch_all(pool)
            .await
        })?;
        Ok(rows.into_iter().map(|(id, tier)| format!("{id} ({tier})")).collect())
    }

    /// Creates the tenant (free) if Hydra has not announced it yet; an existing one is untouched.
    pub async fn ensure_tenant(&self, id: &str, now: Timestamp) -> StoreResult<()> {
        with_db!(self, |pool| sqlx::query(ENSURE_SQL)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Creates the tenant (free) or updates its name and billing email. Returns the row and
    /// whether it was created.
    pub async fn upsert_tenant(
        &self,
        id: &str,
        name: &str,
        billing_email: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<(TenantRow, bool)> {
        let existed = self.tenant(id).await?.is_some();
        let row: Option<TenantRow> = with_db!(self, |pool| {
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
            .fetch_all(pool)
            .await
            .map(super::first)
        })?;
        let row = row.ok_or(StoreError::NotFound)?;
        Ok((row, !existed))
    }

    pub async fn audit_log(&self, tenant_id: &str) -> StoreResult<Vec<AuditRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT tenant_id, actor, action, before_state, after_state, reason, created_at \
                 FROM billing_audit_log WHERE tenant_id = $1 ORDER BY created_at, id",
            )
            .bind(tenant_id)
            .fetch_all(pool)
            .await
        })?)
    }

    /// When the tenant's subscription last entered `status`, as the audit log recorded the sync
    /// that wrote it: our time of learning it, seconds after Stripe's on a healthy worker.
    pub async fn status_entered_at(&self, tenant_id: &str, status: &str) -> StoreResult<Option<Timestamp>> {
        let rows: Vec<(Option<String>, Option<String>, i64)> = with_db!(self, |pool| {
            sqlx::query_as(
                "SELECT before_state, after_state, created_at FROM billing_audit_log \
                 WHERE tenant_id = $1 AND action = 'stripe_sync' ORDER BY created_at DESC, id DESC LIMIT 50",
            )
            .bind(tenant_id)
            .fetch_all(pool)
            .await
        })?;
        let status_of = |state: &Option<String>| {
            state
                .as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .and_then(|v| v["stripe_subscription_status"].as_str().map(str::to_owned))
        };
        Ok(rows
            .iter()
            .find(|(before, after, _)| {
                status_of(after).as_deref() == Some(status) && status_of(before).as_deref() != Some(status)
            })
            .map(|(_, _, at)| *at))
    }

    /// Sets or removes the manual plan and writes the audit entry in the same transaction, so a
    /// change is never without its record.
    pub async fn set_manual_plan(
        &self,
        id: &str,
        plan: ManualPlan<'_>,
        actor: &str,
        now: Timestamp,
    ) -> StoreResult<TenantRow> {
        let tier = plan.tier.map(Tier::as_str);
        let contract_ends_at = plan.tier.and(plan.contract_ends_at);
        let reason = Some(plan.reason).filter(|_| tier.is_some());
        let after = with_db!(self, |pool| {
            crate::in_transaction!(pool, |tx| {
                let before: Option<TenantRow> =
                    sqlx::query_as(LOCK_SQL).bind(id).fetch_optional(&mut *tx).await?;
                let Some(before) = before else {
                    return Err(StoreError::NotFound);
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
                insert_audit!(
                    &mut *tx,
                    tenant = id,
                    actor = actor,
                    action = if tier.is_some() { "manual_plan_set" } else { "manual_plan_removed" },
                    before = before.manual_plan_json().to_string(),
                    after = after.manual_plan_json().to_string(),
                    reason = plan.reason,
                    at = now
                )?;
                Ok::<_, StoreError>(after)
            })
        })?;
        self.tenant_changed(id).await;
        Ok(after)
    }

    /// Links a Stripe customer to a tenant by hand, in one transaction with its audit entry, unless
    /// the tenant has another customer or another tenant has this one.
    pub async fn link_customer(
        &self,
        id: &str,
        customer: &str,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<Link> {
        let link = with_db!(self, |pool| {
            crate::in_transaction!(pool, |tx| {
                let row: Option<TenantRow> =
                    sqlx::query_as(LOCK_SQL).bind(id).fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    return Err(StoreError::NotFound);
                };
                match row.stripe_customer_id.as_deref() {
                    Some(c) if c == customer => return Ok(Link::Already(row)),
                    Some(other) => return Ok(Link::HasOther(other.to_owned())),
                    None => {}
                }
                let holder: Option<(String,)> =
                    sqlx::query_as("SELECT id FROM tenants WHERE stripe_customer_id = $1")
                        .bind(customer)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some((holder,)) = holder {
                    return Ok(Link::TakenBy(holder));
                }
                let after: TenantRow = sqlx::query_as(concat!(
                    "UPDATE tenants SET stripe_customer_id = $2, updated_at = $3 WHERE id = $1 RETURNING ",
                    tenant_columns!()
                ))
                .bind(id)
                .bind(customer)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                insert_audit!(
                    &mut *tx,
                    tenant = id,
                    actor = actor,
                    action = "customer_linked",
                    before = serde_json::json!({ "stripe_customer_id": null }).to_string(),
                    after = serde_json::json!({ "stripe_customer_id": customer }).to_string(),
                    reason = reason,
                    at = now
                )?;
                Ok::<_, StoreError>(Link::Linked(after))
            })
        })?;
        if matches!(link, Link::Linked(_)) {
            self.tenant_changed(id).await;
        }
        Ok(link)
    }

    /// Records the tenant's Stripe customer unless it has one already; returns the one it has.
    pub async fn set_customer(&self, id: &str, customer: &str) -> StoreResult<Option<String>> {
        with_db!(self, |pool| {
            sqlx::query(
                "UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL",
            )
            .bind(id)
            .bind(customer)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(self.tenant(id).await?.and_then(|t| t.stripe_customer_id))
    }

    /// Stores the subscription a completed Checkout made, unless one is stored already.
    pub async fn set_subscription_if_missing(&self, id: &str, subscription: &str) -> StoreResult<()> {
        with_db!(self, |pool| {
            sqlx::query(
                "UPDATE tenants SET stripe_subscription_id = $2 WHERE id = $1 AND stripe_subscription_id IS NULL",
            )
            .bind(id)
            .bind(subscription)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Takes the tenant's checkout lease until `until` under `token` when nobody holds it (or its
    /// holder's lease lapsed) and returns the row as it was taken; `None` while someone else holds
    /// it. Times are wall-clock seconds: a lease measures real time, whatever the service's clock.
    pub async fn claim_checkout(
        &self,
        id: &str,
        token: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<TenantRow>> {
        Ok(with_db!(self, |pool| {
            sqlx::query_as(concat!(
                "UPDATE tenants SET checkout_lease_until = $3, checkout_lease_token = $4 WHERE id = $1 \
                 AND (checkout_lease_until IS NULL OR checkout_lease_until < $2) RETURNING ",
                tenant_columns!()
            ))
            .bind(id)
            .bind(now)
            .bind(until)
            .bind(token)
            .fetch_all(pool)
            .await
            .map(super::first)
        })?)
    }

    /// Gives the checkout lease back and records the session it opened (if it opened one), but
    /// only while `token` still holds it: a holder whose lease lapsed changes nothing. True when
    /// it still held the lease.
    pub async fn end_checkout(
        &self,
        id: &str,
        token: &str,
        opened_session: Option<&str>,
    ) -> StoreResult<bool> {
        let n = with_db!(self, |pool| {
            sqlx::query(
                "UPDATE tenants SET checkout_lease_until = NULL, checkout_lease_token = NULL, \
                 checkout_session_id = COALESCE($3, checkout_session_id) WHERE id = $1 AND checkout_lease_token = $2",
            )
            .bind(id)
            .bind(token)
            .bind(opened_session)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(n == 1)
    }

    /// Marks a reconcile as asked for unless one was asked for since `not_before`; true when
    /// this call asked (so at most one a minute runs for a success page).
    pub async fn claim_reconcile_request(
        &self,
        id: &str,
        now: Timestamp,
        not_before: Timestamp,
    ) -> StoreResult<bool> {
        let claimed = with_db!(self, |pool| {
            sqlx::query(
                "UPDATE tenants SET reconcile_requested_at = $2 WHERE id = $1 \
                 AND (reconcile_requested_at IS NULL OR reconcile_requested_at <= $3)",
            )
            .bind(id)
            .bind(now)
            .bind(not_before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(claimed == 1)
    }

    /// Stores the customer's active entitlement lookup keys (a JSON array).
    pub async fn set_entitlements(&self, id: &str, keys_json: &str) -> StoreResult<()> {
        with_db!(self, |pool| {
            sqlx::query("UPDATE tenants SET entitlements = $2 WHERE id = $1")
                .bind(id)
                .bind(keys_json)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        self.tenant_changed(id).await;
        Ok(())
    }

    /// What the access answer reads of a tenant: from memory while fresh (see `store::cache`),
    /// otherwise read and kept. An unknown tenant reads as a new free one.
    pub async fn access_facts(&self, id: &str) -> StoreResult<Arc<AccessFacts>> {
        if let Some(facts) = self.cache.get(id) {
            return Ok(facts);
        }
        let started = self.cache.begin_load();
        let facts = Arc::new(self.tenant(id).await?.map(|r| r.access_facts()).unwrap_or_default());
        self.cache.put(id, facts.clone(), started);
        Ok(facts)
    }

    /// Called after a committed write of a column the access answer reads: forgets the tenant
    /// here at once, and on PostgreSQL tells the other replicas. Every store function writing
    /// such a column calls it (a source test checks).
    pub async fn tenant_changed(&self, id: &str) {
        self.cache.forget(id);
        if let Db::Postgres(pool) = &self.db
            && let Err(e) =
                sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(id).execute(pool).await
        {
            // The other replicas see the change when their entry's TTL runs out.
            tracing::warn!(error = %e, "could not announce a tenant change to the other replicas");
        }
    }

    /// PostgreSQL: hears the other replicas' tenant changes and forgets them here; the access
    /// cache is on only while listening, so a lost connection (and the notifications missed
    /// while it was down) never leaves a stale answer. Runs until its task is stopped; returns
    /// at once on SQLite.
    pub async fn listen_for_changes(self) {
        let Db::Postgres(pool) = &self.db else { return };
        loop {
            if let Ok(mut listener) = sqlx::postgres::PgListener::connect_with(pool).await
                && listener.listen(CHANGES_CHANNEL).await.is_ok()
            {
                self.cache.set_enabled(true);
                // `None`: the connection dropped; start over with a new one.
                while let Ok(Some(notification)) = listener.try_recv().await {
                    self.cache.forget(notification.payload());
                }
                tracing::warn!("lost the tenant-change listener; the access cache is off until it is back");
            }
            self.cache.set_enabled(false);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Whether access answers may come from memory now (tests and metrics read it).
    pub fn access_cache_on(&self) -> bool {
        self.cache.is_enabled()
    }

    /// Takes the lease on a customer's syncs (event processing, reconcile) until `until` under
    /// `token` when nobody holds it or its holder's lease lapsed; false while another holds it.
    pub async fn lease_customer(
        &self,
        customer: &str,
        token: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let n = with_writer!(self, |pool| {
            sqlx::query(
                "UPDATE tenants SET sync_lease_until = $3, sync_lease_token = $4 WHERE stripe_customer_id = $1 \
                 AND (sync_lease_until IS NULL OR sync_lease_until < $2)",
            )
            .bind(customer)
            .bind(now)
            .bind(until)
            .bind(token)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(n > 0)
    }

    /// Gives the customer's lease back, only while `token` holds it (a holder whose lease
    /// lapsed and finishes late leaves the next holder's lease alone).
    pub async fn release_customer(&self, customer: &str, token: &str) -> StoreResult<()> {
        with_writer!(self, |pool| {
            sqlx::query(
                "UPDATE tenants SET sync_lease_until = NULL, sync_lease_token = NULL \
                 WHERE stripe_customer_id = $1 AND sync_lease_token = $2",
            )
            .bind(customer)
            .bind(token)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Applies Stripe's state: locks the row, lets `decide` compute the columns from it, writes
    /// them with an audit entry when they changed, and queues the email, in one short transaction
    /// (nothing in `decide` may wait on the network). True when the columns changed.
    pub async fn apply_sync(
        &self,
        id: &str,
        actor: &str,
        now: Timestamp,
        decide: impl FnOnce(&TenantRow) -> SyncWrite,
    ) -> StoreResult<bool> {
        let changed = with_writer!(self, |pool| {
            crate::in_transaction!(pool, |tx| {
                let row: TenantRow = sqlx::query_as(LOCK_SQL).bind(id).fetch_one(&mut *tx).await?;
                let before = BillingColumns::of(&row);
                let SyncWrite { after, mail } = decide(&row);
                let changed = after != before;
                if changed {
                    sqlx::query(
                    "UPDATE tenants SET stripe_subscription_id = $2, stripe_subscription_status = $3, \
                     stripe_price_id = $4, plan_tier = $5, stripe_current_period_end = $6, stripe_seat_count = $7, \
                     stripe_interval = $8, cancel_at_period_end = $9, cancel_at = $10, cancellation_reason = $11, \
                     grace_started_at = $12, updated_at = $13 WHERE id = $1",
                )
                .bind(id)
                .bind(&after.subscription_id)
                .bind(&after.status)
                .bind(&after.price_id)
                .bind(after.plan_tier.as_str())
                .bind(after.period_end)
                .bind(after.seats)
                .bind(&after.interval)
                .bind(after.cancel_at_period_end)
                .bind(after.cancel_at)
                .bind(&after.cancellation_reason)
                .bind(after.grace_started_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                    insert_audit!(
                        &mut *tx,
                        tenant = id,
                        actor = actor,
                        action = "stripe_sync",
                        before = before.audit_json().to_string(),
                        after = after.audit_json().to_string(),
                        reason = None::<String>,
                        at = now
                    )?;
                }
                if let Some(mail) = mail {
                    super::outbox::insert_mail!(&mut *tx, mail, now)?;
                }
                Ok::<_, StoreError>(changed)
            })
        })?;
        if changed {
            self.tenant_changed(id).await;
        }
        Ok(changed)
    }

    /// The `period-end` and `grace-expiry` tidy: tenants whose paid access has ended by the
    /// rules (canceled and past the period end; past_due beyond grace) get `plan_tier = free`,
    /// each with an audit entry. Claimed with `UPDATE … RETURNING`, so two instances never both
    /// change (or audit) the same tenant. Returns the rows changed.
    pub async fn expire_paid_access(&self, job: &str, now: Timestamp, grace_secs: i64) -> StoreResult<u64> {
        let sql = if job == "period-end" {
            "UPDATE tenants SET plan_tier = 'free', updated_at = $1 \
             WHERE id IN (SELECT id FROM tenants WHERE plan_tier <> 'free' \
                 AND stripe_subscription_status = 'canceled' AND stripe_current_period_end <= $1) \
               AND plan_tier <> 'free' \
             RETURNING id, stripe_subscription_status, stripe_subscription_id"
        } else {
            "UPDATE tenants SET plan_tier = 'free', updated_at = $1 \
             WHERE id IN (SELECT id FROM tenants WHERE plan_tier <> 'free' \
                 AND stripe_subscription_status = 'past_due' AND grace_started_at + $2 <= $1) \
               AND plan_tier <> 'free' \
             RETURNING id, stripe_subscription_status, stripe_subscription_id"
        };
        let actor = format!("job:{job}");
        let n = with_db!(self, |pool| {
            crate::in_transaction!(pool, |tx| {
                let rows: Vec<(String, String, Option<String>)> =
                    sqlx::query_as(sql).bind(now).bind(grace_secs).fetch_all(&mut *tx).await?;
                for (id, status, sub) in &rows {
                    insert_audit!(
                        &mut *tx,
                        tenant = id,
                        actor = &actor,
                        action = "access_ended",
                        before = json!({"stripe_subscription_status": status, "stripe_subscription_id": sub})
                            .to_string(),
                        after = json!({"plan_tier": "free"}).to_string(),
                        reason = None::<String>,
                        at = now
                    )?;
                }
                Ok::<_, sqlx::Error>(rows)
            })
        })?;
        for (id, _, _) in &n {
            self.tenant_changed(id).await;
        }
        Ok(n.len() as u64)
    }
}

/// Creates a tenant (free) unless it exists: announced or not, a tenant is never refused.
pub(super) const ENSURE_SQL: &str = "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ($1, '', $2, $2) ON CONFLICT (id) DO NOTHING";
