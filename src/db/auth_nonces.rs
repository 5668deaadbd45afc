//! Single-use sign-in nonces.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::DbError;

pub async fn insert(pool: &PgPool, nonce: &str, expires_at: DateTime<Utc>) -> Result<(), DbError> {
    sqlx::query("INSERT INTO auth_nonces (nonce, expires_at) VALUES ($1, $2)")
        .bind(nonce)
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes the nonce and says whether it existed and was still valid. A nonce can
/// be consumed once, whatever the outcome of the sign-in that presents it.
pub async fn consume(pool: &PgPool, nonce: &str) -> Result<NonceState, DbError> {
    let row: Option<(bool,)> =
        sqlx::query_as("DELETE FROM auth_nonces WHERE nonce = $1 RETURNING expires_at > now()")
            .bind(nonce)
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        None => NonceState::Unknown,
        Some((true,)) => NonceState::Valid,
        Some((false,)) => NonceState::Expired,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    Valid,
    Expired,
    /// Never issued, or already used.
    Unknown,
}

/// Removes expired nonces; returns how many.
pub async fn delete_expired(pool: &PgPool) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM auth_nonces WHERE expires_at <= now()")
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
