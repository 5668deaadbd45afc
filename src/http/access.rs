//! Who may do what on a product: the owner has every role; administrators have
//! the roles of their `product_administrators` row (SPEC §3).

use alloy::primitives::{Address, B256};

use super::problem::ApiError;
use crate::app::AppContext;
use crate::db;
use crate::db::products::ProductRow;

/// The product, if `wallet` holds any of the `roles` bits on it: 404 for no such
/// product, 403 without the role.
pub async fn require_role(
    ctx: &AppContext,
    product: B256,
    wallet: Address,
    roles: i32,
) -> Result<ProductRow, ApiError> {
    let row = db::products::get_for(&ctx.pool, product, wallet)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such product".into()))?;
    if row.caller_roles & roles == 0 {
        return Err(ApiError::Forbidden(
            "your wallet does not have the role this needs on the product".into(),
        ));
    }
    Ok(row)
}

/// A product id from the path (422 naming `id` when malformed).
pub fn product_id(id: &str) -> Result<B256, ApiError> {
    crate::domain::ids::parse_bytes32(id).map_err(|e| ApiError::invalid("id", e))
}

/// A signed-in wallet acting on the product of the path.
pub struct ProductAccess {
    pub wallet: Address,
    pub product: B256,
    pub row: ProductRow,
}

/// The prelude of every business route on a product: the bearer token (401), the
/// path id (422), the product (404) and one of `roles` on it (403).
pub async fn authorize(
    ctx: &AppContext,
    auth: Option<&str>,
    id: &str,
    roles: i32,
) -> Result<ProductAccess, ApiError> {
    let session = super::auth::authenticate(ctx, auth)?;
    let product = product_id(id)?;
    let row = require_role(ctx, product, session.wallet, roles).await?;
    Ok(ProductAccess {
        wallet: session.wallet,
        product,
        row,
    })
}
