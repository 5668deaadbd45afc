//! rewards, and the budget and per-user counters they charge — written by the
//! writer in the same transaction as the interactions that earned them.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, U256};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::DbError;

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

/// Inserts the rewards, charges each campaign's budget with what they sum to, and
/// counts the acting users; marks the given campaigns exhausted.
pub async fn record(
    conn: &mut PgConnection,
    rewards: &[RewardRow],
    users: &[UserReward],
    exhausted: &[i64],
) -> Result<(), DbError> {
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

        // Two flush lanes may charge the same campaigns: lock them in id order
        // first, so that they wait for each other instead of deadlocking.
        let mut charges: BTreeMap<i64, U256> = BTreeMap::new();
        for reward in rewards {
            *charges.entry(reward.campaign_id).or_default() += reward.amount;
        }
        let (ids, amounts): (Vec<i64>, Vec<String>) = charges
            .into_iter()
            .map(|(id, a)| (id, a.to_string()))
            .unzip();
        sqlx::query("SELECT 1 FROM campaigns WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE campaigns c SET used_budget = c.used_budget + d.amount::numeric, updated_at = now()
             FROM UNNEST($1::bigint[], $2::text[]) AS d(id, amount) WHERE c.id = d.id",
        )
        .bind(ids)
        .bind(amounts)
        .execute(&mut *conn)
        .await?;
    }
    if !users.is_empty() {
        // One row per (campaign, wallet) — ON CONFLICT may not touch a row twice —
        // in key order, so concurrent lanes lock them in the same order.
        let mut counts: BTreeMap<(i64, Address), (i32, U256, DateTime<Utc>)> = BTreeMap::new();
        for user in users {
            let entry =
                counts
                    .entry((user.campaign_id, user.wallet))
                    .or_insert((0, U256::ZERO, user.at));
            entry.0 += 1;
            entry.1 += user.amount;
            entry.2 = entry.2.max(user.at);
        }
        let mut campaign = Vec::with_capacity(counts.len());
        let mut wallet = Vec::with_capacity(counts.len());
        let mut count = Vec::with_capacity(counts.len());
        let mut amount = Vec::with_capacity(counts.len());
        let mut at = Vec::with_capacity(counts.len());
        for ((c, w), (n, a, t)) in counts {
            campaign.push(c);
            wallet.push(w.to_vec());
            count.push(n);
            amount.push(a.to_string());
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
                last_reward_at = EXCLUDED.last_reward_at",
        )
        .bind(campaign)
        .bind(wallet)
        .bind(count)
        .bind(amount)
        .bind(at)
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
