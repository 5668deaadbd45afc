//! rewardflow: a referral-and-rewards engine. See `docs/ARCHITECTURE.md` for the
//! codemap; `main.rs` is only the CLI.
#![forbid(unsafe_code)]

pub mod actors;
pub mod app;
pub mod chain;
pub mod commands;
pub mod config;
pub mod db;
pub mod dev;
pub mod domain;
pub mod http;
pub mod limits;
pub mod readiness;
pub mod telemetry;
#[cfg(test)]
mod test_support;
