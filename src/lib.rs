//! hydra-billing: Hydra's billing service. The binary in `main.rs` only parses the command line;
//! everything lives here so tests can build the real app on port 0.

/// Design.md's access table and the tier-feature matrix, as pure functions.
pub mod access;
/// The HTTP routes and their handlers.
pub mod api;
/// Shared state, router, and the build/run split.
pub mod app;
/// Tenant tokens, service and admin tokens.
pub mod auth;
/// Upgrading through Stripe Checkout.
pub mod checkout;
/// The command line.
pub mod cli;
/// The injectable clock.
pub mod clock;
/// Environment configuration.
pub mod config;
/// SQLite/PostgreSQL pools and migrations.
pub mod db;
/// `hydra-billing demo`: the whole product offline in one process.
pub mod demo;
/// Billing emails and the outbox.
pub mod email;
/// The one error shape.
pub mod error;
/// Stored Stripe events and the worker that processes them.
pub mod events;
/// Gating Hydra's Rust routes on paid features.
pub mod gate;
/// Background jobs.
pub mod jobs;
/// Amounts of money as people read them.
pub mod money;
/// The go-live checklist.
pub mod preflight;
/// Binding quotes for seat changes and upgrades.
pub mod quotes;
/// Per-tenant rate limits.
pub mod ratelimit;
/// `stripe setup`: the Stripe objects billing needs, as code.
pub mod setup;
/// The Stripe API client and lenient object readers.
pub mod stripe;
/// Fetch-and-sync: Stripe's live state applied to tenants.
pub mod sync;
/// Logs and metrics.
pub mod telemetry;
/// The tenants table and the billing audit log.
pub mod tenants;
/// Free-tier metering.
pub mod usage;
/// The Stripe webhook endpoint and signature checks.
pub mod webhooks;
