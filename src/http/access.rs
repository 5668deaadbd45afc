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
