//! What the service's push ledger in PostgreSQL says: when every reward of a
//! campaign is `pushed` (polled, bounded), and the batches that carried them. Read
//! only; the scenario never writes the service's tables.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use sqlx::{PgPool, Row};

/// The database's clock (the ledger's timestamps are its `now()`).
pub async fn now(pool: &PgPool) -> anyhow::Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
            .fetch_one(pool)
            .await?,
    )
}

/// Polls until no reward of `campaign` is left unpushed; fails past `limit`, or as
/// soon as a batch of it failed or expired (the run would not be measuring pushes).
pub async fn wait_all_pushed(pool: &PgPool, campaign: i64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM rewards WHERE campaign_id = $1 AND status <> 'pushed'),
                    (SELECT count(*) FROM reward_batches
                     WHERE campaign_id = $1 AND status IN ('failed', 'expired'))",
        )
        .bind(campaign)
        .fetch_one(pool)
        .await?;
        let (left, dead): (i64, i64) = (row.get(0), row.get(1));
        anyhow::ensure!(
            dead == 0,
            "{dead} batches of campaign {campaign} failed or expired"
        );
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} rewards of campaign {campaign} still unpushed after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the pusher has told the bank about `campaign` (allocated its budget).
pub async fn wait_allocated(pool: &PgPool, campaign: i64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let (state, error): (String, Option<String>) =
            sqlx::query_as("SELECT chain_state, chain_error FROM campaigns WHERE id = $1")
                .bind(campaign)
                .fetch_one(pool)
                .await?;
        if state == "allocated" {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "campaign {campaign} not allocated on its bank after {limit:?}: {state} {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One wave's pushing, from the ledger: batches created from `since` (epoch
/// seconds, the database's clock) on.
#[derive(Debug, Clone)]
pub struct Wave {
    pub rewards: i64,
    pub batches: i64,
    pub recipients: i64,
    pub min_recipients: i32,
    pub max_recipients: i32,
    /// First batch created → last batch confirmed, seconds.
    pub push_seconds: f64,
    /// Wave start → first batch created, seconds.
    pub first_batch_after: f64,
    /// Reward created → pushed, seconds.
    pub latency_p50: f64,
    pub latency_p99: f64,
    /// The batches' transactions, in creation order.
    pub txs: Vec<B256>,
}

pub async fn wave(pool: &PgPool, campaign: i64, since: f64) -> anyhow::Result<Wave> {
    let row = sqlx::query(
        "SELECT count(*), coalesce(sum(recipient_count), 0)::int8, coalesce(min(recipient_count), 0),
                coalesce(max(recipient_count), 0),
                coalesce(extract(epoch FROM max(confirmed_at) - min(created_at))::float8, 0),
                coalesce(extract(epoch FROM min(created_at))::float8 - $2, 0)
         FROM reward_batches
         WHERE campaign_id = $1 AND status = 'confirmed' AND created_at >= to_timestamp($2)",
    )
    .bind(campaign)
    .bind(since)
    .fetch_one(pool)
    .await?;
    let latency = sqlx::query(
        "SELECT count(*),
                coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.pushed_at - r.created_at))::float8, 0),
                coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.pushed_at - r.created_at))::float8, 0)
         FROM rewards r JOIN reward_batches b ON b.id = r.batch_id
         WHERE b.campaign_id = $1 AND b.status = 'confirmed' AND b.created_at >= to_timestamp($2)",
    )
    .bind(campaign)
    .bind(since)
    .fetch_one(pool)
    .await?;
    let txs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT tx_hash FROM reward_batches
         WHERE campaign_id = $1 AND status = 'confirmed' AND created_at >= to_timestamp($2)
         ORDER BY created_at, id",
    )
    .bind(campaign)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(Wave {
        batches: row.get(0),
        recipients: row.get(1),
        min_recipients: row.get(2),
        max_recipients: row.get(3),
        push_seconds: row.get(4),
        first_batch_after: row.get(5),
        rewards: latency.get(0),
        latency_p50: latency.get(1),
        latency_p99: latency.get(2),
        txs: txs.iter().map(|h| B256::from_slice(h)).collect(),
    })
}

/// Σ `pushed` per wallet in `token`, over every campaign.
pub async fn pushed_per_wallet(
    pool: &PgPool,
    token: Address,
) -> anyhow::Result<Vec<(Address, U256)>> {
    let rows = sqlx::query(
        "SELECT wallet, sum(amount)::text FROM rewards
         WHERE token = $1 AND status = 'pushed' GROUP BY wallet ORDER BY wallet",
    )
    .bind(token.as_slice())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let amount: &str = r.get(1);
            Ok((Address::from_slice(r.get::<&[u8], _>(0)), amount.parse()?))
        })
        .collect()
}

/// The bank of `product` for `token`, and a campaign's on-chain id (external id).
pub async fn bank_and_campaign(
    pool: &PgPool,
    campaign: i64,
) -> anyhow::Result<(Address, uuid::Uuid)> {
    let row = sqlx::query(
        "SELECT b.bank_address, c.external_id::text FROM campaigns c
         JOIN product_banks b ON b.id = c.bank_id WHERE c.id = $1",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await?;
    Ok((
        Address::from_slice(row.get::<&[u8], _>(0)),
        row.get::<&str, _>(1).parse()?,
    ))
}
