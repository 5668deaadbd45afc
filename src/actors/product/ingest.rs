//! An ingest request's path through the product actor: dedup against the window
//! and the keys in flight, earnings, the write set to the writer, and the answers
//! once the writer reports the commit (or a stale request expires).

use std::collections::{HashMap, HashSet};

use alloy::primitives::Address;
use chrono::{DateTime, Utc};
use ractor::ActorRef;
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::budgets::{give_back, refund};
use super::earn::{Earned, earn};
use super::{
    IngestItem, ItemResult, OpenRequest, PendingRow, ProductMsg, ProductState, RefundSummary,
    RequestMeta,
};
use crate::actors::referral::ReferralMsg;
use crate::actors::writer::{FlushOutcome, WriteSet, WriterMsg};
use crate::db::interactions::InteractionRow;
use crate::db::refunds::RefundRequest;
use crate::domain::interaction::{DedupKey, Interaction, InteractionType, order_id, purchase_key};
use crate::domain::referral::ReferralOutcome;
use crate::telemetry;

pub(super) async fn ingest(
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
        sent_at: None,
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
                refund_order: None,
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
    // (position in the batch, wallet, referrer) of every referral.
    let referring: Vec<(usize, Address, Address)> = fresh
        .iter()
        .enumerate()
        .filter_map(|(index, i)| Some((index, i.wallet?, i.interaction.referrer?)))
        .collect();
    let pairs: Vec<(Address, Address)> = referring.iter().map(|&(_, w, r)| (w, r)).collect();
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
    let newly_referred = referring
        .iter()
        .zip(outcomes.clone())
        .find(|(_, outcome)| *outcome == ReferralOutcome::Registered)
        .map(|(&(index, wallet, _), _)| (index, wallet));
    let Some(earned) = earn(state, &ids, &fresh, &refunded, newly_referred, now).await else {
        // Undo the referrals registered above (only those: an edge found already
        // there stays): nothing of this will be written.
        let decided: Vec<(ReferralOutcome, Address, Address)> = pairs
            .iter()
            .zip(outcomes)
            .map(|(&(w, r), outcome)| (outcome, w, r))
            .collect();
        forget_referral_pairs(state, decided).await;
        state.args.gate.release(count);
        return false;
    };
    let Earned {
        per_item,
        rewards,
        users,
        exhausted,
    } = earned;
    let (refunds, marked) = refund_requests(state, &ids, &fresh);

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
        if marked.contains(&pending.id) {
            pending.refund_order = order_id(&item.interaction.data);
        }
        // The natural key is read from the client's data, before any annotation.
        let dedup_key = item.interaction.natural_key(item.wallet);
        let mut data = item.interaction.data;
        let mut referrer_wallet = None;
        if let (Some(referrer), Some(wallet)) = (item.interaction.referrer, item.wallet) {
            let outcome = outcomes.next().unwrap_or(ReferralOutcome::AlreadyReferred);
            pending.referral = Some((outcome, wallet, referrer));
            if outcome == ReferralOutcome::Registered {
                referrer_wallet = Some(referrer);
                state.referrals_in_flight.insert(wallet, tag);
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
    if sent {
        request.sent_at = Some(std::time::Instant::now());
    } else {
        state.args.gate.release(count);
        request.remaining -= request.rows.len();
        let lost = state.open[&tag].rows.iter().filter_map(|r| r.referral);
        forget_referral_pairs(state, lost.collect()).await;
        let rows = std::mem::take(&mut state.open.get_mut(&tag).expect("open").rows);
        for row in &rows {
            refund(state, tag, row);
            unrefund(state, row);
        }
        state.open.get_mut(&tag).expect("open").rows = rows;
        return false;
    }
    true
}

pub(super) async fn flushed(state: &mut ProductState, tag: u64, outcome: FlushOutcome) {
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
                // Stored earlier: this copy earned nothing, and a referral it
                // registered is not in the database (the row holding it was not
                // inserted).
                refund(state, tag, &row);
                remember(state, &row.keys, *id, now);
                lost.push(row.referral);
            }
            ItemResult::Unavailable => {
                refund(state, tag, &row);
                unrefund(state, &row);
                lost.push(row.referral);
            }
        }
        settle_row(state, tag, row, result);
    }
    forget_referral_pairs(state, lost.into_iter().flatten().collect()).await;
    finish_if_done(state, tag);
}

/// Answers requests whose write set had been with the writer for longer than
/// `stale_after` when the tick fired (`tick`): unavailable, safe to retry. True
/// if any did: the writer lost their write set (it restarted), or their flush
/// is still running and may yet commit. Either way this actor no longer knows
/// what the database holds of them (a late commit's referral edges, window keys
/// and budget charges, or a lost set's charges), so it must be rebuilt from the
/// database once they have settled.
pub(super) fn expire_stale(state: &mut ProductState, tick: std::time::Instant) -> bool {
    let stale_after = state.args.stale_after;
    let stale: Vec<u64> = state
        .open
        .iter()
        .filter(|(_, r)| !r.rows.is_empty() && sent_before(r.sent_at, tick, stale_after))
        .map(|(tag, _)| *tag)
        .collect();
    let expired = !stale.is_empty();
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
        // The actor stops now: the next one reloads the referrals and refunds
        // these rows stored, if they are.
        for row in rows {
            settle_row(state, tag, row, ItemResult::Unavailable);
        }
        finish_if_done(state, tag);
    }
    expired
}

/// Whether a write set sent at `sent_at` had been with the writer for longer
/// than `stale_after` at `tick`: measured to the tick's own instant, not to when
/// the actor got to it, so a report queued behind the tick does not count late.
fn sent_before(
    sent_at: Option<std::time::Instant>,
    tick: std::time::Instant,
    stale_after: std::time::Duration,
) -> bool {
    sent_at.is_some_and(|sent| tick.saturating_duration_since(sent) > stale_after)
}

/// A refund row that was not stored: its order is no longer known as refunded,
/// if this row is what marked it (`refund_order` is set only then: a retry of a
/// refund already stored must not unmark it).
fn unrefund(state: &mut ProductState, row: &PendingRow) {
    if let Some(order) = &row.refund_order {
        state.refunded_orders.remove(order);
    }
}

/// Gives a row its result, and the same fate to everything waiting on its keys.
fn settle_row(state: &mut ProductState, tag: u64, row: PendingRow, result: ItemResult) {
    if let Some((ReferralOutcome::Registered, wallet, _)) = row.referral
        && state.referrals_in_flight.get(&wallet) == Some(&tag)
    {
        state.referrals_in_flight.remove(&wallet);
    }
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
/// arriving later earns nothing; and those of them whose order was not known as
/// refunded before (only they unmark it if they are not stored).
fn refund_requests(
    state: &mut ProductState,
    ids: &[Uuid],
    fresh: &[IngestItem],
) -> (Vec<RefundRequest>, HashSet<Uuid>) {
    let (mut requests, mut marked) = (Vec::new(), HashSet::new());
    for (item, id) in fresh.iter().zip(ids) {
        if item.interaction.kind != InteractionType::PurchaseRefunded {
            continue;
        }
        if let Some(order_id) = order_id(&item.interaction.data) {
            if state.refunded_orders.insert(order_id.clone()) {
                marked.insert(*id);
            }
            requests.push(RefundRequest {
                refund_id: *id,
                product_id: state.args.config.id,
                order_id,
            });
        }
    }
    (requests, marked)
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

/// Has the referral actor drop edges whose row was not stored, and waits until
/// it has: a chain read after this (a held request's) must not have them.
async fn forget_referral_pairs(
    state: &ProductState,
    lost: Vec<(ReferralOutcome, Address, Address)>,
) {
    let pairs: Vec<(Address, Address)> = lost
        .into_iter()
        .filter(|(o, _, _)| *o == ReferralOutcome::Registered)
        .map(|(_, w, r)| (w, r))
        .collect();
    if let (false, Some(referral)) = (pairs.is_empty(), state.args.referral.get()) {
        let product = state.args.config.id;
        // A referral actor that is gone takes its edges with it: the next one
        // loads what is stored.
        let _ = ractor::call!(referral, |reply| ReferralMsg::Forget {
            product,
            pairs,
            reply
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::sent_before;

    #[test]
    fn staleness_is_measured_to_the_ticks_instant() {
        let after = Duration::from_secs(5);
        let sent = Instant::now();
        // However late the actor reads this tick, it fired 1 s after the send.
        assert!(!sent_before(
            Some(sent),
            sent + Duration::from_secs(1),
            after
        ));
        assert!(sent_before(
            Some(sent),
            sent + Duration::from_secs(6),
            after
        ));
        // A tick stamped before the send (queued ahead of it) is never stale.
        assert!(!sent_before(
            Some(sent + Duration::from_secs(9)),
            sent,
            after
        ));
        // Nothing sent: nothing for the writer to lose.
        assert!(!sent_before(None, sent + Duration::from_secs(60), after));
    }
}
