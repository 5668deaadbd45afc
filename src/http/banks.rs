//! `GET/POST /v1/products/{id}/banks`: the product's on-chain banks, one per token.

use std::sync::Arc;

use alloy::primitives::{Address, B256};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::access::authorize;
use super::body::parse_json;
use super::problem::{ApiError, FieldError};
use super::{authorization, json_reply, respond, with_ctx};
use crate::app::AppContext;
use crate::chain::ChainError;
use crate::db::banks::{BankRow, NewBank};
use crate::db::{self, DbError};
use crate::domain::ids::{parse_account, to_hex};
use crate::domain::product::roles;

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let timeout = ctx.request_timeout();
    let list = warp::path!("v1" / "products" / String / "banks")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and_then(move |id, ctx, auth| respond(timeout, list(ctx, auth, id)));
    let create = warp::path!("v1" / "products" / String / "banks")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and(super::body::limited(ctx.settings.server.body_limit_bytes))
        .and_then(move |id, ctx, auth, body| respond(timeout, create(ctx, auth, id, body)));
    list.or(create).unify()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBank {
    chain_id: i64,
    bank_address: String,
    token: String,
    symbol: String,
    decimals: i16,
}

#[derive(Serialize)]
pub struct BankView {
    id: i64,
    chain_id: i64,
    bank_address: String,
    token: String,
    symbol: String,
    decimals: i16,
    is_active: bool,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<BankRow> for BankView {
    fn from(row: BankRow) -> Self {
        BankView {
            id: row.id,
            chain_id: row.chain_id,
            bank_address: to_hex(&row.bank_address),
            token: to_hex(&row.token_address),
            symbol: row.symbol,
            decimals: row.decimals,
            is_active: row.is_active,
            created_at: row.created_at,
        }
    }
}

async fn list(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
) -> Result<Response, ApiError> {
    let product = authorize(&ctx, auth.as_deref(), &id, roles::ALL)
        .await?
        .product;
    let banks: Vec<BankView> = db::banks::list(&ctx.pool, product)
        .await?
        .into_iter()
        .map(BankView::from)
        .collect();
    Ok(json_reply(
        &serde_json::json!({ "banks": banks }),
        StatusCode::OK,
    ))
}

async fn create(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let product = authorize(&ctx, auth.as_deref(), &id, roles::ADMIN)
        .await?
        .product;
    let request: CreateBank = parse_json(&body)?;
    let mut errors = Vec::new();
    if request.chain_id <= 0 {
        errors.push(FieldError::new("chain_id", "must be a positive chain id"));
    }
    let bank = parse_account(&request.bank_address)
        .map_err(|e| errors.push(FieldError::new("bank_address", e)))
        .ok();
    let token = parse_account(&request.token)
        .map_err(|e| errors.push(FieldError::new("token", e)))
        .ok();
    let symbol = request.symbol.trim().to_owned();
    if symbol.is_empty() || symbol.len() > 32 {
        errors.push(FieldError::new("symbol", "must be 1 to 32 characters"));
    }
    if !(0..=77).contains(&request.decimals) {
        errors.push(FieldError::new("decimals", "must be between 0 and 77"));
    }
    let (Some(bank), Some(token), true) = (bank, token, errors.is_empty()) else {
        return Err(ApiError::Invalid(errors));
    };
    check_bank(&ctx, request.chain_id, bank, product).await?;
    let new = NewBank {
        product,
        chain_id: request.chain_id,
        bank,
        token,
        symbol,
        decimals: request.decimals,
    };
    let row = db::banks::insert(&ctx.pool, &new)
        .await
        .map_err(|err| match err {
            DbError::Conflict { .. } => {
                ApiError::Conflict("the product already has a bank for this token".into())
            }
            other => other.into(),
        })?;
    Ok(json_reply(&BankView::from(row), StatusCode::CREATED))
}

/// A bank on the chain the service pushes to must be this product's ProductBank
/// (the pushers check it again before every allocation and batch, so a bank of
/// another chain, or one registered while no node is configured, is checked
/// once it is pushed to).
async fn check_bank(
    ctx: &AppContext,
    chain_id: i64,
    bank: Address,
    product: B256,
) -> Result<(), ApiError> {
    let Some(chain) = &ctx.chain else {
        return Ok(());
    };
    let unreachable = |err: ChainError| ApiError::Unavailable {
        detail: format!("the bank cannot be checked: the chain node did not answer ({err})"),
        retry_after_secs: 5,
    };
    if chain.chain.chain_id().await.map_err(unreachable)? != chain_id as u64 {
        return Ok(());
    }
    match chain.chain.ensure_bank(bank, product).await {
        Ok(()) => Ok(()),
        Err(ChainError::Reverted(reason)) => Err(ApiError::invalid("bank_address", reason)),
        Err(err) => Err(unreachable(err)),
    }
}
