//! Owns the use cases: metering, checkout, quotes, fetch-and-sync, the event worker, emails, jobs
//! and preflight. Each is a method on [`Billing`], the one object that holds the store, the Stripe
//! client, the clock and the configuration; HTTP handlers, background jobs and CLI commands all
//! call the same methods, and get domain results or a [`BillingError`].
//!
//! # No network call inside a database transaction
//! Stripe answers in hundreds of milliseconds and SMTP in seconds; a transaction held open across
//! either holds SQLite's single write lock (or one of PostgreSQL's pooled connections) and stalls
//! every writer, metering included. So every call site follows one pattern:
//! 1. read and decide in a short transaction (or one statement), and commit;
//! 2. call Stripe (or SMTP) with no transaction open;
//! 3. record the result in a new short transaction.
//!
//! Where a race between steps matters, step 1 takes a lease (a state column with an expiry, so a
//! holder that dies frees it): the checkout lease on the tenant (one Customer, one open session),
//! the customer lease of the event worker (one customer's events at a time across replicas), the
//! claim of a queue row (events, emails), a quote's single use. Stripe writes also carry an
//! Idempotency-Key, so a call repeated after a lost answer is applied once. The store's
//! transactions take closures that decide from the locked row; those closures are pure.

pub mod account;
pub mod checkout;
pub mod email;
pub mod error;
pub mod events;
pub mod jobs;
pub mod preflight;
pub mod quotes;
pub mod sync;
pub mod usage;

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinSet;

pub use error::{BillingError, BillingResult};

use crate::config::Config;
use crate::domain::access::{BillingState, Effective, effective_tier};
use crate::domain::clock::{Clock, Timestamp};
use crate::store::{Store, TenantRow};
use crate::stripe::StripeClient;

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub clock: Clock,
    pub stripe: StripeClient,
    /// Set while `BILLING_ENABLED=false`: access is judged as if the clock stopped here.
    pub billing_disabled_since: Option<Timestamp>,
    /// Wakes the event worker when a webhook has been stored.
    worker_wake: Notify,
    /// Work started by a request that outlives it (a reconcile asked for by the success page):
    /// owned here, so shutdown stops it instead of leaving it detached.
    background: Mutex<JoinSet<()>>,
}

/// The use-case object: cheap to clone, shared by HTTP, jobs and the CLI.
#[derive(Clone)]
pub struct Billing(Arc<Inner>);

impl Deref for Billing {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Billing {
    /// Builds the use cases on a migrated store and applies the rollback switch's bookkeeping.
    /// It never migrates: `serve` and `migrate` do that, other commands refuse while pending.
    pub async fn open(config: Config, store: Store, clock: Clock) -> anyhow::Result<Billing> {
        let billing_disabled_since = store.billing_switch(config.billing_enabled, clock.now()).await?;
        if let Some(since) = billing_disabled_since {
            tracing::warn!(billing_disabled_since = since, "BILLING_ENABLED=false: billing is frozen");
        }
        Ok(Billing::with_switch(config, store, clock, billing_disabled_since))
    }

    /// The same for a one-off command (jobs, reconcile, preflight): it reads the rollback switch
    /// as `serve` recorded it and writes nothing, so a shell with another `BILLING_ENABLED` never
    /// moves the freeze of the running service.
    pub async fn for_command(config: Config, store: Store, clock: Clock) -> Billing {
        let since = if config.billing_enabled {
            None
        } else {
            Some(store.stored_billing_switch().await.unwrap_or_else(|| clock.now()))
        };
        Billing::with_switch(config, store, clock, since)
    }

    fn with_switch(
        config: Config,
        store: Store,
        clock: Clock,
        billing_disabled_since: Option<Timestamp>,
    ) -> Billing {
        let stripe = StripeClient::with_budget(
            &config.stripe.api_base,
            config.stripe.secret_key.clone(),
            config.stripe.calls_per_second,
            config.stripe.timeout,
        );
        Billing(Arc::new(Inner {
            config,
            store,
            clock,
            stripe,
            billing_disabled_since,
            worker_wake: Notify::new(),
            background: Mutex::new(JoinSet::new()),
        }))
    }

    pub fn wake_worker(&self) {
        self.worker_wake.notify_one();
    }

    /// The instant access rules are judged at: now, or the moment billing was disabled.
    pub fn access_time(&self) -> Timestamp {
        self.billing_disabled_since.unwrap_or_else(|| self.clock.now())
    }

    /// The access rules applied now (or as of the freeze) with the configured grace period.
    pub fn effective(&self, billing: &BillingState) -> Effective {
        effective_tier(billing, self.access_time(), self.config.grace_period_days)
    }

    /// A tenant's row (if known) and its effective tier: an unknown tenant is a new free one.
    pub async fn tenant_effective(&self, tenant_id: &str) -> BillingResult<(Option<TenantRow>, Effective)> {
        let row = self.store.tenant(tenant_id).await?;
        let effective = self.effective(&row.as_ref().map(TenantRow::billing_state).unwrap_or_default());
        Ok((row, effective))
    }

    /// Whether the tenant has `feature` (with `count` repos or developers), and its effective
    /// tier: the access table's verdict plus what Stripe's Entitlements grant. Asked before every
    /// workflow run, so it reads the tenant's access facts, which the store keeps in memory while
    /// they are fresh; the rules themselves are applied now, so time alone (a grace period ending)
    /// never waits for the cache.
    pub async fn access(
        &self,
        tenant_id: &str,
        feature: crate::domain::access::Feature,
        count: Option<i64>,
    ) -> BillingResult<(Effective, crate::domain::access::Verdict)> {
        let facts = self.store.access_facts(tenant_id).await?;
        let effective = self.effective(&facts.state);
        let verdict = crate::domain::access::verdict(&effective, feature, count, facts.seats, &facts.granted);
        Ok((effective, verdict))
    }

    pub fn billing_frozen(&self) -> bool {
        self.billing_disabled_since.is_some()
    }

    /// Refuses a change while the rollback switch is off.
    pub fn require_enabled(&self) -> BillingResult<()> {
        if self.billing_frozen() { Err(BillingError::BillingDisabled) } else { Ok(()) }
    }

    /// Runs `work` in the background, owned by this object (see [`Billing::stop_background`]).
    pub(crate) fn spawn_owned(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut set = self.background.lock().unwrap_or_else(|p| p.into_inner());
        // Reap what has finished so the set does not grow with every request.
        while set.try_join_next().is_some() {}
        set.spawn(work);
    }

    /// Stops the work `spawn_owned` started (on shutdown).
    pub async fn stop_background(&self) {
        let mut set = std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        set.shutdown().await;
    }

    pub(crate) async fn worker_woken(&self) {
        self.worker_wake.notified().await;
    }
}
