//! products and product_administrators.

use alloy::primitives::{Address, B256};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::DbError;
use crate::domain::product::roles;
use crate::domain::webhook::WebhookConfig;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub id: Vec<u8>,
    pub domain: String,
    pub name: String,
    pub owner_wallet: Vec<u8>,
    pub product_types: i64,
    pub metadata: serde_json::Value,
    pub allowed_origins: Vec<String>,
    pub is_active: bool,
    pub webhook_platform: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The calling wallet's roles on this product (all of them for the owner; 0: none).
    pub caller_roles: i32,
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub id: B256,
    pub domain: String,
    pub name: String,
    pub owner: Address,
    pub product_types: i64,
    pub metadata: serde_json::Value,
    pub allowed_origins: Vec<String>,
}

/// The product columns plus the caller's roles; binds $1 = caller, $2 = all roles.
macro_rules! select_products {
    () => {
        r#"
SELECT p.id, p.domain, p.name, p.owner_wallet, p.product_types, p.metadata,
       p.allowed_origins, p.is_active, p.webhook_config->>'platform' AS webhook_platform,
       p.created_at, p.updated_at,
       CASE WHEN p.owner_wallet = $1 THEN $2 ELSE COALESCE(a.roles, 0) END AS caller_roles
FROM products p
LEFT JOIN product_administrators a ON a.product_id = p.id AND a.wallet = $1
"#
    };
}

/// Inserts a product; `DbError::Conflict` when its id or domain already exists.
pub async fn insert(pool: &PgPool, product: &NewProduct) -> Result<ProductRow, DbError> {
    sqlx::query(
        "INSERT INTO products (id, domain, name, owner_wallet, product_types, metadata, allowed_origins)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(product.id.as_slice())
    .bind(&product.domain)
    .bind(&product.name)
    .bind(product.owner.as_slice())
    .bind(product.product_types)
    .bind(&product.metadata)
    .bind(&product.allowed_origins)
    .execute(pool)
    .await?;
    get_for(pool, product.id, product.owner)
        .await?
        .ok_or_else(|| DbError::Query(sqlx::Error::RowNotFound))
}

/// A live (not deleted) product, with the caller's roles on it.
pub async fn get_for(
    pool: &PgPool,
    id: B256,
    caller: Address,
) -> Result<Option<ProductRow>, DbError> {
    const SQL: &str = concat!(
        select_products!(),
        "WHERE p.id = $3 AND p.deleted_at IS NULL"
    );
    Ok(sqlx::query_as(SQL)
        .bind(caller.as_slice())
        .bind(roles::ALL)
        .bind(id.as_slice())
        .fetch_optional(pool)
        .await?)
}

/// The live products the wallet owns or administers, newest first.
pub async fn list_for(pool: &PgPool, caller: Address) -> Result<Vec<ProductRow>, DbError> {
    const SQL: &str = concat!(
        select_products!(),
        "WHERE p.deleted_at IS NULL AND (p.owner_wallet = $1 OR a.wallet IS NOT NULL)
         ORDER BY p.created_at DESC, p.id"
    );
    Ok(sqlx::query_as(SQL)
        .bind(caller.as_slice())
        .bind(roles::ALL)
        .fetch_all(pool)
        .await?)
}

/// What the ingestion path needs to know of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductConfig {
    pub id: B256,
    pub domain: String,
    /// Normalized origins; empty means `https://<domain>`.
    pub allowed_origins: Vec<String>,
    pub is_active: bool,
    /// The shop webhook's platform and secrets, once set.
    pub webhook: Option<WebhookConfig>,
}

/// The ingestion view of a live product; `None` if it does not exist.
pub async fn load_config(pool: &PgPool, id: B256) -> Result<Option<ProductConfig>, DbError> {
    let row: Option<(String, Vec<String>, bool, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT domain, allowed_origins, is_active, webhook_config
         FROM products WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id.as_slice())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(domain, allowed_origins, is_active, webhook)| ProductConfig {
            id,
            domain,
            allowed_origins,
            is_active,
            webhook: webhook.as_ref().and_then(WebhookConfig::from_stored),
        },
    ))
}

/// The product's webhook settings, read under a row lock and replaced by what
/// `change` makes of them, in one transaction (two rotations cannot interleave).
pub async fn change_webhook(
    pool: &PgPool,
    id: B256,
    change: impl FnOnce(Option<&WebhookConfig>) -> WebhookConfig,
) -> Result<WebhookConfig, DbError> {
    let mut tx = pool.begin().await?;
    let current: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT webhook_config FROM products WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(id.as_slice())
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let current = current.as_ref().and_then(WebhookConfig::from_stored);
    let next = change(current.as_ref());
    sqlx::query("UPDATE products SET webhook_config = $2, updated_at = now() WHERE id = $1")
        .bind(id.as_slice())
        .bind(next.to_stored())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(next)
}

/// Every origin an active product lets call its SDK routes (its allowed origins,
/// else `https://<domain>`).
pub async fn active_origins(pool: &PgPool) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT o FROM products p,
             unnest(CASE WHEN cardinality(p.allowed_origins) = 0
                         THEN ARRAY['https://' || p.domain] ELSE p.allowed_origins END) AS o
         WHERE p.is_active AND p.deleted_at IS NULL",
    )
    .fetch_all(pool)
    .await?)
}

/// Changes of `PATCH /v1/products/{id}`; `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub allowed_origins: Option<Vec<String>>,
    pub is_active: Option<bool>,
}

pub async fn update(pool: &PgPool, id: B256, changes: &ProductChanges) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE products SET name = COALESCE($2, name), metadata = COALESCE($3, metadata),
            allowed_origins = COALESCE($4, allowed_origins), is_active = COALESCE($5, is_active),
            updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id.as_slice())
    .bind(&changes.name)
    .bind(&changes.metadata)
    .bind(&changes.allowed_origins)
    .bind(changes.is_active)
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdministratorRow {
    pub wallet: Vec<u8>,
    pub roles: i32,
    pub granted_by: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

pub async fn administrators(pool: &PgPool, id: B256) -> Result<Vec<AdministratorRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT wallet, roles, granted_by, created_at FROM product_administrators
         WHERE product_id = $1 ORDER BY created_at, wallet",
    )
    .bind(id.as_slice())
    .fetch_all(pool)
    .await?)
}

/// Grants `roles` (replacing earlier ones) to `wallet`.
pub async fn grant(
    pool: &PgPool,
    id: B256,
    wallet: Address,
    roles: i32,
    by: Address,
) -> Result<AdministratorRow, DbError> {
    Ok(sqlx::query_as(
        "INSERT INTO product_administrators (product_id, wallet, roles, granted_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (product_id, wallet) DO UPDATE SET roles = EXCLUDED.roles, granted_by = EXCLUDED.granted_by
         RETURNING wallet, roles, granted_by, created_at",
    )
    .bind(id.as_slice())
    .bind(wallet.as_slice())
    .bind(roles)
    .bind(by.as_slice())
    .fetch_one(pool)
    .await?)
}

/// Removes a wallet's roles; false if it had none.
pub async fn revoke(pool: &PgPool, id: B256, wallet: Address) -> Result<bool, DbError> {
    let done =
        sqlx::query("DELETE FROM product_administrators WHERE product_id = $1 AND wallet = $2")
            .bind(id.as_slice())
            .bind(wallet.as_slice())
            .execute(pool)
            .await?;
    Ok(done.rows_affected() > 0)
}
