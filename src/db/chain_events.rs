//! Indexed MultiTokenPushPull events and the indexer's cursor (SPEC §9); the
//! wallet views built from them are in `wallets`.

use alloy::primitives::{Address, B256, U256};
use sqlx::{PgPool, Row};

use super::DbError;

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
