//! interactions: the row the writer's flush stores (`flush::store`), the holders
//! of refused keys, and the reads that rebuild hot state (recent window, referral
//! edges).

use std::collections::HashMap;
use std::net::IpAddr;

use alloy::primitives::{Address, B256};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::DbError;
use crate::domain::interaction::InteractionType;

/// One row of `interactions`, as the writer stores it.
#[derive(Debug, Clone)]
pub struct InteractionRow {
    pub id: Uuid,
    pub product_id: B256,
    pub wallet: Option<Address>,
    pub kind: InteractionType,
    /// A JSON object, serialized.
    pub data: String,
    pub referrer_wallet: Option<Address>,
    pub dedup_key: Option<String>,
    pub idempotency_key: Option<String>,
    pub session_id: Option<String>,
    pub device_id: Option<String>,
    pub profile_id: Option<String>,
    pub fallback_fingerprint: Option<String>,
    pub source: &'static str,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// For each row a unique index refused (an idempotency or natural key stored
/// earlier), the id of the row holding its key (`None` if none does: the row hit
/// the one-referrer index instead).
pub(super) async fn holders(
    conn: &mut PgConnection,
    skipped: &[&InteractionRow],
) -> Result<HashMap<Uuid, Option<Uuid>>, DbError> {
    let existing = existing_ids(conn, skipped).await?;
    Ok(skipped
        .iter()
        .map(|row| {
            let by_idempotency = row
                .idempotency_key
                .as_ref()
                .and_then(|k| existing.get(&(row.product_id, Key::Idempotency(k.clone()))));
            let by_natural = row
                .dedup_key
                .as_ref()
                .and_then(|k| existing.get(&(row.product_id, Key::Natural(k.clone()))));
            (row.id, by_idempotency.or(by_natural).copied())
        })
        .collect())
}

#[derive(Hash, PartialEq, Eq)]
enum Key {
    Idempotency(String),
    Natural(String),
}

/// The stored rows holding the idempotency or natural keys of `rows`.
async fn existing_ids(
    conn: &mut PgConnection,
    rows: &[&InteractionRow],
) -> Result<HashMap<(B256, Key), Uuid>, DbError> {
    let products: Vec<Vec<u8>> = rows.iter().map(|r| r.product_id.to_vec()).collect();
    let idempotency: Vec<Option<String>> = rows.iter().map(|r| r.idempotency_key.clone()).collect();
    let natural: Vec<Option<String>> = rows.iter().map(|r| r.dedup_key.clone()).collect();
    #[derive(sqlx::FromRow)]
    struct Found {
        id: Uuid,
        product_id: Vec<u8>,
        idempotency_key: Option<String>,
        dedup_key: Option<String>,
    }
    let found: Vec<Found> = sqlx::query_as(
        r#"
SELECT i.id, i.product_id, i.idempotency_key, i.dedup_key
FROM UNNEST($1::bytea[], $2::text[], $3::text[]) AS k(product_id, idempotency_key, dedup_key)
JOIN interactions i ON i.product_id = k.product_id
    AND (i.idempotency_key = k.idempotency_key OR i.dedup_key = k.dedup_key)"#,
    )
    .bind(products)
    .bind(idempotency)
    .bind(natural)
    .fetch_all(conn)
    .await?;
    let mut out = HashMap::new();
    for row in found {
        let product = B256::from_slice(&row.product_id);
        if let Some(key) = row.idempotency_key {
            out.insert((product, Key::Idempotency(key)), row.id);
        }
        if let Some(key) = row.dedup_key {
            out.insert((product, Key::Natural(key)), row.id);
        }
    }
    Ok(out)
}

/// A stored interaction without idempotency or natural key, for the window dedup.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WindowEntry {
    pub id: Uuid,
    pub wallet: Vec<u8>,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A product's window-deduplicated interactions since `since`, to rebuild the
/// dedup window after a restart.
pub async fn recent_for_window(
    pool: &PgPool,
    product: B256,
    since: DateTime<Utc>,
) -> Result<Vec<WindowEntry>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, wallet, type, data, created_at FROM interactions
         WHERE product_id = $1 AND created_at >= $2 AND wallet IS NOT NULL
           AND dedup_key IS NULL AND idempotency_key IS NULL",
    )
    .bind(product.as_slice())
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// Every registered referral edge of a product: (wallet, referrer).
pub async fn referral_edges(
    pool: &PgPool,
    product: B256,
) -> Result<Vec<(Address, Address)>, DbError> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT wallet, referrer_wallet FROM interactions
         WHERE product_id = $1 AND type = 'referral.referred' AND referrer_wallet IS NOT NULL",
    )
    .bind(product.as_slice())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(w, r)| (Address::from_slice(&w), Address::from_slice(&r)))
        .collect())
}
