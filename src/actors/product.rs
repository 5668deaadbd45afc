//! One actor per product: it owns the product's hot ingestion state — the dedup
//! window, the interactions waiting for their commit — and decides, in order,
//! what each interaction is: a duplicate of a committed one, a duplicate of one
//! still being written (answered with the original's fate), or new. New rows go
//! to the writer; requests are answered only when the writer reports the commit.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::referral::{ProductEdges, ReferralMsg};
use super::supervisor::ActorSlot;
use super::writer::{FlushOutcome, RecapRequest, WriteSet, WriterGate, WriterMsg};
use crate::db::campaigns::{self, CampaignRow, Recap};
use crate::db::interactions::{self, InteractionRow};
use crate::db::products::ProductConfig;
use crate::db::refunds::{self, RefundRequest};
use crate::db::rewards::{RewardRow, UserReward};
use crate::domain::campaign::{CampaignRule, CampaignStatus, Occurrence, RecipientType, total};
use crate::domain::interaction::{
    DedupKey, Interaction, InteractionType, order_id, purchase_key, window_hash,
};
use crate::domain::referral::ReferralOutcome;
use crate::domain::refund::RefundEffects;
use crate::telemetry;
use crate::telemetry::request_id::RequestId;

/// Idempotency and natural keys of committed interactions, all products.
pub type DedupCache = Cache<(B256, DedupKey), Uuid>;

/// Where a request came from; shared by its items.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub source: &'static str,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// Named by the log lines of the write that stores the request's rows.
    pub request_id: RequestId,
}

pub struct IngestItem {
    /// Position in the HTTP request.
    pub index: usize,
    /// The acting wallet; `None` for a shop order naming no buyer (never rewarded).
    pub wallet: Option<Address>,
    pub interaction: Interaction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Accepted {
        id: Uuid,
        referral: Option<ReferralOutcome>,
        rewards: Vec<GrantedReward>,
        /// A refund: what it did to its purchase's rewards.
        refund: Option<RefundSummary>,
    },
    Duplicate {
        id: Uuid,
    },
    /// Not stored; safe to retry.
    Unavailable,
}

/// What a stored refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundSummary {
    /// The refunded purchase, if it is stored.
    pub purchase_id: Option<Uuid>,
    /// Its rewards cancelled (still pending) and kept (on their way or pushed).
    pub cancelled: u32,
    pub kept: u32,
}

/// A reward an accepted interaction earned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedReward {
    pub campaign_id: i64,
    pub recipient: Address,
    pub recipient_type: RecipientType,
    pub token: Address,
    pub amount: U256,
}

pub enum ProductMsg {
    Ingest {
        items: Vec<IngestItem>,
        meta: Arc<RequestMeta>,
        reply: oneshot::Sender<Vec<(usize, ItemResult)>>,
    },
    /// From the writer: the fate of the write set tagged `tag`.
    Flushed { tag: u64, outcome: FlushOutcome },
    /// A campaign of this product changed (API): applies to the next interaction.
    CampaignUpdated(Box<CampaignRow>),
    /// Give an unlimited campaign a budget cap (API), in step with the writes.
    Recap {
        campaign_id: i64,
        cap: U256,
        reply: oneshot::Sender<Result<Recap, RecapError>>,
    },
    /// Periodic: answers requests whose write never came back (writer restarted).
    ExpireStale,
    /// Fails the actor (supervision drills and tests).
    Crash,
}

#[derive(Clone)]
pub struct ProductArgs {
    pub config: Arc<ProductConfig>,
    pub pool: sqlx::PgPool,
    pub writer: ActorSlot<WriterMsg>,
    pub gate: Arc<WriterGate>,
    pub referral: ActorSlot<ReferralMsg>,
    pub dedup: DedupCache,
    pub window: Duration,
    /// An open request older than this is answered "unavailable".
    pub stale_after: Duration,
    /// Interactions sent to this actor and not yet processed (the front door adds).
    pub queued: Arc<AtomicU64>,
}

/// A new row waiting for its commit.
struct PendingRow {
    id: Uuid,
    position: usize,
    keys: Vec<DedupKey>,
    referral: Option<(ReferralOutcome, Address, Address)>,
    rewards: Vec<GrantedReward>,
    /// What each campaign was charged in memory, given back if the row is not stored.
    charges: Vec<(i64, U256)>,
    wallet: Option<Address>,
}

/// A request being answered.
struct OpenRequest {
    reply: oneshot::Sender<Vec<(usize, ItemResult)>>,
    request_id: RequestId,
    opened: std::time::Instant,
    indexes: Vec<usize>,
    kinds: Vec<InteractionType>,
    results: Vec<Option<ItemResult>>,
    remaining: usize,
    rows: Vec<PendingRow>,
}

pub struct ProductState {
    args: ProductArgs,
    /// Window dedup: hash of (wallet, type, data) → (seen at, id).
    window: HashMap<u64, (DateTime<Utc>, Uuid)>,
    window_length: chrono::TimeDelta,
    last_prune: DateTime<Utc>,
    /// Keys of rows not yet committed → the row's id and who waits on it.
    pending: HashMap<DedupKey, (Uuid, Vec<(u64, usize)>)>,
    open: HashMap<u64, OpenRequest>,
    next_tag: u64,
    /// Active campaigns; `used_budget` includes what is being written.
    campaigns: Vec<CampaignRule>,
    /// (campaign, wallet) → rewards as the acting user, for per-user caps.
    user_counts: HashMap<(i64, Address), u32>,
    /// Order ids with a stored (or being stored) refund: a purchase of one of
    /// them arriving later earns nothing.
    refunded_orders: HashSet<String>,
    /// Capped campaigns re-read from the database once their write sets had
    /// settled → the first tag whose outcome still changes their budget and counts
    /// (the database already holds what the earlier ones did).
    reloaded: HashMap<i64, u64>,
    /// The product's referral edges, read for chains (the referral actor's cache
    /// owns them).
    edges: Weak<ProductEdges>,
    _expiry: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy, Default)]
pub struct Product;

impl Actor for Product {
    type Msg = ProductMsg;
    type State = ProductState;
    type Arguments = ProductArgs;

    /// Rebuilds the dedup window, the active campaigns with their budgets and
    /// per-user counts, and the refunded orders from the database — once the
    /// write sets a previous actor of the product sent have settled (a crashed
    /// actor's writes may still be in the writer's lane; the database does not
    /// hold them yet, and their outcomes went to the dead actor).
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ProductArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        settle(&args).await?;
        let now = Utc::now();
        let since = now - args.window;
        let recent = interactions::recent_for_window(&args.pool, args.config.id, since).await?;
        let window = recent
            .into_iter()
            .filter_map(|e| {
                let kind = InteractionType::parse(&e.kind)?;
                let wallet = Address::from_slice(&e.wallet);
                Some((
                    window_hash(Some(wallet), kind, &e.data),
                    (e.created_at, e.id),
                ))
            })
            .collect();
        let campaigns: Vec<CampaignRule> = campaigns::active(&args.pool, args.config.id)
            .await?
            .iter()
            .filter_map(CampaignRow::rule)
            .collect();
        let user_counts = load_user_counts(&args.pool, &campaigns).await?;
        let refunded_orders = refunds::refunded_orders(&args.pool, args.config.id)
            .await?
            .into_iter()
            .collect();
        let expiry = myself.send_interval(args.stale_after / 2, || ProductMsg::ExpireStale);
        Ok(ProductState {
            window_length: chrono::TimeDelta::from_std(args.window)
                .unwrap_or(chrono::TimeDelta::MAX),
            args,
            window,
            last_prune: now,
            pending: HashMap::new(),
            open: HashMap::new(),
            next_tag: 0,
            campaigns,
            user_counts,
            refunded_orders,
            reloaded: HashMap::new(),
            edges: Weak::new(),
            _expiry: expiry,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state._expiry.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProductMsg::Ingest { items, meta, reply } => {
                state
                    .args
                    .queued
                    .fetch_sub(items.len() as u64, Ordering::AcqRel);
                ingest(&myself, state, items, &meta, reply).await;
            }
            ProductMsg::Flushed { tag, outcome } => flushed(state, tag, outcome),
            ProductMsg::ExpireStale => expire_stale(state),
            ProductMsg::CampaignUpdated(row) => campaign_updated(state, &row).await?,
            ProductMsg::Recap {
                campaign_id,
                cap,
                reply,
            } => {
                let _ = reply.send(recap(state, campaign_id, cap).await);
            }
            ProductMsg::Crash => panic!("crash requested"),
        }
        Ok(())
    }
}

async fn ingest(
    myself: &ActorRef<ProductMsg>,
    state: &mut ProductState,
    items: Vec<IngestItem>,
    meta: &RequestMeta,
    reply: oneshot::Sender<Vec<(usize, ItemResult)>>,
) {
    let now = Utc::now();
    prune_window(state, now);
    let tag = state.next_tag;
    state.next_tag += 1;
    let mut request = OpenRequest {
        reply,
        request_id: meta.request_id.clone(),
        opened: std::time::Instant::now(),
        indexes: items.iter().map(|i| i.index).collect(),
        kinds: items.iter().map(|i| i.interaction.kind).collect(),
        results: vec![None; items.len()],
        remaining: 0,
        rows: Vec::new(),
    };
    let mut fresh = Vec::new();
    for (position, item) in items.into_iter().enumerate() {
        let keys = item.interaction.dedup_keys(item.wallet);
        if let Some(id) = committed_duplicate(state, &keys, now) {
            request.results[position] = Some(ItemResult::Duplicate { id });
        } else if let Some(key) = keys.iter().find(|k| state.pending.contains_key(*k)) {
            let waiters = &mut state.pending.get_mut(key).expect("found").1;
            waiters.push((tag, position));
            request.remaining += 1;
        } else if purchase_in_flight(state, &item.interaction) {
            // Its purchase is being written: the refund could miss its rewards.
            // Refused for now; the shop's retry finds the purchase stored.
            request.results[position] = Some(ItemResult::Unavailable);
        } else {
            let id = Uuid::now_v7();
            for key in &keys {
                state.pending.insert(key.clone(), (id, Vec::new()));
            }
            request.rows.push(PendingRow {
                id,
                position,
                keys,
                referral: None,
                rewards: Vec::new(),
                charges: Vec::new(),
                wallet: item.wallet,
            });
            fresh.push(item);
        }
    }
    state.open.insert(tag, request);
    if !fresh.is_empty() {
        let stored = submit(myself, state, tag, fresh, meta, now).await;
        if !stored {
            let rows = std::mem::take(&mut state.open.get_mut(&tag).expect("open").rows);
            for row in rows {
                settle_row(state, tag, row, ItemResult::Unavailable);
            }
        }
    }
    finish_if_done(state, tag);
}

/// Registers referrals and hands the new rows to the writer; false if the writer
/// refused them (full, database down, or gone).
async fn submit(
    myself: &ActorRef<ProductMsg>,
    state: &mut ProductState,
    tag: u64,
    fresh: Vec<IngestItem>,
    meta: &RequestMeta,
    now: DateTime<Utc>,
) -> bool {
    let count = fresh.len() as u64;
    if !state.args.gate.try_reserve(count) {
        return false;
    }
    let pairs: Vec<(Address, Address)> = fresh
        .iter()
        .filter_map(|i| Some((i.wallet?, i.interaction.referrer?)))
        .collect();
    let mut outcomes = Vec::new().into_iter();
    if !pairs.is_empty() {
        let product = state.args.config.id;
        let answer = match state.args.referral.get() {
            Some(referral) => ractor::call!(referral, |reply| ReferralMsg::Register {
                product,
                pairs: pairs.clone(),
                reply
            })
            .ok(),
            None => None,
        };
        match answer {
            Some(Ok(list)) => outcomes = list.into_iter(),
            _ => {
                state.args.gate.release(count);
                return false;
            }
        }
    }

    let ids: Vec<Uuid> = state.open[&tag].rows.iter().map(|r| r.id).collect();
    // Read before this batch's own refunds are remembered.
    let refunded: Vec<bool> = fresh
        .iter()
        .map(|i| refunded_before(state, &i.interaction))
        .collect();
    let Some(earned) = earn(state, &ids, &fresh, &refunded, now).await else {
        // Undo the referrals registered above: nothing of this will be written.
        let registered: Vec<(ReferralOutcome, Address, Address)> = pairs
            .iter()
            .map(|&(w, r)| (ReferralOutcome::Registered, w, r))
            .collect();
        forget_referral_pairs(state, registered);
        state.args.gate.release(count);
        return false;
    };
    let Earned {
        per_item,
        rewards,
        users,
        exhausted,
    } = earned;
    let refunds = refund_requests(state, &ids, &fresh);

    let request = state.open.get_mut(&tag).expect("open request");
    let mut rows = Vec::with_capacity(fresh.len());
    for (((item, pending), earnings), refunded) in fresh
        .into_iter()
        .zip(request.rows.iter_mut())
        .zip(per_item)
        .zip(refunded)
    {
        pending.rewards = earnings.granted;
        pending.charges = earnings.charges;
        // The natural key is read from the client's data, before any annotation.
        let dedup_key = item.interaction.natural_key(item.wallet);
        let mut data = item.interaction.data;
        let mut referrer_wallet = None;
        if let (Some(referrer), Some(wallet)) = (item.interaction.referrer, item.wallet) {
            let outcome = outcomes.next().unwrap_or(ReferralOutcome::AlreadyReferred);
            pending.referral = Some((outcome, wallet, referrer));
            if outcome == ReferralOutcome::Registered {
                referrer_wallet = Some(referrer);
            } else if let Value::Object(map) = &mut data {
                // A refused referral keeps the claimed referrer in its data.
                map.insert(
                    "claimed_referrer".into(),
                    Value::String(format!("{referrer:#x}")),
                );
                map.insert("referral".into(), Value::String(outcome.as_str().into()));
            }
        }
        let analytics = item.interaction.analytics;
        if refunded && let Value::Object(map) = &mut data {
            map.insert("refunded_before_purchase".into(), Value::Bool(true));
        }
        rows.push(InteractionRow {
            id: pending.id,
            product_id: state.args.config.id,
            wallet: item.wallet,
            kind: item.interaction.kind,
            data: data.to_string(),
            referrer_wallet,
            dedup_key,
            idempotency_key: item.interaction.idempotency_key,
            session_id: analytics.session_id,
            device_id: analytics.device_id,
            profile_id: analytics.profile_id,
            fallback_fingerprint: analytics.fallback_fingerprint,
            source: meta.source,
            source_ip: meta.source_ip,
            user_agent: meta.user_agent.clone(),
            created_at: now,
        });
    }
    request.remaining += rows.len();
    let set = WriteSet {
        product: myself.clone(),
        product_id: state.args.config.id,
        tag,
        request_id: meta.request_id.clone(),
        rows,
        rewards,
        users,
        exhausted,
        refunds,
    };
    let sent = match state.args.writer.get() {
        Some(writer) => writer.cast(WriterMsg::Write(set)).is_ok(),
        None => false,
    };
    if !sent {
        state.args.gate.release(count);
        request.remaining -= request.rows.len();
        forget_referrals(state, &state.open[&tag].rows);
        let rows = std::mem::take(&mut state.open.get_mut(&tag).expect("open").rows);
        for row in &rows {
            refund(state, tag, row);
        }
        state.open.get_mut(&tag).expect("open").rows = rows;
        return false;
    }
    true
}

fn flushed(state: &mut ProductState, tag: u64, outcome: FlushOutcome) {
    let Some(request) = state.open.get_mut(&tag) else {
        return;
    };
    let rows = std::mem::take(&mut request.rows);
    request.remaining -= rows.len();
    let now = Utc::now();
    let mut lost = Vec::new();
    if let FlushOutcome::Committed { refunds, .. } = &outcome {
        for refund in refunds {
            give_back(state, tag, &refund.effects);
        }
    }
    for mut row in rows {
        let result = match &outcome {
            FlushOutcome::Committed { skipped, refunds } => match skipped.get(&row.id) {
                None => ItemResult::Accepted {
                    id: row.id,
                    referral: row.referral.map(|(o, _, _)| o),
                    rewards: std::mem::take(&mut row.rewards),
                    refund: refunds
                        .iter()
                        .find(|r| r.refund_id == row.id)
                        .map(|r| RefundSummary {
                            purchase_id: r.purchase_id,
                            cancelled: r.cancelled,
                            kept: r.kept,
                        }),
                },
                Some(Some(existing)) => ItemResult::Duplicate { id: *existing },
                Some(None) => ItemResult::Unavailable,
            },
            FlushOutcome::Failed { .. } => ItemResult::Unavailable,
        };
        match &result {
            ItemResult::Accepted { id, .. } => remember(state, &row.keys, *id, now),
            ItemResult::Duplicate { id } => {
                // Stored earlier: this copy earned nothing.
                refund(state, tag, &row);
                remember(state, &row.keys, *id, now);
            }
            ItemResult::Unavailable => {
                refund(state, tag, &row);
                lost.push(row.referral);
            }
        }
        settle_row(state, tag, row, result);
    }
    forget_referral_pairs(state, lost.into_iter().flatten().collect());
    finish_if_done(state, tag);
}

/// Answers requests whose write set never came back within `stale_after` (the
/// writer restarted and lost it): unavailable, safe to retry.
fn expire_stale(state: &mut ProductState) {
    let stale_after = state.args.stale_after;
    let stale: Vec<u64> = state
        .open
        .iter()
        .filter(|(_, r)| !r.rows.is_empty() && r.opened.elapsed() > stale_after)
        .map(|(tag, _)| *tag)
        .collect();
    for tag in stale {
        let (rows, request_id) = match state.open.get_mut(&tag) {
            Some(request) => {
                let rows = std::mem::take(&mut request.rows);
                request.remaining -= rows.len();
                (rows, request.request_id.clone())
            }
            None => continue,
        };
        tracing::warn!(
            rows = rows.len(),
            %request_id,
            "write set never came back; answering unavailable"
        );
        forget_referrals(state, &rows);
        for row in rows {
            settle_row(state, tag, row, ItemResult::Unavailable);
        }
        finish_if_done(state, tag);
    }
}

/// Gives a row its result, and the same fate to everything waiting on its keys.
fn settle_row(state: &mut ProductState, tag: u64, row: PendingRow, result: ItemResult) {
    let follower = match &result {
        ItemResult::Accepted { id, .. } | ItemResult::Duplicate { id } => {
            ItemResult::Duplicate { id: *id }
        }
        ItemResult::Unavailable => ItemResult::Unavailable,
    };
    if let Some(request) = state.open.get_mut(&tag) {
        request.results[row.position] = Some(result);
    }
    for key in &row.keys {
        let Some((_, waiters)) = state.pending.remove(key) else {
            continue;
        };
        for (waiter_tag, position) in waiters {
            if let Some(request) = state.open.get_mut(&waiter_tag) {
                request.results[position] = Some(follower.clone());
                request.remaining -= 1;
            }
            if waiter_tag != tag {
                finish_if_done(state, waiter_tag);
            }
        }
    }
}

/// Answers the request once every item has its result; counts outcomes.
fn finish_if_done(state: &mut ProductState, tag: u64) {
    if state
        .open
        .get(&tag)
        .is_none_or(|r| r.remaining > 0 || !r.rows.is_empty())
    {
        return;
    }
    let request = state.open.remove(&tag).expect("checked");
    let mut counts: HashMap<(InteractionType, (&'static str, &'static str)), u64> = HashMap::new();
    let results: Vec<(usize, ItemResult)> = request
        .results
        .into_iter()
        .zip(request.indexes)
        .zip(request.kinds)
        .map(|((result, index), kind)| {
            let result = result.unwrap_or(ItemResult::Unavailable);
            let outcome = match result {
                ItemResult::Accepted { .. } => ("accepted", "none"),
                ItemResult::Duplicate { .. } => ("duplicate", "none"),
                ItemResult::Unavailable => ("unavailable", "writer"),
            };
            *counts.entry((kind, outcome)).or_default() += 1;
            (index, result)
        })
        .collect();
    for ((kind, (outcome, reason)), n) in counts {
        metrics::counter!(telemetry::INTERACTIONS_TOTAL, "type" => kind.as_str(), "outcome" => outcome, "reason" => reason)
            .increment(n);
    }
    let _ = request.reply.send(results);
}

#[derive(Clone, Default)]
struct ItemEarnings {
    granted: Vec<GrantedReward>,
    charges: Vec<(i64, U256)>,
}

/// What the fresh items earn from the active campaigns, charged in memory now.
struct Earned {
    /// Per item: its rewards and what each campaign was charged for it.
    per_item: Vec<ItemEarnings>,
    rewards: Vec<RewardRow>,
    users: Vec<UserReward>,
    exhausted: Vec<i64>,
}

/// Evaluates every active campaign for every fresh item, in order, charging
/// budgets and per-user counters in memory (so concurrent requests can never
/// overspend); `None` when the referral chains cannot be had. `refunded`: per
/// item, a purchase of an order refunded before it (earns nothing).
async fn earn(
    state: &mut ProductState,
    ids: &[Uuid],
    fresh: &[IngestItem],
    refunded: &[bool],
    now: DateTime<Utc>,
) -> Option<Earned> {
    let mut earned = Earned {
        per_item: vec![ItemEarnings::default(); fresh.len()],
        rewards: Vec::new(),
        users: Vec::new(),
        exhausted: Vec::new(),
    };
    let matched = |item: &IngestItem, refunded: bool| {
        item.wallet.is_some()
            && !refunded
            && state
                .campaigns
                .iter()
                .any(|c| c.trigger == item.interaction.kind && c.is_live(now))
    };
    let rewardable: Vec<(usize, Address)> = fresh
        .iter()
        .enumerate()
        .filter(|(index, item)| matched(item, refunded[*index]))
        .filter_map(|(index, item)| Some((index, item.wallet?)))
        .collect();
    if rewardable.is_empty() {
        return Some(earned);
    }
    let wallets: Vec<Address> = rewardable.iter().map(|(_, w)| *w).collect();
    let product = state.args.config.id;
    let chains = referral_edges(state).await?.chains(&wallets);
    for ((index, wallet), chain) in rewardable.into_iter().zip(&chains) {
        let (item, id) = (&fresh[index], &ids[index]);
        for campaign in state
            .campaigns
            .iter_mut()
            .filter(|c| c.trigger == item.interaction.kind)
        {
            let counter = (campaign.id, wallet);
            // Counted only for campaigns with a per-user cap.
            let user_rewards = match campaign.max_rewards_per_user {
                Some(_) => state.user_counts.get(&counter).copied().unwrap_or(0),
                None => 0,
            };
            let occurrence = Occurrence {
                interaction_id: *id,
                kind: item.interaction.kind,
                wallet,
                chain,
                user_rewards,
                now,
            };
            let Ok(payouts) = campaign.evaluate(&occurrence) else {
                continue;
            };
            // An unlimited campaign's spend is the sum of its rewards: nothing to
            // charge (nor to give back if the row is not stored).
            let capped = !campaign.budget_cap.is_zero();
            let charged = if capped { total(&payouts) } else { U256::ZERO };
            campaign.used_budget += charged;
            if campaign.max_rewards_per_user.is_some() {
                *state.user_counts.entry(counter).or_default() += 1;
            }
            let available_at = now + chrono::Duration::seconds(campaign.lockup_seconds as i64);
            let mut user_amount = U256::ZERO;
            for payout in payouts {
                if payout.recipient_type == RecipientType::User {
                    user_amount = payout.amount;
                }
                earned.rewards.push(RewardRow {
                    id: Uuid::now_v7(),
                    product_id: product,
                    campaign_id: campaign.id,
                    interaction_id: *id,
                    wallet: payout.recipient,
                    token: campaign.token,
                    amount: payout.amount,
                    recipient_type: payout.recipient_type.as_str(),
                    available_at,
                    created_at: now,
                    charged: capped,
                });
                earned.per_item[index].granted.push(GrantedReward {
                    campaign_id: campaign.id,
                    recipient: payout.recipient,
                    recipient_type: payout.recipient_type,
                    token: campaign.token,
                    amount: payout.amount,
                });
            }
            if campaign.max_rewards_per_user.is_some() {
                earned.users.push(UserReward {
                    campaign_id: campaign.id,
                    wallet,
                    interaction_id: *id,
                    amount: user_amount,
                    at: now,
                });
            }
            earned.per_item[index].charges.push((campaign.id, charged));
            if campaign.is_exhausted() {
                campaign.status = CampaignStatus::BudgetExhausted;
                earned.exhausted.push(campaign.id);
            }
        }
    }
    Some(earned)
}

/// The product's referral edges: the handle held since the last call while the
/// referral actor's cache still holds them, else asked for again.
async fn referral_edges(state: &mut ProductState) -> Option<Arc<ProductEdges>> {
    if let Some(edges) = state.edges.upgrade().filter(|e| e.is_current()) {
        return Some(edges);
    }
    let referral = state.args.referral.get()?;
    let product = state.args.config.id;
    let edges = ractor::call!(referral, |reply| ReferralMsg::Edges { product, reply })
        .ok()?
        .ok()?;
    state.edges = Arc::downgrade(&edges);
    Some(edges)
}

/// Whether the outcome of write set `tag` still changes campaign `campaign_id`'s
/// budget and counts in memory (not when the campaign was re-read after it).
fn still_counts(state: &ProductState, campaign_id: i64, tag: u64) -> bool {
    state
        .reloaded
        .get(&campaign_id)
        .is_none_or(|first| tag >= *first)
}

/// Gives back what a row of write set `tag` that was not stored charged.
fn refund(state: &mut ProductState, tag: u64, row: &PendingRow) {
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
fn give_back(state: &mut ProductState, tag: u64, effects: &RefundEffects) {
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

/// A purchase of an order whose refund came first: stored, never rewarded.
fn refunded_before(state: &ProductState, interaction: &Interaction) -> bool {
    interaction.kind == InteractionType::PurchaseCompleted
        && order_id(&interaction.data).is_some_and(|id| state.refunded_orders.contains(&id))
}

/// A refund whose purchase is still being written.
fn purchase_in_flight(state: &ProductState, interaction: &Interaction) -> bool {
    interaction.kind == InteractionType::PurchaseRefunded
        && order_id(&interaction.data).is_some_and(|id| {
            let key = purchase_key(InteractionType::PurchaseCompleted, &id);
            state.pending.contains_key(&DedupKey::Natural(key))
        })
}

/// The refunds among the fresh items, remembered from now on so that a purchase
/// arriving later earns nothing.
fn refund_requests(
    state: &mut ProductState,
    ids: &[Uuid],
    fresh: &[IngestItem],
) -> Vec<RefundRequest> {
    let mut requests = Vec::new();
    for (item, id) in fresh.iter().zip(ids) {
        if item.interaction.kind != InteractionType::PurchaseRefunded {
            continue;
        }
        if let Some(order_id) = order_id(&item.interaction.data) {
            state.refunded_orders.insert(order_id.clone());
            requests.push(RefundRequest {
                refund_id: *id,
                product_id: state.args.config.id,
                order_id,
            });
        }
    }
    requests
}

/// Why a budget cap could not be set.
#[derive(Debug, thiserror::Error)]
pub enum RecapError {
    #[error("the writer is restarting")]
    WriterDown,
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Sets a budget cap on an unlimited campaign through the product's flush lane
/// and waits for it (interactions queue meanwhile): every reward computed before
/// is in the spend the cap starts from, every one computed after is charged.
async fn recap(state: &mut ProductState, campaign_id: i64, cap: U256) -> Result<Recap, RecapError> {
    let writer = state.args.writer.get().ok_or(RecapError::WriterDown)?;
    let (reply, done) = oneshot::channel();
    let request = RecapRequest {
        product_id: state.args.config.id,
        campaign_id,
        cap,
        reply,
    };
    writer
        .cast(WriterMsg::Recap(request))
        .map_err(|_| RecapError::WriterDown)?;
    let recap = done.await.map_err(|_| RecapError::WriterDown)??;
    if let Recap::Set { used } = recap
        && let Some(campaign) = state.campaigns.iter_mut().find(|c| c.id == campaign_id)
    {
        campaign.budget_cap = cap;
        campaign.used_budget = used;
    }
    Ok(recap)
}

/// Applies a campaign change made through the API. The in-memory budget use,
/// which includes writes in flight, is kept when it is ahead of the database's.
async fn campaign_updated(
    state: &mut ProductState,
    row: &CampaignRow,
) -> Result<(), ActorProcessingErr> {
    let Some(mut rule) = row.rule() else {
        return Ok(());
    };
    let existing = state.campaigns.iter().position(|c| c.id == rule.id);
    if rule.status != CampaignStatus::Active {
        if let Some(index) = existing {
            state.campaigns.remove(index);
        }
        return Ok(());
    }
    match existing {
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
async fn settle(args: &ProductArgs) -> Result<(), ActorProcessingErr> {
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

async fn load_user_counts(
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

fn committed_duplicate(
    state: &ProductState,
    keys: &[DedupKey],
    now: DateTime<Utc>,
) -> Option<Uuid> {
    let product = state.args.config.id;
    keys.iter().find_map(|key| match key {
        DedupKey::Window(hash) => state
            .window
            .get(hash)
            .filter(|(at, _)| now - *at < state.window_length)
            .map(|(_, id)| *id),
        other => state.args.dedup.get(&(product, other.clone())),
    })
}

fn remember(state: &mut ProductState, keys: &[DedupKey], id: Uuid, now: DateTime<Utc>) {
    let product = state.args.config.id;
    for key in keys {
        match key {
            DedupKey::Window(hash) => {
                state.window.insert(*hash, (now, id));
            }
            other => state.args.dedup.insert((product, other.clone()), id),
        }
    }
}

/// Drops window entries older than the window, at most once a second.
fn prune_window(state: &mut ProductState, now: DateTime<Utc>) {
    if now - state.last_prune < chrono::Duration::seconds(1) {
        return;
    }
    state.last_prune = now;
    let window = state.window_length;
    state.window.retain(|_, (at, _)| now - *at < window);
}

fn forget_referrals(state: &ProductState, rows: &[PendingRow]) {
    forget_referral_pairs(state, rows.iter().filter_map(|r| r.referral).collect());
}

/// Tells the referral actor to drop edges whose row was not stored.
fn forget_referral_pairs(state: &ProductState, lost: Vec<(ReferralOutcome, Address, Address)>) {
    let pairs: Vec<(Address, Address)> = lost
        .into_iter()
        .filter(|(o, _, _)| *o == ReferralOutcome::Registered)
        .map(|(_, w, r)| (w, r))
        .collect();
    if let (false, Some(referral)) = (pairs.is_empty(), state.args.referral.get()) {
        let _ = referral.cast(ReferralMsg::Forget {
            product: state.args.config.id,
            pairs,
        });
    }
}
