//! rewards, and the budget and per-user counters they charge — written by the
//! writer in the same transaction as the interactions that earned them.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, U256};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::DbError;
use super::refunds::signed_delta;
use crate::domain::refund::RefundEffects;

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

/// A per-user counter's change: (rewards, amount added, amount taken back, latest).
type CounterDelta = (i32, U256, U256, Option<DateTime<Utc>>);

/// Inserts the rewards.
pub async fn insert(conn: &mut PgConnection, rewards: &[RewardRow]) -> Result<(), DbError> {
    if !rewards.is_empty() {
        sqlx::query(
            "INSERT INTO rewards (id, product_id, campaign_id, interaction_id, wallet, token, amount,
                recipient_type, available_at, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::bytea[], $3::bigint[], $4::uuid[], $5::bytea[],
                $6::bytea[], $7::text[]::numeric[], $8::text[], $9::timestamptz[], $10::timestamptz[])",
        )
        .bind(rewards.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.product_id.to_vec()).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.campaign_id).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.interaction_id).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.wallet.to_vec()).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.token.to_vec()).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.amount.to_string()).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.recipient_type).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.available_at).collect::<Vec<_>>())
        .bind(rewards.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Charges each campaign's budget with what the inserted `rewards` sum to minus
/// what refunds give back, counts the acting users (and uncounts refunded ones),
/// and marks the given campaigns exhausted.
pub async fn charge(
    conn: &mut PgConnection,
    rewards: &[RewardRow],
    users: &[UserReward],
    exhausted: &[i64],
    refunds: &RefundEffects,
) -> Result<(), DbError> {
    // Per campaign: (charged, given back).
    let mut budgets: BTreeMap<i64, (U256, U256)> = BTreeMap::new();
    for reward in rewards {
        budgets.entry(reward.campaign_id).or_default().0 += reward.amount;
    }
    for (campaign, amount) in &refunds.budgets {
        budgets.entry(*campaign).or_default().1 += *amount;
    }
    if !budgets.is_empty() {
        // No other flush lane writes this product's campaigns (the writer gives
        // each product one lane), so no lock ordering is needed.
        let (ids, deltas): (Vec<i64>, Vec<String>) = budgets
            .into_iter()
            .map(|(id, (add, sub))| (id, signed_delta(add, sub)))
            .unzip();
        sqlx::query(
            "UPDATE campaigns c SET used_budget = c.used_budget + d.delta::numeric, updated_at = now()
             FROM UNNEST($1::bigint[], $2::text[]) AS d(id, delta) WHERE c.id = d.id",
        )
        .bind(ids)
        .bind(deltas)
        .execute(&mut *conn)
        .await?;
    }
    // One row per (campaign, wallet): ON CONFLICT may not touch a row twice.
    // Refunds count negatively.
    let mut counts: BTreeMap<(i64, Address), CounterDelta> = BTreeMap::new();
    for user in users {
        let entry = counts.entry((user.campaign_id, user.wallet)).or_default();
        entry.0 += 1;
        entry.1 += user.amount;
        entry.3 = entry.3.max(Some(user.at));
    }
    for (key, (count, amount)) in &refunds.counters {
        let entry = counts.entry(*key).or_default();
        entry.0 -= *count as i32;
        entry.2 += *amount;
    }
    let (gains, losses): (Vec<_>, Vec<_>) = counts
        .into_iter()
        .partition(|(_, (n, add, sub, _))| *n >= 0 && add >= sub);
    if !gains.is_empty() {
        let mut campaign = Vec::with_capacity(gains.len());
        let mut wallet = Vec::with_capacity(gains.len());
        let mut count = Vec::with_capacity(gains.len());
        let mut amount = Vec::with_capacity(gains.len());
        let mut at = Vec::with_capacity(gains.len());
        for ((c, w), (n, add, sub, t)) in gains {
            campaign.push(c);
            wallet.push(w.to_vec());
            count.push(n);
            amount.push((add - sub).to_string());
            at.push(t);
        }
        sqlx::query(
            "INSERT INTO campaign_user_rewards AS r (campaign_id, wallet, reward_count, total_amount,
                first_reward_at, last_reward_at)
             SELECT c, w, n, a::numeric, t, t
             FROM UNNEST($1::bigint[], $2::bytea[], $3::int[], $4::text[], $5::timestamptz[]) AS u(c, w, n, a, t)
             ON CONFLICT (campaign_id, wallet) DO UPDATE SET
                reward_count = r.reward_count + EXCLUDED.reward_count,
                total_amount = r.total_amount + EXCLUDED.total_amount,
                last_reward_at = COALESCE(EXCLUDED.last_reward_at, r.last_reward_at)",
        )
        .bind(campaign)
        .bind(wallet)
        .bind(count)
        .bind(amount)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    if !losses.is_empty() {
        // Refunds of rewards counted earlier: the rows exist.
        let (keys, deltas): (Vec<_>, Vec<_>) = losses.into_iter().unzip();
        sqlx::query(
            "UPDATE campaign_user_rewards r SET
                reward_count = GREATEST(r.reward_count + d.n, 0),
                total_amount = GREATEST(r.total_amount + d.a::numeric, 0)
             FROM UNNEST($1::bigint[], $2::bytea[], $3::int[], $4::text[]) AS d(c, w, n, a)
             WHERE r.campaign_id = d.c AND r.wallet = d.w",
        )
        .bind(keys.iter().map(|(c, _)| *c).collect::<Vec<_>>())
        .bind(keys.iter().map(|(_, w)| w.to_vec()).collect::<Vec<_>>())
        .bind(deltas.iter().map(|(n, ..)| *n).collect::<Vec<_>>())
        .bind(
            deltas
                .iter()
                .map(|(_, add, sub, _)| signed_delta(*add, *sub))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    if !exhausted.is_empty() {
        sqlx::query(
            "UPDATE campaigns SET status = 'budget_exhausted', updated_at = now()
             WHERE id = ANY($1) AND status = 'active'",
        )
        .bind(exhausted)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
