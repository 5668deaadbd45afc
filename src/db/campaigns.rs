//! campaigns and campaign_user_rewards. Amounts cross the boundary as decimal
//! text (`NUMERIC(78,0)` ↔ `U256`), so nothing is rounded on the way.

use alloy::primitives::{Address, B256, U256};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{DbError, parse_u256};
use crate::domain::campaign::{CampaignRule, CampaignStatus, RewardSpec};
use crate::domain::campaign_input::{CampaignInput, CampaignSpec, RewardInput, parse_amount};
use crate::domain::ids::to_hex;
use crate::domain::interaction::InteractionType;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CampaignRow {
    pub id: i64,
    pub external_id: Uuid,
    pub product_id: Vec<u8>,
    pub bank_id: i64,
    pub name: String,
    pub description: String,
    pub trigger: String,
    pub requires_referral: bool,
    pub reward_type: String,
    pub reward_amount: Option<String>,
    pub reward_min: Option<String>,
    pub reward_max: Option<String>,
    pub reward_beta_bps: Option<i32>,
    pub user_bps: i32,
    pub deperdition_bps: i32,
    pub max_depth: i16,
    pub max_rewards_per_user: Option<i32>,
    pub budget_cap: String,
    pub used_budget: String,
    pub lockup_seconds: i64,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub status: String,
    pub metadata: Value,
    pub created_by: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub token_address: Vec<u8>,
    pub chain_state: String,
    pub chain_error: Option<String>,
    pub chain_synced_at: Option<DateTime<Utc>>,
}

/// What campaign `c` paid: the sum of its rewards that were not cancelled.
macro_rules! paid {
    () => {
        "(SELECT coalesce(sum(r.amount), 0) FROM rewards r
          WHERE r.campaign_id = c.id AND r.status <> 'cancelled')"
    };
}

/// The budget a campaign has used. A capped campaign's `used_budget` is charged
/// with every flush; an unlimited one's is not kept up to date (that would be a
/// row update per flush for a figure nothing enforces): its spend is [`paid!`].
macro_rules! spent {
    () => {
        concat!(
            "CASE WHEN c.budget_cap > 0 THEN c.used_budget ELSE ",
            paid!(),
            " END"
        )
    };
}

/// `used`: how `used_budget` is read — [`spent!`] for what the API shows, the
/// bare column for the product actor, which needs it for capped campaigns only.
macro_rules! select_campaigns {
    ($used:expr) => {
        concat!(
            "SELECT c.id, c.external_id, c.product_id, c.bank_id, c.name, c.description, c.trigger,
                c.requires_referral, c.reward_type, c.reward_amount::text AS reward_amount,
                c.reward_min::text AS reward_min, c.reward_max::text AS reward_max,
                c.reward_beta_bps, c.user_bps, c.deperdition_bps, c.max_depth,
                c.max_rewards_per_user, c.budget_cap::text AS budget_cap, (",
            $used,
            ")::text AS used_budget, c.lockup_seconds, c.starts_at, c.ends_at,
                c.status, c.metadata, c.created_by, c.created_at, c.updated_at, b.token_address,
                c.chain_state, c.chain_error, c.chain_synced_at
         FROM campaigns c JOIN product_banks b ON b.id = c.bank_id "
        )
    };
}

impl CampaignRow {
    pub fn status(&self) -> CampaignStatus {
        CampaignStatus::parse(&self.status).unwrap_or(CampaignStatus::Deactivated)
    }

    pub fn product(&self) -> B256 {
        B256::from_slice(&self.product_id)
    }

    /// The campaign as the API shows and accepts it.
    pub fn input(&self) -> CampaignInput {
        let reward = match self.reward_type.as_str() {
            "range" => RewardInput::Range {
                min: self.reward_min.clone().unwrap_or_default(),
                max: self.reward_max.clone().unwrap_or_default(),
                beta_bps: self.reward_beta_bps.unwrap_or_default() as u32,
            },
            _ => RewardInput::Fixed {
                amount: self.reward_amount.clone().unwrap_or_default(),
            },
        };
        CampaignInput {
            name: self.name.clone(),
            description: self.description.clone(),
            trigger: self.trigger.clone(),
            requires_referral: self.requires_referral,
            token: to_hex(&self.token_address),
            reward,
            user_bps: self.user_bps as u32,
            deperdition_bps: self.deperdition_bps as u32,
            max_depth: self.max_depth as u8,
            max_rewards_per_user: self.max_rewards_per_user.map(|n| n as u32),
            budget_cap: self.budget_cap.clone(),
            lockup_seconds: self.lockup_seconds as u64,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            metadata: self.metadata.as_object().cloned().unwrap_or_default(),
        }
    }

    /// The engine's view; `None` only if the row is inconsistent.
    pub fn rule(&self) -> Option<CampaignRule> {
        let reward = match self.reward_type.as_str() {
            "fixed" => RewardSpec::Fixed {
                amount: parse_amount(self.reward_amount.as_deref()?)?,
            },
            "range" => RewardSpec::Range {
                min: parse_amount(self.reward_min.as_deref()?)?,
                max: parse_amount(self.reward_max.as_deref()?)?,
                beta_bps: u32::try_from(self.reward_beta_bps?).ok()?,
            },
            _ => return None,
        };
        Some(CampaignRule {
            id: self.id,
            external_id: self.external_id,
            trigger: InteractionType::parse(&self.trigger)?,
            requires_referral: self.requires_referral,
            reward,
            user_bps: self.user_bps as u32,
            deperdition_bps: self.deperdition_bps as u32,
            max_depth: self.max_depth as u8,
            max_rewards_per_user: self.max_rewards_per_user.map(|n| n as u32),
            budget_cap: parse_amount(&self.budget_cap)?,
            used_budget: parse_amount(&self.used_budget)?,
            lockup_seconds: self.lockup_seconds as u64,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            status: self.status(),
            token: Address::from_slice(&self.token_address),
        })
    }
}

/// The reward columns of a spec: (type, amount, min, max, beta_bps).
fn reward_columns(
    reward: &RewardSpec,
) -> (
    &'static str,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
) {
    match reward {
        RewardSpec::Fixed { amount } => ("fixed", Some(amount.to_string()), None, None, None),
        RewardSpec::Range { min, max, beta_bps } => (
            "range",
            None,
            Some(min.to_string()),
            Some(max.to_string()),
            Some(*beta_bps as i32),
        ),
    }
}

/// Binds a spec's columns, in the order both `insert` and `update_spec` use after
/// their first two parameters.
macro_rules! bind_spec {
    ($query:expr, $spec:expr) => {{
        let spec: &CampaignSpec = $spec;
        let (kind, amount, min, max, beta) = reward_columns(&spec.reward);
        $query
            .bind(&spec.name)
            .bind(&spec.description)
            .bind(spec.trigger.as_str())
            .bind(spec.requires_referral)
            .bind(kind)
            .bind(amount)
            .bind(min)
            .bind(max)
            .bind(beta)
            .bind(spec.user_bps as i32)
            .bind(spec.deperdition_bps as i32)
            .bind(i16::from(spec.max_depth))
            .bind(spec.max_rewards_per_user.map(|n| n as i32))
            .bind(spec.budget_cap.to_string())
            .bind(spec.lockup_seconds as i64)
            .bind(spec.starts_at)
            .bind(spec.ends_at)
            .bind(&spec.metadata)
    }};
}

pub async fn insert(
    pool: &PgPool,
    product: B256,
    bank_id: i64,
    spec: &CampaignSpec,
    created_by: Address,
) -> Result<CampaignRow, DbError> {
    let id: i64 = bind_spec!(sqlx::query_scalar(
        "INSERT INTO campaigns (product_id, bank_id, name, description, trigger, requires_referral,
            reward_type, reward_amount, reward_min, reward_max, reward_beta_bps, user_bps,
            deperdition_bps, max_depth, max_rewards_per_user, budget_cap, lockup_seconds,
            starts_at, ends_at, metadata, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::numeric, $9::numeric, $10::numeric, $11, $12,
            $13, $14, $15, $16::numeric, $17, $18, $19, $20, $21)
         RETURNING id",
    )
    .bind(product.as_slice())
    .bind(bank_id), spec)
    .bind(created_by.as_slice())
    .fetch_one(pool)
    .await?;
    get(pool, id)
        .await?
        .ok_or(DbError::Query(sqlx::Error::RowNotFound))
}

/// Replaces a campaign's definition; `None` if it is deactivated (or gone). A
/// campaign that gets a per-user cap it did not have gets its per-user counts
/// from its rewards, in the same transaction ([`recount_users`]).
pub async fn update_spec(
    pool: &PgPool,
    id: i64,
    bank_id: i64,
    spec: &CampaignSpec,
) -> Result<Option<CampaignRow>, DbError> {
    let mut tx = pool.begin().await?;
    let counted_before: Option<bool> = sqlx::query_scalar(
        "SELECT max_rewards_per_user IS NOT NULL FROM campaigns WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let updated = bind_spec!(
        sqlx::query(
            "UPDATE campaigns SET bank_id = $2, name = $3, description = $4, trigger = $5,
            requires_referral = $6, reward_type = $7, reward_amount = $8::numeric,
            reward_min = $9::numeric, reward_max = $10::numeric, reward_beta_bps = $11,
            user_bps = $12, deperdition_bps = $13, max_depth = $14, max_rewards_per_user = $15,
            budget_cap = $16::numeric, lockup_seconds = $17, starts_at = $18, ends_at = $19,
            metadata = $20, updated_at = now(),
            chain_state = CASE WHEN chain_state = 'allocated' AND budget_cap <> $16::numeric
                THEN 'allocate' ELSE chain_state END
         WHERE id = $1 AND status <> 'deactivated'",
        )
        .bind(id)
        .bind(bank_id),
        spec
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    if spec.max_rewards_per_user.is_some() && counted_before == Some(false) {
        recount_users(&mut tx, id).await?;
    }
    tx.commit().await?;
    get(pool, id).await
}

/// Sets a campaign's per-user counts from its rewards: per acting wallet, the
/// interactions that earned anything not cancelled in it, and the wallet's own
/// amount. Counts are kept only while a campaign has a per-user cap, so one that
/// gets a cap (again) is counted from its whole history. The caller makes sure no
/// reward of the campaign is still being written (see the product actor).
pub async fn recount_users(conn: &mut PgConnection, id: i64) -> Result<(), DbError> {
    sqlx::query("DELETE FROM campaign_user_rewards WHERE campaign_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO campaign_user_rewards (campaign_id, wallet, reward_count, total_amount,
             first_reward_at, last_reward_at)
         SELECT $1, i.wallet, count(DISTINCT r.interaction_id),
             coalesce(sum(r.amount) FILTER (WHERE r.recipient_type = 'user'), 0),
             min(r.created_at), max(r.created_at)
         FROM rewards r JOIN interactions i ON i.id = r.interaction_id
         WHERE r.campaign_id = $1 AND r.status <> 'cancelled' AND i.wallet IS NOT NULL
         GROUP BY i.wallet",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What setting a budget cap on an unlimited campaign did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recap {
    /// The cap is set and `used_budget` holds the campaign's spend so far.
    Set { used: U256 },
    /// The campaign already spent more than the cap: nothing changed.
    BelowSpent { used: U256 },
    /// No such campaign, or it is deactivated.
    Gone,
}

/// Sets the budget cap of a campaign that had none, with `used_budget` brought
/// up to date from its rewards. Run by the writer in the campaign's product lane
/// (`WriterMsg::Recap`), after every flush holding rewards computed while the
/// campaign was unlimited and before any charged one, so the sum is exact. Safe
/// to repeat: a capped campaign's `used_budget` already equals that sum.
pub async fn recap(pool: &PgPool, id: i64, cap: U256) -> Result<Recap, DbError> {
    let mut tx = pool.begin().await?;
    let used: Option<String> = sqlx::query_scalar(concat!(
        "SELECT ",
        paid!(),
        "::text FROM campaigns c WHERE c.id = $1 AND c.status <> 'deactivated' FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(used) = used else {
        return Ok(Recap::Gone);
    };
    let used = parse_u256(&used);
    if used > cap {
        return Ok(Recap::BelowSpent { used });
    }
    sqlx::query(
        "UPDATE campaigns SET budget_cap = $2::numeric, used_budget = $3::numeric,
            updated_at = now(),
            chain_state = CASE WHEN chain_state = 'allocated' AND budget_cap <> $2::numeric
                THEN 'allocate' ELSE chain_state END
         WHERE id = $1",
    )
    .bind(id)
    .bind(cap.to_string())
    .bind(used.to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Recap::Set { used })
}

/// Moves a campaign from `from` to `to`; `None` if it was not in `from`.
pub async fn set_status(
    pool: &PgPool,
    id: i64,
    from: CampaignStatus,
    to: CampaignStatus,
) -> Result<Option<CampaignRow>, DbError> {
    let updated = sqlx::query(
        // Activation (re)allocates the budget on the bank; deactivation releases it
        // there once the campaign's rewards are pushed (see db::push). An
        // allocation still to be made is made first (the campaign may have been
        // allocated before, and may have rewards to push): its success moves a
        // deactivated campaign on to `deactivate` (`db::push::record_sync`).
        "UPDATE campaigns SET status = $3, updated_at = now(),
            chain_state = CASE
                WHEN $3 = 'active' THEN 'allocate'
                WHEN $3 = 'deactivated' AND chain_state = 'allocated' THEN 'deactivate'
                ELSE chain_state END
         WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    get(pool, id).await
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<CampaignRow>, DbError> {
    const SQL: &str = concat!(select_campaigns!(spent!()), "WHERE c.id = $1");
    Ok(sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?)
}

pub async fn list(pool: &PgPool, product: B256) -> Result<Vec<CampaignRow>, DbError> {
    const SQL: &str = concat!(
        select_campaigns!(spent!()),
        "WHERE c.product_id = $1 ORDER BY c.id"
    );
    Ok(sqlx::query_as(SQL)
        .bind(product.as_slice())
        .fetch_all(pool)
        .await?)
}

/// The product's active campaigns, for its actor (`used_budget` as stored: only
/// a capped campaign's is used).
pub async fn active(pool: &PgPool, product: B256) -> Result<Vec<CampaignRow>, DbError> {
    const SQL: &str = concat!(
        select_campaigns!("c.used_budget"),
        "WHERE c.product_id = $1 AND c.status = 'active'"
    );
    Ok(sqlx::query_as(SQL)
        .bind(product.as_slice())
        .fetch_all(pool)
        .await?)
}

/// Rewards each wallet got as the acting user, for capped-per-user campaigns.
pub async fn user_counts(
    pool: &PgPool,
    campaigns: &[i64],
) -> Result<Vec<(i64, Address, u32)>, DbError> {
    let rows: Vec<(i64, Vec<u8>, i32)> = sqlx::query_as(
        "SELECT campaign_id, wallet, reward_count FROM campaign_user_rewards WHERE campaign_id = ANY($1)",
    )
    .bind(campaigns)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(c, w, n)| (c, Address::from_slice(&w), n.max(0) as u32))
        .collect())
}

/// What `GET /v1/campaigns/{id}/stats` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CampaignStats {
    pub interactions_matched: i64,
    pub distinct_rewarded_wallets: i64,
    /// recipient type → (count, total amount).
    pub rewards: Vec<(String, i64, String)>,
}

pub async fn stats(pool: &PgPool, id: i64) -> Result<CampaignStats, DbError> {
    let (matched, wallets): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT interaction_id), count(DISTINCT wallet) FROM rewards
         WHERE campaign_id = $1 AND status <> 'cancelled'",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    let rewards: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT recipient_type, count(*), sum(amount)::text FROM rewards
         WHERE campaign_id = $1 AND status <> 'cancelled' GROUP BY recipient_type ORDER BY recipient_type",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(CampaignStats {
        interactions_matched: matched,
        distinct_rewarded_wallets: wallets,
        rewards,
    })
}

/// Marks active or paused campaigns whose `ends_at` has passed as expired.
pub async fn expire_ended(pool: &PgPool) -> Result<u64, DbError> {
    let done = sqlx::query(
        "UPDATE campaigns SET status = 'expired', updated_at = now()
         WHERE status IN ('active', 'paused') AND ends_at <= now()",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Campaigns per status (statuses without campaigns are absent).
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, DbError> {
    Ok(
        sqlx::query_as("SELECT status, count(*) FROM campaigns GROUP BY status")
            .fetch_all(pool)
            .await?,
    )
}

/// Per token of any bank: the budget left in active capped campaigns, in whole
/// tokens, and how many of them have less than `low_bps`/10,000 of their cap left.
pub async fn capped_budgets(
    pool: &PgPool,
    low_bps: u32,
) -> Result<Vec<(Address, f64, i64)>, DbError> {
    let rows: Vec<(Vec<u8>, f64, i64)> = sqlx::query_as(
        "SELECT b.token_address,
                coalesce(sum((c.budget_cap - c.used_budget) / power(10::numeric, b.decimals)), 0)::float8,
                count(c.id) FILTER (WHERE (c.budget_cap - c.used_budget) * 10000 < c.budget_cap * $1)
         FROM product_banks b
         LEFT JOIN campaigns c ON c.bank_id = b.id AND c.status = 'active' AND c.budget_cap > 0
         GROUP BY b.token_address",
    )
    .bind(i64::from(low_bps))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(token, remaining, low)| (Address::from_slice(&token), remaining, low))
        .collect())
}
