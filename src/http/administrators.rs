//! `GET/POST/DELETE /v1/products/{id}/administrators`: who holds which roles on a
//! product. Reading needs any role; granting and revoking need owner or admin.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::access::authorize;
use super::body::parse_json;
use super::problem::ApiError;
use super::{authorization, json_reply, respond, with_ctx};
use crate::app::AppContext;
use crate::db::{self, products::AdministratorRow};
use crate::domain::ids::{parse_account, parse_address, to_hex};
use crate::domain::product::roles;

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let t = ctx.request_timeout();
    let list = warp::path!("v1" / "products" / String / "administrators")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and_then(move |id, ctx, auth| respond(t, list(ctx, auth, id)));
    let grant = warp::path!("v1" / "products" / String / "administrators")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(authorization())
        .and(super::body::limited(ctx.settings.server.body_limit_bytes))
        .and_then(move |id, ctx, auth, body| respond(t, grant(ctx, auth, id, body)));
    let revoke = warp::path!("v1" / "products" / String / "administrators" / String)
        .and(warp::delete())
        .and(with_ctx(ctx))
        .and(authorization())
        .and_then(move |id, wallet, ctx, auth| respond(t, revoke(ctx, auth, id, wallet)));
    list.or(grant).unify().or(revoke).unify()
}

fn view(row: &AdministratorRow) -> Value {
    json!({
        "wallet": to_hex(&row.wallet),
        "roles": roles::names(row.roles),
        "granted_by": to_hex(&row.granted_by),
        "created_at": row.created_at,
    })
}

async fn list(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
) -> Result<Response, ApiError> {
    let access = authorize(&ctx, auth.as_deref(), &id, roles::ALL).await?;
    let (product, row) = (access.product, access.row);
    let admins: Vec<Value> = db::products::administrators(&ctx.pool, product)
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(json_reply(
        &json!({"owner": to_hex(&row.owner_wallet), "administrators": admins}),
        StatusCode::OK,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    wallet: String,
    roles: Vec<String>,
}

async fn grant(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = authorize(&ctx, auth.as_deref(), &id, roles::ADMIN).await?;
    let request: Grant = parse_json(&body)?;
    let wallet = parse_account(&request.wallet).map_err(|e| ApiError::invalid("wallet", e))?;
    let mask = roles::mask(&request.roles)
        .filter(|m| *m != 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "roles",
                "one or more of admin, campaign_manager, interaction_manager, oracle_updater",
            )
        })?;
    if wallet.as_slice() == access.row.owner_wallet.as_slice() {
        return Err(ApiError::invalid(
            "wallet",
            "the owner already has every role",
        ));
    }
    let granted =
        db::products::grant(&ctx.pool, access.product, wallet, mask, access.wallet).await?;
    Ok(json_reply(&view(&granted), StatusCode::OK))
}

async fn revoke(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
    wallet: String,
) -> Result<Response, ApiError> {
    let product = authorize(&ctx, auth.as_deref(), &id, roles::ADMIN)
        .await?
        .product;
    let wallet = parse_address(&wallet).map_err(|e| ApiError::invalid("wallet", e))?;
    if !db::products::revoke(&ctx.pool, product, wallet).await? {
        return Err(ApiError::NotFound(
            "that wallet has no role on the product".into(),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
