//! Whole-app tests: real HTTP against the real service on a real PostgreSQL.

mod administration;
mod auth;
mod budgets;
mod campaigns;
mod chain_fixture;
mod cli;
mod common;
mod cors;
mod crash;
mod fuzz;
mod indexer;
mod interactions;
mod ops;
mod products;
mod push;
mod rpc_proxy;
mod telemetry;
mod webhooks;
