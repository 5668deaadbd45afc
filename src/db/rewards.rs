//! rewards and the acting users' rewards, as the writer stores them with the
//! interactions that earned them (`flush::store`).

use alloy::primitives::{Address, B256, U256};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct RewardRow {
    pub id: Uuid,
    pub product_id: B256,
    pub campaign_id: i64,
    pub interaction_id: Uuid,
    pub wallet: Address,
    pub token: Address,
    pub amount: U256,
    pub recipient_type: &'static str,
    pub available_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Its campaign has a budget cap, whose `used_budget` the flush charges.
    pub charged: bool,
}

/// One rewarded interaction, for the acting wallet's counter in a campaign with a
/// per-user cap (the counter is what enforces the cap after a restart).
#[derive(Debug, Clone)]
pub struct UserReward {
    pub campaign_id: i64,
    pub wallet: Address,
    pub interaction_id: Uuid,
    /// The acting user's own share (may be zero when only referrers are paid).
    pub amount: U256,
    pub at: DateTime<Utc>,
}
