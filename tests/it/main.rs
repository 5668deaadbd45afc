//! Whole-app tests: real HTTP against the real service on a real PostgreSQL.

mod administration;
mod auth;
mod campaigns;
mod cli;
mod common;
mod crash;
mod interactions;
mod ops;
mod products;
mod telemetry;
