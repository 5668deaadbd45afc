//! product_banks: where a product's tokens live on-chain.

use alloy::primitives::{Address, B256};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::DbError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BankRow {
    pub id: i64,
    pub product_id: Vec<u8>,
    pub chain_id: i64,
    pub bank_address: Vec<u8>,
    pub token_address: Vec<u8>,
    pub symbol: String,
    pub decimals: i16,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewBank {
    pub product: B256,
    pub chain_id: i64,
    pub bank: Address,
    pub token: Address,
    pub symbol: String,
    pub decimals: i16,
}

/// `DbError::Conflict` when the product already has a bank for the token.
pub async fn insert(pool: &PgPool, bank: &NewBank) -> Result<BankRow, DbError> {
    Ok(sqlx::query_as(
        "INSERT INTO product_banks (product_id, chain_id, bank_address, token_address, symbol, decimals)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
    )
    .bind(bank.product.as_slice())
    .bind(bank.chain_id)
    .bind(bank.bank.as_slice())
    .bind(bank.token.as_slice())
    .bind(&bank.symbol)
    .bind(bank.decimals)
    .fetch_one(pool)
    .await?)
}

pub async fn list(pool: &PgPool, product: B256) -> Result<Vec<BankRow>, DbError> {
    Ok(
        sqlx::query_as("SELECT * FROM product_banks WHERE product_id = $1 ORDER BY id")
            .bind(product.as_slice())
            .fetch_all(pool)
            .await?,
    )
}

/// The product's active bank for a token.
pub async fn for_token(
    pool: &PgPool,
    product: B256,
    token: Address,
) -> Result<Option<BankRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT * FROM product_banks WHERE product_id = $1 AND token_address = $2 AND is_active",
    )
    .bind(product.as_slice())
    .bind(token.as_slice())
    .fetch_optional(pool)
    .await?)
}
