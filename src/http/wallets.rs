//! `GET /v1/wallets/{address}/rewards` and `/history` (SPEC §9): public reads —
//! addresses and on-chain balances are public anyway.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::problem::ApiError;
use super::{json_reply, respond, with_ctx};
use crate::app::AppContext;
use crate::db;
use crate::domain::history_cursor::HistoryCursor;
use crate::domain::ids::parse_address;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let t = ctx.request_timeout();
    let rewards = warp::path!("v1" / "wallets" / String / "rewards")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and_then(move |wallet, ctx| respond(t, rewards(ctx, wallet)));
    let history = warp::path!("v1" / "wallets" / String / "history")
        .and(warp::get())
        .and(with_ctx(ctx))
        .and(warp::query::<HashMap<String, String>>())
        .and_then(move |wallet, ctx, query| respond(t, history(ctx, wallet, query)));
    rewards.or(history).unify()
}

fn wallet(raw: &str) -> Result<alloy::primitives::Address, ApiError> {
    parse_address(raw)
        .map_err(|_| ApiError::invalid("address", "must be a 0x-prefixed 20-byte address"))
}

async fn rewards(ctx: Arc<AppContext>, address: String) -> Result<Response, ApiError> {
    let wallet = wallet(&address)?;
    let tokens = db::wallets::balances(&ctx.pool, wallet).await?;
    Ok(json_reply(
        &json!({ "wallet": wallet.to_string().to_lowercase(), "tokens": tokens }),
        StatusCode::OK,
    ))
}

async fn history(
    ctx: Arc<AppContext>,
    address: String,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let wallet = wallet(&address)?;
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let from = match query.get("cursor") {
        None => HistoryCursor::FIRST,
        Some(raw) => HistoryCursor::decode(raw).map_err(|e| ApiError::invalid("cursor", e))?,
    };
    let page = db::wallets::history(&ctx.pool, wallet, limit, &from).await?;
    Ok(json_reply(
        &json!({
            "wallet": wallet.to_string().to_lowercase(),
            "rewards": page.rewards,
            "claims": page.claims,
            "next_cursor": page.next.map(|c| c.encode()),
        }),
        StatusCode::OK,
    ))
}
