//! The service's integration tests: the real server on port 0 over real HTTP, a fresh database per
//! test (SQLite by default; PostgreSQL when HYDRA_TEST_POSTGRES_URL is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod access_cache;
mod admin;
mod architecture;
mod auth;
mod billing;
mod browser;
mod cli;
mod contract;
mod emails;
mod errors;
mod faults;
mod free_tier;
mod golive;
mod helpers;
mod leases;
mod migrations;
mod operators;
mod ops;
mod pages;
mod properties;
mod replicas;
mod rollback;
mod scenarios;
mod stripe_proxy;
mod stripe_requests;
mod tenants;
mod webhooks;
