//! Pure decisions: no IO, no async, no clock reads (time is passed in). Everything
//! here is unit-tested without a runtime.

pub mod backoff;
pub mod campaign;
pub mod campaign_input;
pub mod history_cursor;
pub mod ids;
pub mod interaction;
pub mod product;
pub mod push;
pub mod rate_limit;
pub mod referral;
pub mod refund;
pub mod session_token;
pub mod siwe;
pub mod webhook;
