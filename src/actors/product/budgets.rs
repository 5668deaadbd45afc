//! The product actor's hot campaign state: budgets and per-user counts charged in
//! memory, given back when a write set is not stored or a refund commits, campaign
//! changes from the API applied at once, and the settles that make a (re)load from
//! the database count every earlier write once.

use std::collections::HashMap;

use alloy::primitives::{Address, U256};
use ractor::ActorProcessingErr;
use tokio::sync::oneshot;

use super::{PendingRow, ProductArgs, ProductState};
use crate::actors::writer::{RecapRequest, WriterMsg};
use crate::db::campaigns::{self, CampaignRow, Recap};
use crate::domain::campaign::{CampaignRule, CampaignStatus};
use crate::domain::refund::RefundEffects;

/// Whether the outcome of write set `tag` still changes campaign `campaign_id`'s
/// budget and counts in memory (not when the campaign was re-read after it).
fn still_counts(state: &ProductState, campaign_id: i64, tag: u64) -> bool {
    state
        .reloaded
        .get(&campaign_id)
        .is_none_or(|first| tag >= *first)
}

/// Gives back what a row of write set `tag` that was not stored charged.
pub(super) fn refund(state: &mut ProductState, tag: u64, row: &PendingRow) {
    for (campaign_id, amount) in &row.charges {
        if !still_counts(state, *campaign_id, tag) {
            continue;
        }
        if let Some(campaign) = state.campaigns.iter_mut().find(|c| c.id == *campaign_id) {
            campaign.used_budget = campaign.used_budget.saturating_sub(*amount);
            if campaign.status == CampaignStatus::BudgetExhausted && !campaign.is_exhausted() {
                campaign.status = CampaignStatus::Active;
            }
        }
        if let Some(wallet) = row.wallet
            && let Some(count) = state.user_counts.get_mut(&(*campaign_id, wallet))
        {
            *count = count.saturating_sub(1);
        }
    }
}

/// Applies to the hot state what the committed refunds of write set `tag` gave
/// back. A campaign that ran out of budget stays `budget_exhausted` until its
/// manager activates it again.
pub(super) fn give_back(state: &mut ProductState, tag: u64, effects: &RefundEffects) {
    for (campaign_id, amount) in &effects.budgets {
        if !still_counts(state, *campaign_id, tag) {
            continue;
        }
        if let Some(campaign) = state.campaigns.iter_mut().find(|c| c.id == *campaign_id) {
            campaign.used_budget = campaign.used_budget.saturating_sub(*amount);
        }
    }
    for (key, (count, _)) in &effects.counters {
        if !still_counts(state, key.0, tag) {
            continue;
        }
        if let Some(n) = state.user_counts.get_mut(key) {
            *n = n.saturating_sub(*count);
        }
    }
}

/// Why a campaign change to be made in step with the writes (a first budget cap,
/// a deactivation) could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InStepError {
    #[error("the writer is restarting")]
    WriterDown,
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Sets a budget cap on an unlimited campaign through the product's flush lane
/// and waits for it (interactions queue meanwhile): every reward computed before
/// is in the spend the cap starts from, every one computed after is charged.
pub(super) async fn recap(
    state: &mut ProductState,
    campaign_id: i64,
    cap: U256,
) -> Result<Recap, InStepError> {
    let writer = state.args.writer.get().ok_or(InStepError::WriterDown)?;
    let (reply, done) = oneshot::channel();
    let request = RecapRequest {
        product_id: state.args.config.id,
        campaign_id,
        cap,
        reply,
    };
    writer
        .cast(WriterMsg::Recap(request))
        .map_err(|_| InStepError::WriterDown)?;
    let recap = done.await.map_err(|_| InStepError::WriterDown)??;
    if let Recap::Set { used } = recap
        && let Some(campaign) = state.campaigns.iter_mut().find(|c| c.id == campaign_id)
    {
        campaign.budget_cap = cap;
        campaign.used_budget = used;
    }
    Ok(recap)
}

/// Deactivates a campaign in step with the writes: out of memory first (nothing
/// more is computed for it), then in the database once every write computed
/// before has settled. The pushers release a deactivated campaign on its bank
/// (for good) once its rewards are all pushed: none may still be on its way.
/// `None` if the campaign was no longer `from` (memory follows the database then).
pub(super) async fn deactivate(
    state: &mut ProductState,
    campaign_id: i64,
    from: CampaignStatus,
) -> Result<Option<CampaignRow>, InStepError> {
    let at = state.campaigns.iter().position(|c| c.id == campaign_id);
    let removed = at.map(|i| state.campaigns.remove(i));
    let pool = state.args.pool.clone();
    let recorded = async {
        settle(&state.args)
            .await
            .map_err(|_| InStepError::WriterDown)?;
        Ok::<_, InStepError>(
            campaigns::set_status(&pool, campaign_id, from, CampaignStatus::Deactivated).await?,
        )
    }
    .await;
    let changed = match recorded {
        Ok(changed) => changed,
        // Not deactivated: it pays on as the database says.
        Err(err) => {
            if let (Some(i), Some(rule)) = (at, removed) {
                state.campaigns.insert(i, rule);
            }
            return Err(err);
        }
    };
    match &changed {
        // For good: a change read before (a PATCH's notice) cannot bring it back.
        Some(_) => {
            state.deactivated.insert(campaign_id);
        }
        None => {
            if let Some(row) = campaigns::get(&pool, campaign_id).await? {
                campaign_updated(state, &row)
                    .await
                    .map_err(|_| InStepError::WriterDown)?;
            }
        }
    }
    Ok(changed)
}

/// Applies a campaign change made through the API. The in-memory budget use,
/// which includes writes in flight, is kept when it is ahead of the database's.
pub(super) async fn campaign_updated(
    state: &mut ProductState,
    row: &CampaignRow,
) -> Result<(), ActorProcessingErr> {
    let Some(mut rule) = row.rule() else {
        return Ok(());
    };
    let existing = state.campaigns.iter().position(|c| c.id == rule.id);
    if rule.status != CampaignStatus::Active || state.deactivated.contains(&rule.id) {
        if let Some(index) = existing {
            state.campaigns.remove(index);
        }
        return Ok(());
    }
    match existing {
        // A per-user cap it did not have: counted from its whole history once the
        // writes made without counting have settled.
        Some(index)
            if state.campaigns[index].max_rewards_per_user.is_none()
                && rule.max_rewards_per_user.is_some() =>
        {
            let Some(rule) = reload_settled(state, rule).await? else {
                state.campaigns.remove(index);
                return Ok(());
            };
            let mut conn = state.args.pool.acquire().await?;
            campaigns::recount_users(&mut conn, rule.id).await?;
            drop(conn);
            let counts = load_user_counts(&state.args.pool, std::slice::from_ref(&rule)).await?;
            state.user_counts.extend(counts);
            state.campaigns[index] = rule;
        }
        Some(index) => {
            rule.used_budget = rule.used_budget.max(state.campaigns[index].used_budget);
            state.campaigns[index] = rule;
        }
        None => {
            let Some(rule) = reload_settled(state, rule).await? else {
                return Ok(());
            };
            let counts = load_user_counts(&state.args.pool, std::slice::from_ref(&rule)).await?;
            state.user_counts.extend(counts);
            state.campaigns.push(rule);
        }
    }
    Ok(())
}

/// A capped campaign coming (back) into memory, e.g. activated again after a
/// pause: write sets this actor sent before may still be in the writer's lane, and
/// what they charged it is neither in the API's row nor in memory any more. So it
/// is re-read once they have settled (interactions queue meanwhile), its per-user
/// counts dropped to be loaded again, and their outcomes no longer change it
/// (`still_counts`). `None`: no longer active. A writer that is down fails the
/// actor, which its supervisor restarts from the database.
async fn reload_settled(
    state: &mut ProductState,
    rule: CampaignRule,
) -> Result<Option<CampaignRule>, ActorProcessingErr> {
    if rule.budget_cap.is_zero() && rule.max_rewards_per_user.is_none() {
        return Ok(Some(rule));
    }
    settle(&state.args).await?;
    let fresh = campaigns::get(&state.args.pool, rule.id)
        .await?
        .and_then(|row| row.rule())
        .filter(|r| r.status == CampaignStatus::Active);
    state.reloaded.insert(rule.id, state.next_tag);
    state
        .user_counts
        .retain(|(campaign, _), _| *campaign != rule.id);
    Ok(fresh)
}

/// Waits until every write set this product's actors sent so far has been
/// flushed (committed or failed). Fails while the writer is restarting (it serves
/// again once every flush of its predecessor has finished), and the caller fails
/// with it: a start answers its request 503, and the next request tries again.
pub(super) async fn settle(args: &ProductArgs) -> Result<(), ActorProcessingErr> {
    let writer = args
        .writer
        .get()
        .ok_or("the writer is restarting: earlier writes not settled")?;
    let (reply, settled) = oneshot::channel();
    writer.cast(WriterMsg::Settle {
        product_id: args.config.id,
        reply,
    })?;
    settled.await?;
    Ok(())
}

pub(super) async fn load_user_counts(
    pool: &sqlx::PgPool,
    rules: &[CampaignRule],
) -> Result<HashMap<(i64, Address), u32>, crate::db::DbError> {
    let capped: Vec<i64> = rules
        .iter()
        .filter(|c| c.max_rewards_per_user.is_some())
        .map(|c| c.id)
        .collect();
    if capped.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(campaigns::user_counts(pool, &capped)
        .await?
        .into_iter()
        .map(|(c, w, n)| ((c, w), n))
        .collect())
}
