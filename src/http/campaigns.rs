//! Campaigns (owner, admin or campaign manager of the product): create, list,
//! read, patch, activate/pause/deactivate, stats; and the public estimate. Every
//! change is pushed to the product's actor, so it applies to the next interaction.

use std::collections::HashMap;
use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use bytes::Bytes;
use chrono::Utc;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::access::{authorize, product_id, require_role};
use super::auth::authenticate;
use super::body::parse_json;
use super::problem::{ApiError, FieldError};
use super::{authorization, json_reply, respond, with_ctx};
use crate::actors::product::{InStepError, ProductMsg};
use crate::app::AppContext;
use crate::db::campaigns::{CampaignRow, Recap};
use crate::db::{self, banks::BankRow};
use crate::domain::campaign::{CampaignStatus, StatusAction, transition};
use crate::domain::campaign_input::{CampaignInput, CampaignSpec, apply_patch};
use crate::domain::ids::to_hex;
use crate::domain::interaction::InteractionType;
use crate::domain::product::roles;
use crate::domain::push::onchain_campaign_id;

const MANAGE: i32 = roles::ADMIN | roles::CAMPAIGN_MANAGER;

pub fn routes(
    ctx: Arc<AppContext>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let t = ctx.request_timeout();
    let limit = ctx.settings.server.body_limit_bytes;
    let c = || with_ctx(ctx.clone()).and(authorization());
    let create = warp::path!("v1" / "products" / String / "campaigns")
        .and(warp::post())
        .and(c())
        .and(super::body::limited(limit))
        .and_then(move |id, ctx, auth, body| respond(t, create(ctx, auth, id, body)));
    let list = warp::path!("v1" / "products" / String / "campaigns")
        .and(warp::get())
        .and(c())
        .and_then(move |id, ctx, auth| respond(t, list(ctx, auth, id)));
    let get = warp::path!("v1" / "campaigns" / i64)
        .and(warp::get())
        .and(c())
        .and_then(move |id, ctx, auth| respond(t, get(ctx, auth, id)));
    let patch = warp::path!("v1" / "campaigns" / i64)
        .and(warp::patch())
        .and(c())
        .and(super::body::limited(limit))
        .and_then(move |id, ctx, auth, body| respond(t, patch(ctx, auth, id, body)));
    let action = warp::path!("v1" / "campaigns" / i64 / String)
        .and(warp::post())
        .and(c())
        .and_then(move |id, action, ctx, auth| respond(t, change_status(ctx, auth, id, action)));
    let stats = warp::path!("v1" / "campaigns" / i64 / "stats")
        .and(warp::get())
        .and(c())
        .and_then(move |id, ctx, auth| respond(t, stats(ctx, auth, id)));
    let estimate = warp::path!("v1" / "products" / String / "estimate")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(warp::query::<HashMap<String, String>>())
        .and_then(move |id, ctx, query| respond(t, estimate(ctx, id, query)));
    create
        .or(list)
        .unify()
        .or(stats)
        .unify()
        .or(get)
        .unify()
        .or(patch)
        .unify()
        .or(action)
        .unify()
        .or(estimate)
        .unify()
}

fn view(row: &CampaignRow) -> Value {
    let mut value = serde_json::to_value(row.input()).unwrap_or_default();
    let rule = row.rule();
    let remaining = rule
        .as_ref()
        .and_then(|r| r.remaining_budget())
        .map(|r| r.to_string());
    if let Value::Object(map) = &mut value {
        map.insert("id".into(), json!(row.id));
        map.insert("external_id".into(), json!(row.external_id));
        map.insert("product_id".into(), json!(to_hex(&row.product_id)));
        map.insert("bank_id".into(), json!(row.bank_id));
        map.insert("status".into(), json!(row.status));
        map.insert("used_budget".into(), json!(row.used_budget));
        map.insert("remaining_budget".into(), json!(remaining));
        map.insert(
            "onchain_id".into(),
            json!(onchain_campaign_id(row.external_id).to_string()),
        );
        map.insert(
            "chain".into(),
            json!({
                "state": row.chain_state,
                "error": row.chain_error,
                "synced_at": row.chain_synced_at,
            }),
        );
        map.insert("created_by".into(), json!(to_hex(&row.created_by)));
        map.insert("created_at".into(), json!(row.created_at));
        map.insert("updated_at".into(), json!(row.updated_at));
    }
    value
}

/// Tells the product's actor, if it runs; otherwise it loads the change on start.
fn notify(ctx: &AppContext, row: &CampaignRow) {
    if let Some(handle) = ctx.ingest.products.get(&row.product()) {
        let _ = handle
            .actor
            .cast(ProductMsg::CampaignUpdated(Box::new(row.clone())));
    }
}

/// Gives an unlimited campaign a budget cap, through its product actor: the cap
/// must take effect in step with the rewards being written (see
/// `db::campaigns::recap`).
async fn recap(ctx: &AppContext, product: B256, id: i64, cap: U256) -> Result<Recap, ApiError> {
    in_step(ctx, product, |reply| ProductMsg::Recap {
        campaign_id: id,
        cap,
        reply,
    })
    .await
}

/// A campaign change made by its product's actor, in step with the rewards being
/// written (the actor is started if it does not run).
async fn in_step<T>(
    ctx: &AppContext,
    product: B256,
    message: impl FnOnce(oneshot::Sender<Result<T, InStepError>>) -> ProductMsg,
) -> Result<T, ApiError> {
    let busy = |detail: String| ApiError::Unavailable {
        detail,
        retry_after_secs: 1,
    };
    let handle = ctx
        .ingest
        .open(product)
        .await
        .map_err(|e| busy(format!("the product is unavailable: {e}")))?;
    let (reply, done) = oneshot::channel();
    handle
        .actor
        .cast(message(reply))
        .map_err(|_| busy("the product is restarting; retry".into()))?;
    match done.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(InStepError::Db(err))) => Err(err.into()),
        Ok(Err(InStepError::WriterDown)) | Err(_) => {
            Err(busy("the writer is restarting; retry".into()))
        }
    }
}

/// Validates a campaign and finds its bank (the product's bank for its token).
async fn checked(
    ctx: &AppContext,
    product: B256,
    input: CampaignInput,
) -> Result<(CampaignSpec, BankRow), ApiError> {
    let spec = input.validate().map_err(|errors| {
        ApiError::Invalid(
            errors
                .into_iter()
                .map(|e| FieldError::new(e.field, e.message))
                .collect(),
        )
    })?;
    let bank = db::banks::for_token(&ctx.pool, product, spec.token)
        .await?
        .ok_or_else(|| {
            ApiError::invalid("token", "the product has no active bank for this token")
        })?;
    Ok((spec, bank))
}

/// The campaign and the caller's right to act on it.
async fn campaign_for(
    ctx: &AppContext,
    wallet: Address,
    id: i64,
    needed: i32,
) -> Result<CampaignRow, ApiError> {
    let row = db::campaigns::get(&ctx.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such campaign".into()))?;
    require_role(ctx, row.product(), wallet, needed).await?;
    Ok(row)
}

async fn create(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = authorize(&ctx, auth.as_deref(), &id, MANAGE).await?;
    let (spec, bank) = checked(&ctx, access.product, parse_json(&body)?).await?;
    let row =
        db::campaigns::insert(&ctx.pool, access.product, bank.id, &spec, access.wallet).await?;
    Ok(json_reply(&view(&row), StatusCode::CREATED))
}

async fn list(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: String,
) -> Result<Response, ApiError> {
    let product = authorize(&ctx, auth.as_deref(), &id, roles::ALL)
        .await?
        .product;
    let rows = db::campaigns::list(&ctx.pool, product).await?;
    let campaigns: Vec<Value> = rows.iter().map(view).collect();
    Ok(json_reply(
        &json!({ "campaigns": campaigns }),
        StatusCode::OK,
    ))
}

async fn get(ctx: Arc<AppContext>, auth: Option<String>, id: i64) -> Result<Response, ApiError> {
    let session = authenticate(&ctx, auth.as_deref())?;
    let row = campaign_for(&ctx, session.wallet, id, roles::ALL).await?;
    Ok(json_reply(&view(&row), StatusCode::OK))
}

async fn patch(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: i64,
    body: Bytes,
) -> Result<Response, ApiError> {
    let session = authenticate(&ctx, auth.as_deref())?;
    let row = campaign_for(&ctx, session.wallet, id, MANAGE).await?;
    if row.status() == CampaignStatus::Deactivated {
        return Err(ApiError::Conflict(
            "a deactivated campaign cannot be changed".into(),
        ));
    }
    let patch: Map<String, Value> = parse_json(&body)?;
    let merged = apply_patch(&row.input(), patch).map_err(|e| ApiError::invalid("body", e))?;
    let (spec, bank) = checked(&ctx, row.product(), merged).await?;
    // Its rewards, its budget and its allocation on the bank are in that token.
    if bank.id != row.bank_id && row.status() != CampaignStatus::Draft {
        return Err(ApiError::Conflict(
            "the token of a campaign cannot change once it has been activated".into(),
        ));
    }
    let rule = row
        .rule()
        .ok_or_else(|| ApiError::Internal("unreadable campaign".into()))?;
    if !spec.budget_cap.is_zero() {
        let used = if rule.budget_cap.is_zero() {
            match recap(&ctx, row.product(), id, spec.budget_cap).await? {
                Recap::Set { .. } => None,
                Recap::BelowSpent { used } => Some(used),
                Recap::Gone => {
                    return Err(ApiError::Conflict(
                        "a deactivated campaign cannot be changed".into(),
                    ));
                }
            }
        } else {
            (spec.budget_cap < rule.used_budget).then_some(rule.used_budget)
        };
        if let Some(used) = used {
            return Err(ApiError::invalid(
                "budget_cap",
                format!("must be at least the budget already used ({used})"),
            ));
        }
    }
    let mut row = db::campaigns::update_spec(&ctx.pool, id, bank.id, &spec)
        .await?
        .ok_or_else(|| ApiError::Conflict("a deactivated campaign cannot be changed".into()))?;
    // A lower cap (or a larger reward) that leaves too little for the smallest
    // reward exhausts the campaign now. The stored spend is never ahead of the
    // product actor's, which also exhausts it at its next match if writes in
    // flight used the rest.
    if row.status() == CampaignStatus::Active && row.rule().is_some_and(|r| r.is_exhausted()) {
        let exhausted = CampaignStatus::BudgetExhausted;
        if let Some(changed) =
            db::campaigns::set_status(&ctx.pool, id, CampaignStatus::Active, exhausted).await?
        {
            row = changed;
        }
    }
    notify(&ctx, &row);
    Ok(json_reply(&view(&row), StatusCode::OK))
}

async fn change_status(
    ctx: Arc<AppContext>,
    auth: Option<String>,
    id: i64,
    action: String,
) -> Result<Response, ApiError> {
    let action = match action.as_str() {
        "activate" => StatusAction::Activate,
        "pause" => StatusAction::Pause,
        "deactivate" => StatusAction::Deactivate,
        _ => return Err(ApiError::NotFound("no such route".into())),
    };
    let session = authenticate(&ctx, auth.as_deref())?;
    let row = campaign_for(&ctx, session.wallet, id, MANAGE).await?;
    let from = row.status();
    let to = transition(from, action).ok_or_else(|| {
        ApiError::Conflict(
            format!("a {} campaign cannot be {action:?}d", from.as_str()).to_lowercase(),
        )
    })?;
    if to == CampaignStatus::Active {
        let rule = row
            .rule()
            .ok_or_else(|| ApiError::Internal("unreadable campaign".into()))?;
        if rule.ends_at.is_some_and(|end| end <= Utc::now()) {
            return Err(ApiError::Conflict(
                "the campaign has ended; change ends_at first".into(),
            ));
        }
        if rule.is_exhausted() {
            return Err(ApiError::Conflict(
                "the budget cannot pay another reward; raise budget_cap first".into(),
            ));
        }
    }
    let changed = if to == CampaignStatus::Deactivated {
        // Once deactivated in the database, its bank releases it as soon as its
        // stored rewards are pushed: none may still be on its way to the database.
        in_step(&ctx, row.product(), |reply| ProductMsg::Deactivate {
            campaign_id: id,
            from,
            reply,
        })
        .await?
    } else {
        let changed = db::campaigns::set_status(&ctx.pool, id, from, to).await?;
        if let Some(row) = &changed {
            notify(&ctx, row);
        }
        changed
    };
    let row = changed
        .ok_or_else(|| ApiError::Conflict("the campaign changed meanwhile; retry".into()))?;
    Ok(json_reply(&view(&row), StatusCode::OK))
}

async fn stats(ctx: Arc<AppContext>, auth: Option<String>, id: i64) -> Result<Response, ApiError> {
    let session = authenticate(&ctx, auth.as_deref())?;
    let row = campaign_for(&ctx, session.wallet, id, roles::ALL).await?;
    let stats = db::campaigns::stats(&ctx.pool, id).await?;
    let remaining = row
        .rule()
        .and_then(|r| r.remaining_budget())
        .map(|r| r.to_string());
    let rewards: Vec<Value> = stats
        .rewards
        .iter()
        .map(|(kind, count, amount)| json!({"recipient_type": kind, "count": count, "amount": amount}))
        .collect();
    Ok(json_reply(
        &json!({
            "campaign_id": id,
            "status": row.status,
            "interactions_matched": stats.interactions_matched,
            "distinct_rewarded_wallets": stats.distinct_rewarded_wallets,
            "rewards": rewards,
            "budget": {"cap": row.budget_cap, "used": row.used_budget, "remaining": remaining},
        }),
        StatusCode::OK,
    ))
}

/// Public: what the acting user would earn now, referred or not, per live campaign.
async fn estimate(
    ctx: Arc<AppContext>,
    id: String,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let product = product_id(&id)?;
    let kind = query
        .get("type")
        .and_then(|t| InteractionType::parse(t))
        .ok_or_else(|| ApiError::invalid("type", "must be an interaction type"))?;
    let config = db::products::load_config(&ctx.pool, product)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such product".into()))?;
    let now = Utc::now();
    let range = |bounds: Option<(U256, U256)>| {
        bounds.map_or(
            Value::Null,
            |(min, max)| json!({"min": min.to_string(), "max": max.to_string()}),
        )
    };
    let mut campaigns = Vec::new();
    // A deactivated product takes no interactions: nothing to earn.
    let rows = if config.is_active {
        db::campaigns::active(&ctx.pool, product).await?
    } else {
        Vec::new()
    };
    for row in rows {
        let Some(rule) = row.rule() else { continue };
        if rule.trigger != kind || !rule.is_live(now) {
            continue;
        }
        let estimate = rule.user_estimate();
        if estimate.referred.is_none() && estimate.non_referred.is_none() {
            continue;
        }
        campaigns.push(json!({
            "campaign_id": rule.id,
            "token": to_hex(rule.token),
            "referred": range(estimate.referred),
            "non_referred": range(estimate.non_referred),
        }));
    }
    Ok(json_reply(
        &json!({"product_id": to_hex(product), "type": kind.as_str(), "campaigns": campaigns}),
        StatusCode::OK,
    ))
}
