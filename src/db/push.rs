//! The push ledger (SPEC §7): reward batches and the rewards they carry, and the
//! on-chain state campaigns owe their banks. Every state change of a batch and its
//! rewards happens in one transaction.

use alloy::primitives::{Address, B256, U256};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{DbError, parse_u256};

/// A campaign with available pending rewards in a token, and where they go.
#[derive(Debug, Clone)]
pub struct PushWork {
    pub campaign_id: i64,
    pub external_id: Uuid,
    pub product_id: B256,
    pub bank_id: i64,
    pub bank: Address,
    pub wallets: i64,
}

/// Campaigns of `token` on `chain_id` whose bank knows them and that have pending
/// rewards available now. Read per campaign (rewards_campaign_status_idx).
pub async fn work(pool: &PgPool, chain_id: u64, token: Address) -> Result<Vec<PushWork>, DbError> {
    let rows = sqlx::query(
        "SELECT c.id, c.external_id, c.product_id, b.id AS bank_id, b.bank_address, w.wallets
         FROM campaigns c
         JOIN product_banks b ON b.id = c.bank_id
         CROSS JOIN LATERAL (
             SELECT count(DISTINCT r.wallet) AS wallets FROM rewards r
             WHERE r.campaign_id = c.id AND r.status = 'pending' AND r.available_at <= now()
         ) w
         WHERE b.chain_id = $1 AND b.token_address = $2 AND b.is_active
           AND c.chain_state IN ('allocated', 'deactivate') AND w.wallets > 0
         ORDER BY c.id",
    )
    // Planned for this token each time: a cached generic plan assumes a token
    // matches a large share of banks (deployments have few tokens) and scans every
    // reward.
    .persistent(false)
    .bind(chain_id as i64)
    .bind(token.as_slice())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PushWork {
            campaign_id: r.get("id"),
            external_id: r.get("external_id"),
            product_id: B256::from_slice(r.get::<&[u8], _>("product_id")),
            bank_id: r.get("bank_id"),
            bank: Address::from_slice(r.get::<&[u8], _>("bank_address")),
            wallets: r.get("wallets"),
        })
        .collect())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: Uuid,
    pub product_id: Vec<u8>,
    pub bank_id: i64,
    pub token: Vec<u8>,
    pub campaign_id: i64,
    pub nonce: Vec<u8>,
    pub deadline: DateTime<Utc>,
    pub total: String,
    pub recipient_count: i32,
    pub status: String,
    pub signature: Option<Vec<u8>>,
    pub tx_hash: Option<Vec<u8>>,
    pub from_block: i64,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    // Joined.
    pub bank_address: Vec<u8>,
    pub external_id: Uuid,
}

impl BatchRow {
    pub fn product(&self) -> B256 {
        B256::from_slice(&self.product_id)
    }
    pub fn bank(&self) -> Address {
        Address::from_slice(&self.bank_address)
    }
    pub fn token(&self) -> Address {
        Address::from_slice(&self.token)
    }
    pub fn nonce(&self) -> B256 {
        B256::from_slice(&self.nonce)
    }
    pub fn total(&self) -> U256 {
        parse_u256(&self.total)
    }
    pub fn tx_hash(&self) -> Option<B256> {
        self.tx_hash
            .as_deref()
            .filter(|h| h.len() == 32)
            .map(B256::from_slice)
    }
}

macro_rules! select_batches {
    () => {
        "SELECT rb.id, rb.product_id, rb.bank_id, rb.token, rb.campaign_id, rb.nonce, rb.deadline,
                rb.total::text AS total, rb.recipient_count, rb.status, rb.signature, rb.tx_hash,
                rb.from_block, rb.created_at, rb.sent_at, b.bank_address, c.external_id
         FROM reward_batches rb
         JOIN product_banks b ON b.id = rb.bank_id
         JOIN campaigns c ON c.id = rb.campaign_id "
    };
}

pub async fn batch(pool: &PgPool, id: Uuid) -> Result<Option<BatchRow>, DbError> {
    const SQL: &str = concat!(select_batches!(), "WHERE rb.id = $1");
    Ok(sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?)
}

/// Batches of `token` on `chain_id` that are written but not finished, oldest first.
pub async fn unfinished(
    pool: &PgPool,
    chain_id: u64,
    token: Address,
) -> Result<Vec<BatchRow>, DbError> {
    const SQL: &str = concat!(
        select_batches!(),
        "WHERE rb.status IN ('created', 'sent') AND rb.token = $2 AND b.chain_id = $1
         ORDER BY rb.created_at, rb.id"
    );
    Ok(sqlx::query_as(SQL)
        .bind(chain_id as i64)
        .bind(token.as_slice())
        .fetch_all(pool)
        .await?)
}

/// Step 1 of SPEC §7, in one transaction: takes the available pending rewards of up
/// to `max_recipients` wallets of the campaign, writes the batch row (fresh nonce,
/// deadline) and marks the rewards `pushing` with it. `None` when nothing is left.
/// Rewards are locked in primary-key order (interaction, campaign, level), the
/// order refunds lock them in (`db::refunds`).
pub async fn create_batch(
    pool: &PgPool,
    work: &PushWork,
    token: Address,
    max_recipients: usize,
    deadline: DateTime<Utc>,
    from_block: u64,
) -> Result<Option<BatchRow>, DbError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT r.interaction_id, r.recipient_type, r.wallet, r.amount::text AS amount
         FROM rewards r
         WHERE r.campaign_id = $1 AND r.status = 'pending' AND r.available_at <= now()
           AND r.wallet IN (
               SELECT DISTINCT wallet FROM rewards
               WHERE campaign_id = $1 AND status = 'pending' AND available_at <= now()
               ORDER BY wallet LIMIT $2)
         ORDER BY r.interaction_id, r.recipient_type
         FOR UPDATE",
    )
    .bind(work.campaign_id)
    .bind(max_recipients as i64)
    .fetch_all(&mut *tx)
    .await?;
    let mut interactions = Vec::with_capacity(rows.len());
    let mut levels = Vec::with_capacity(rows.len());
    let mut amounts = Vec::with_capacity(rows.len());
    for row in &rows {
        // The lock may have waited for a refund that cancelled the row.
        interactions.push(row.get::<Uuid, _>("interaction_id"));
        levels.push(row.get::<&str, _>("recipient_type"));
        amounts.push((
            Address::from_slice(row.get::<&[u8], _>("wallet")),
            parse_u256(row.get::<&str, _>("amount")),
        ));
    }
    let recipients = crate::domain::push::aggregate(amounts);
    if recipients.is_empty() {
        return Ok(None);
    }
    let total = crate::domain::push::total(&recipients);
    let id = Uuid::now_v7();
    let nonce = B256::from(rand::random::<[u8; 32]>());
    sqlx::query(
        "INSERT INTO reward_batches (id, product_id, bank_id, token, campaign_id, nonce, deadline,
            total, recipient_count, from_block)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::numeric, $9, $10)",
    )
    .bind(id)
    .bind(work.product_id.as_slice())
    .bind(work.bank_id)
    .bind(token.as_slice())
    .bind(work.campaign_id)
    .bind(nonce.as_slice())
    .bind(deadline)
    .bind(total.to_string())
    .bind(recipients.len() as i32)
    .bind(from_block as i64)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE rewards r SET status = 'pushing', batch_id = $1, status_reason = NULL
         FROM UNNEST($3::uuid[], $4::text[]) AS k(interaction_id, recipient_type)
         WHERE r.interaction_id = k.interaction_id AND r.campaign_id = $2
           AND r.recipient_type = k.recipient_type AND r.status = 'pending'",
    )
    .bind(id)
    .bind(work.campaign_id)
    .bind(&interactions)
    .bind(&levels)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    batch(pool, id).await
}

/// The recipients of a batch, aggregated per wallet in wallet order: what was signed.
pub async fn recipients(
    pool: &PgPool,
    batch: Uuid,
) -> Result<Vec<crate::domain::push::Reward>, DbError> {
    let rows =
        sqlx::query("SELECT wallet, amount::text AS amount FROM rewards WHERE batch_id = $1")
            .bind(batch)
            .fetch_all(pool)
            .await?;
    Ok(crate::domain::push::aggregate(rows.iter().map(|r| {
        (
            Address::from_slice(r.get::<&[u8], _>("wallet")),
            parse_u256(r.get::<&str, _>("amount")),
        )
    })))
}

/// Step 2: the signature is kept, so a re-send after a crash sends the same batch.
pub async fn set_signature(pool: &PgPool, batch: Uuid, signature: &[u8]) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE reward_batches SET signature = $2, updated_at = now()
         WHERE id = $1 AND status = 'created'",
    )
    .bind(batch)
    .bind(signature)
    .execute(pool)
    .await?;
    Ok(())
}

/// The node took the transaction.
pub async fn mark_sent(pool: &PgPool, batch: Uuid, tx_hash: B256) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE reward_batches SET status = 'sent', tx_hash = $2, sent_at = now(), updated_at = now()
         WHERE id = $1 AND status IN ('created', 'sent')",
    )
    .bind(batch)
    .bind(tx_hash.as_slice())
    .execute(pool)
    .await?;
    Ok(())
}

/// Step 3, in one transaction: the batch is final on-chain; its rewards are pushed.
/// Returns the number of reward rows it carried (0 if it was already confirmed).
pub async fn confirm(
    pool: &PgPool,
    batch: Uuid,
    tx_hash: B256,
    block: u64,
) -> Result<u64, DbError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE reward_batches SET status = 'confirmed', tx_hash = $2, block_number = $3,
            confirmed_at = now(), updated_at = now(), error = NULL
         WHERE id = $1 AND status IN ('created', 'sent')",
    )
    .bind(batch)
    .bind(tx_hash.as_slice())
    .bind(block as i64)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(0);
    }
    let rewards = sqlx::query(
        "UPDATE rewards SET status = 'pushed', tx_hash = $2, pushed_at = now()
         WHERE batch_id = $1 AND status = 'pushing'",
    )
    .bind(batch)
    .bind(tx_hash.as_slice())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rewards.rows_affected())
}

/// Why the last attempt on an unfinished batch failed (kept for operators).
pub async fn note_error(pool: &PgPool, batch: Uuid, error: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE reward_batches SET error = $2, updated_at = now() WHERE id = $1")
        .bind(batch)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// A batch that will never be paid (`failed`: reverted; `expired`: its deadline
/// passed unused): its rewards go back to `pending` with the reason — but those
/// of an order refunded meanwhile are cancelled (`refunds::cancel_abandoned`).
/// Returns how many went back to `pending`.
pub async fn abandon(
    pool: &PgPool,
    batch: Uuid,
    status: &'static str,
    reason: &str,
) -> Result<u64, DbError> {
    debug_assert!(status == "failed" || status == "expired");
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE reward_batches SET status = $2, error = $3, updated_at = now()
         WHERE id = $1 AND status IN ('created', 'sent')",
    )
    .bind(batch)
    .bind(status)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(0);
    }
    // Locked first, in primary-key order (as refunds lock them): a refund of their
    // order committing now is waited for, and the next statements see it.
    sqlx::query(
        "SELECT 1 FROM rewards WHERE batch_id = $1 AND status = 'pushing'
         ORDER BY interaction_id, campaign_id, recipient_type FOR UPDATE",
    )
    .bind(batch)
    .execute(&mut *tx)
    .await?;
    super::refunds::cancel_abandoned(&mut tx, batch).await?;
    let rewards = sqlx::query(
        "UPDATE rewards SET status = 'pending', batch_id = NULL, status_reason = $2
         WHERE batch_id = $1 AND status = 'pushing'",
    )
    .bind(batch)
    .bind(format!("batch {status}: {reason}"))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rewards.rows_affected())
}

/// Rewards of a token not yet on-chain: (pending, pushing, age of the oldest
/// available pending one in seconds). Read per campaign of the token's banks and
/// per live batch, never by scanning the rewards table (this runs every push round).
pub async fn outstanding(pool: &PgPool, token: Address) -> Result<(i64, i64, f64), DbError> {
    let row = sqlx::query(
        "WITH pending AS (
             SELECT r.available_at FROM product_banks b
             JOIN campaigns c ON c.bank_id = b.id
             JOIN rewards r ON r.campaign_id = c.id AND r.status = 'pending'
             WHERE b.token_address = $1
         )
         SELECT (SELECT count(*) FROM pending) AS pending,
                (SELECT count(*) FROM reward_batches b JOIN rewards r ON r.batch_id = b.id
                  WHERE b.status IN ('created', 'sent') AND b.token = $1
                    AND r.status = 'pushing') AS pushing,
                COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(available_at)) FROM pending
                  WHERE available_at <= now()), 0)::float8 AS age",
    )
    // Planned for this token each time, like `work`.
    .persistent(false)
    .bind(token.as_slice())
    .fetch_one(pool)
    .await?;
    Ok((row.get("pending"), row.get("pushing"), row.get("age")))
}

/// Tokens with a bank on `chain_id`: one pusher each.
pub async fn tokens(pool: &PgPool, chain_id: u64) -> Result<Vec<Address>, DbError> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT DISTINCT token_address FROM product_banks WHERE chain_id = $1 AND is_active",
    )
    .bind(chain_id as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|t| Address::from_slice(t)).collect())
}

/// A campaign whose bank must still be told something.
#[derive(Debug, Clone)]
pub struct CampaignSync {
    pub campaign_id: i64,
    pub external_id: Uuid,
    pub product: B256,
    pub bank: Address,
    pub chain_state: String,
    /// Deactivated (for good): once its rewards are pushed, the bank releases it.
    pub deactivated: bool,
    pub budget_cap: U256,
    /// Σ of its rewards pushed (confirmed): what the bank has paid.
    pub pushed: U256,
    /// Rewards of it not pushed yet (pending or pushing).
    pub unpushed: i64,
    /// Rewards of it in batches not finished yet: the bank may or may not pay them.
    pub in_flight: i64,
}

pub async fn campaigns_to_sync(
    pool: &PgPool,
    chain_id: u64,
    token: Address,
) -> Result<Vec<CampaignSync>, DbError> {
    let rows = sqlx::query(
        "SELECT c.id, c.external_id, b.product_id, b.bank_address, c.chain_state,
            c.status = 'deactivated' AS deactivated, c.budget_cap::text AS budget_cap,
            (SELECT COALESCE(sum(amount), 0)::text FROM rewards
              WHERE campaign_id = c.id AND status = 'pushed') AS pushed,
            (SELECT count(*) FROM rewards
              WHERE campaign_id = c.id AND status IN ('pending', 'pushing')) AS unpushed,
            (SELECT count(*) FROM rewards
              WHERE campaign_id = c.id AND status = 'pushing') AS in_flight
         FROM campaigns c JOIN product_banks b ON b.id = c.bank_id
         WHERE c.chain_state IN ('allocate', 'deactivate') AND b.chain_id = $1
           AND b.token_address = $2 AND b.is_active
         ORDER BY c.id",
    )
    .bind(chain_id as i64)
    .bind(token.as_slice())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| CampaignSync {
            campaign_id: r.get("id"),
            external_id: r.get("external_id"),
            product: B256::from_slice(r.get::<&[u8], _>("product_id")),
            bank: Address::from_slice(r.get::<&[u8], _>("bank_address")),
            chain_state: r.get("chain_state"),
            deactivated: r.get("deactivated"),
            budget_cap: parse_u256(r.get::<&str, _>("budget_cap")),
            pushed: parse_u256(r.get::<&str, _>("pushed")),
            unpushed: r.get("unpushed"),
            in_flight: r.get("in_flight"),
        })
        .collect())
}

/// Records a bank call: `to` on success (the state must still be `from`), or the error.
/// An allocation of a campaign deactivated meanwhile goes on to `deactivate`: its
/// rewards are pushed, then the bank releases what is left.
pub async fn record_sync(
    pool: &PgPool,
    campaign: i64,
    from: &str,
    outcome: Result<(&str, B256), String>,
) -> Result<(), DbError> {
    match outcome {
        Ok((to, tx_hash)) => sqlx::query(
            "UPDATE campaigns SET chain_error = NULL, chain_synced_at = now(), chain_tx_hash = $4,
                chain_state = CASE WHEN $3 = 'allocated' AND status = 'deactivated'
                                   THEN 'deactivate' ELSE $3 END
             WHERE id = $1 AND chain_state = $2",
        )
        .bind(campaign)
        .bind(from)
        .bind(to)
        .bind(tx_hash.as_slice())
        .execute(pool)
        .await?,
        Err(error) => {
            sqlx::query("UPDATE campaigns SET chain_error = $3 WHERE id = $1 AND chain_state = $2")
                .bind(campaign)
                .bind(from)
                .bind(error)
                .execute(pool)
                .await?
        }
    };
    Ok(())
}
