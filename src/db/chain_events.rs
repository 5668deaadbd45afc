//! Indexed MultiTokenPushPull events, the indexer's cursor, and the wallet views
//! built from them and from the rewards (SPEC §9).

use alloy::primitives::{Address, B256, U256};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::DbError;
use crate::domain::ids::to_hex;

#[derive(Debug, Clone)]
pub struct ChainEvent {
    pub block_number: u64,
    pub block_hash: B256,
    pub tx_hash: B256,
    pub log_index: u64,
    /// `RewardAdded` or `RewardClaimed`.
    pub event: &'static str,
    pub token: Address,
    pub user: Address,
    pub emitter: Option<Address>,
    pub amount: U256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub block_number: u64,
    pub block_hash: B256,
}

pub async fn cursor(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
) -> Result<Option<Cursor>, DbError> {
    let row = sqlx::query(
        "SELECT block_number, block_hash FROM indexer_cursor WHERE chain_id = $1 AND contract = $2",
    )
    .bind(chain_id as i64)
    .bind(contract.as_slice())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Cursor {
        block_number: r.get::<i64, _>("block_number") as u64,
        block_hash: B256::from_slice(r.get::<&[u8], _>("block_hash")),
    }))
}

/// Stores the events of a block range and moves the cursor to its end, atomically.
pub async fn append(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
    events: &[ChainEvent],
    to: Cursor,
) -> Result<(), DbError> {
    let mut tx = pool.begin().await?;
    if !events.is_empty() {
        sqlx::query(
            "INSERT INTO chain_events (chain_id, contract, block_number, block_hash, tx_hash,
                log_index, event, token, user_wallet, emitter, amount)
             SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::bytea[], $5::bytea[], $6::int[],
                $7::text[], $8::bytea[], $9::bytea[], $10::bytea[], $11::text[]::numeric[])
             ON CONFLICT (chain_id, block_hash, log_index) DO NOTHING",
        )
        .bind(chain_id as i64)
        .bind(contract.as_slice())
        .bind(
            events
                .iter()
                .map(|e| e.block_number as i64)
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.block_hash.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.tx_hash.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.log_index as i32)
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.event).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.token.to_vec()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.user.to_vec()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.emitter.map(|a| a.to_vec()))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.amount.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    set_cursor(&mut tx, chain_id, contract, to).await?;
    tx.commit().await?;
    Ok(())
}

async fn set_cursor(
    conn: &mut sqlx::PgConnection,
    chain_id: u64,
    contract: Address,
    to: Cursor,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO indexer_cursor (chain_id, contract, block_number, block_hash)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (chain_id, contract) DO UPDATE SET block_number = EXCLUDED.block_number,
            block_hash = EXCLUDED.block_hash, updated_at = now()",
    )
    .bind(chain_id as i64)
    .bind(contract.as_slice())
    .bind(to.block_number as i64)
    .bind(to.block_hash.as_slice())
    .execute(conn)
    .await?;
    Ok(())
}

/// Blocks (number, hash) holding stored events, newest first, at most `limit`.
pub async fn recent_blocks(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
    limit: i64,
) -> Result<Vec<Cursor>, DbError> {
    let rows = sqlx::query(
        "SELECT DISTINCT block_number, block_hash FROM chain_events
         WHERE chain_id = $1 AND contract = $2 ORDER BY block_number DESC LIMIT $3",
    )
    .bind(chain_id as i64)
    .bind(contract.as_slice())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Cursor {
            block_number: r.get::<i64, _>("block_number") as u64,
            block_hash: B256::from_slice(r.get::<&[u8], _>("block_hash")),
        })
        .collect())
}

/// A reorganisation: forgets the events above `keep` and moves the cursor back.
/// Returns how many events were removed.
pub async fn roll_back(
    pool: &PgPool,
    chain_id: u64,
    contract: Address,
    keep: Cursor,
) -> Result<u64, DbError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query(
        "DELETE FROM chain_events WHERE chain_id = $1 AND contract = $2 AND block_number > $3",
    )
    .bind(chain_id as i64)
    .bind(contract.as_slice())
    .bind(keep.block_number as i64)
    .execute(&mut *tx)
    .await?;
    set_cursor(&mut tx, chain_id, contract, keep).await?;
    tx.commit().await?;
    Ok(deleted.rows_affected())
}

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
    pub indexed_at: DateTime<Utc>,
}

/// A wallet's rewards and claims, newest first, `limit` of each.
pub async fn history(
    pool: &PgPool,
    wallet: Address,
    limit: i64,
) -> Result<(Vec<RewardEntry>, Vec<ClaimEntry>), DbError> {
    let rewards = sqlx::query(
        "SELECT id, product_id, campaign_id, token, amount::text AS amount, recipient_type, status,
                status_reason, created_at, available_at, pushed_at, tx_hash
         FROM rewards WHERE wallet = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(wallet.as_slice())
    .bind(limit)
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
    .collect();
    let claims = sqlx::query(
        "SELECT token, amount::text AS amount, tx_hash, block_number, created_at FROM chain_events
         WHERE user_wallet = $1 AND event = 'RewardClaimed'
         ORDER BY block_number DESC, log_index DESC LIMIT $2",
    )
    .bind(wallet.as_slice())
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| ClaimEntry {
        token: to_hex(r.get::<&[u8], _>("token")),
        amount: r.get("amount"),
        tx_hash: to_hex(r.get::<&[u8], _>("tx_hash")),
        block_number: r.get("block_number"),
        indexed_at: r.get("created_at"),
    })
    .collect();
    Ok((rewards, claims))
}
