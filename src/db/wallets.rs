//! The public wallet views (SPEC §9): per-token balances and the history pages,
//! built from the rewards and the indexed events (`chain_events`).

use alloy::primitives::Address;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::DbError;
use crate::domain::history_cursor::{ClaimKey, HistoryCursor, RewardKey};
use crate::domain::ids::to_hex;

/// A wallet's balance in one token: in the service, on-chain to claim, claimed.
#[derive(Debug, Clone, Serialize)]
pub struct TokenBalance {
    pub token: String,
    pub symbol: Option<String>,
    pub decimals: Option<i16>,
    /// Rewards earned and not claimable yet: pending, or in a batch (being pushed
    /// or confirmed) whose transaction the indexer has not seen add them.
    pub pending: String,
    /// Pushed on-chain and not claimed yet (indexed RewardAdded − RewardClaimed).
    pub claimable: String,
    /// Claimed from MultiTokenPushPull.
    pub claimed: String,
}

pub async fn balances(pool: &PgPool, wallet: Address) -> Result<Vec<TokenBalance>, DbError> {
    let rows = sqlx::query(
        "WITH mine AS (
            SELECT token, amount, status, batch_id FROM rewards
            WHERE wallet = $1 AND status <> 'cancelled'
         ), unseen AS (
            -- Batches whose transaction the indexer has not seen pay this wallet
            -- yet, confirmed or not: their rewards are not claimable yet.
            SELECT b.id FROM reward_batches b
            WHERE b.id IN (SELECT batch_id FROM mine WHERE batch_id IS NOT NULL)
              AND NOT EXISTS (SELECT 1 FROM chain_events e
                  WHERE e.user_wallet = $1 AND e.event = 'RewardAdded' AND e.tx_hash = b.tx_hash)
         ), service AS (
            SELECT token, sum(amount) AS pending FROM mine
            WHERE status = 'pending' OR batch_id IN (SELECT id FROM unseen)
            GROUP BY token
         ), chain AS (
            SELECT token,
                   COALESCE(sum(amount) FILTER (WHERE event = 'RewardAdded'), 0) AS added,
                   COALESCE(sum(amount) FILTER (WHERE event = 'RewardClaimed'), 0) AS claimed
            FROM chain_events WHERE user_wallet = $1 GROUP BY token
         )
         SELECT t.token,
                (SELECT symbol FROM product_banks b WHERE b.token_address = t.token LIMIT 1) AS symbol,
                (SELECT decimals FROM product_banks b WHERE b.token_address = t.token LIMIT 1) AS decimals,
                COALESCE(s.pending, 0)::text AS pending,
                GREATEST(COALESCE(c.added, 0) - COALESCE(c.claimed, 0), 0)::text AS claimable,
                COALESCE(c.claimed, 0)::text AS claimed
         FROM (SELECT token FROM service UNION SELECT token FROM chain) t
         LEFT JOIN service s ON s.token = t.token
         LEFT JOIN chain c ON c.token = t.token
         ORDER BY t.token",
    )
    .bind(wallet.as_slice())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| TokenBalance {
            token: to_hex(r.get::<&[u8], _>("token")),
            symbol: r.get("symbol"),
            decimals: r.get("decimals"),
            pending: r.get("pending"),
            claimable: r.get("claimable"),
            claimed: r.get("claimed"),
        })
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct RewardEntry {
    pub id: uuid::Uuid,
    pub product_id: String,
    pub campaign_id: i64,
    pub token: String,
    pub amount: String,
    pub recipient_type: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub available_at: DateTime<Utc>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub tx_hash: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimEntry {
    pub token: String,
    pub amount: String,
    pub tx_hash: String,
    pub block_number: i64,
    pub log_index: i32,
    pub indexed_at: DateTime<Utc>,
    /// The event's row, the last tie-breaker of the claims' order.
    #[serde(skip)]
    pub event_id: i64,
}

/// One page of a wallet's history: up to `limit` entries of each list, newest
/// first, and where the next page starts (none when neither list has more).
#[derive(Debug)]
pub struct HistoryPage {
    pub rewards: Vec<RewardEntry>,
    pub claims: Vec<ClaimEntry>,
    pub next: Option<HistoryCursor>,
}

/// A page of a wallet's rewards and claims, from `from` (`HistoryCursor::FIRST`
/// for the newest). One entry more than asked is read to know whether more remain.
pub async fn history(
    pool: &PgPool,
    wallet: Address,
    limit: i64,
    from: &HistoryCursor,
) -> Result<HistoryPage, DbError> {
    let mut rewards = match from.rewards.below(RewardKey::NEWEST) {
        Some(below) => reward_page(pool, wallet, limit, below).await?,
        None => Vec::new(),
    };
    let mut claims = match from.claims.below(ClaimKey::NEWEST) {
        Some(below) => claim_page(pool, wallet, limit, below).await?,
        None => Vec::new(),
    };
    Ok(HistoryPage {
        next: HistoryCursor::next(
            trim(&mut rewards, limit, RewardEntry::key),
            trim(&mut claims, limit, ClaimEntry::key),
        ),
        rewards,
        claims,
    })
}

impl RewardEntry {
    fn key(&self) -> RewardKey {
        RewardKey {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

impl ClaimEntry {
    fn key(&self) -> ClaimKey {
        ClaimKey {
            block_number: self.block_number,
            log_index: self.log_index,
            event_id: self.event_id,
        }
    }
}

/// Drops the entry read beyond `limit`; if there was one, the key of the last
/// entry kept, where the next page starts.
fn trim<T, K>(page: &mut Vec<T>, limit: i64, key: fn(&T) -> K) -> Option<K> {
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    page.last().filter(|_| more).map(key)
}

async fn reward_page(
    pool: &PgPool,
    wallet: Address,
    limit: i64,
    below: RewardKey,
) -> Result<Vec<RewardEntry>, DbError> {
    Ok(sqlx::query(
        "SELECT id, product_id, campaign_id, token, amount::text AS amount, recipient_type, status,
                status_reason, created_at, available_at, pushed_at, tx_hash
         FROM rewards
         WHERE wallet = $1 AND (created_at, id) < ($2, $3)
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(wallet.as_slice())
    .bind(below.created_at)
    .bind(below.id)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| RewardEntry {
        id: r.get("id"),
        product_id: to_hex(r.get::<&[u8], _>("product_id")),
        campaign_id: r.get("campaign_id"),
        token: to_hex(r.get::<&[u8], _>("token")),
        amount: r.get("amount"),
        recipient_type: r.get("recipient_type"),
        status: r.get("status"),
        status_reason: r.get("status_reason"),
        created_at: r.get("created_at"),
        available_at: r.get("available_at"),
        pushed_at: r.get("pushed_at"),
        tx_hash: r.get::<Option<&[u8]>, _>("tx_hash").map(to_hex),
    })
    .collect())
}

async fn claim_page(
    pool: &PgPool,
    wallet: Address,
    limit: i64,
    below: ClaimKey,
) -> Result<Vec<ClaimEntry>, DbError> {
    Ok(sqlx::query(
        "SELECT id, token, amount::text AS amount, tx_hash, block_number, log_index, created_at
         FROM chain_events
         WHERE user_wallet = $1 AND event = 'RewardClaimed'
           AND (block_number, log_index, id) < ($2, $3, $4)
         ORDER BY block_number DESC, log_index DESC, id DESC LIMIT $5",
    )
    .bind(wallet.as_slice())
    .bind(below.block_number)
    .bind(below.log_index)
    .bind(below.event_id)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| ClaimEntry {
        token: to_hex(r.get::<&[u8], _>("token")),
        amount: r.get("amount"),
        tx_hash: to_hex(r.get::<&[u8], _>("tx_hash")),
        block_number: r.get("block_number"),
        log_index: r.get("log_index"),
        indexed_at: r.get("created_at"),
        event_id: r.get("id"),
    })
    .collect())
}
