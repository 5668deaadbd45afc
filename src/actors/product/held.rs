//! Requests that read a referral still being written wait for its outcome.
//!
//! A referral's edge is in memory from its registration on, before its row is
//! stored. A later request whose rewards or referral decision read that edge
//! would be written after it, but not with it: if the referral's write then
//! fails (a broken connection, a refused batch, a writer that restarts), the
//! later write may still commit and pay a referrer that no stored referral
//! names. So such a request is held, in order with the other requests of its
//! wallets, until the writes it reads have settled; it still counts in the
//! product's mailbox (the front door's bound), and the HTTP request timeout
//! bounds its wait.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use alloy::primitives::Address;
use chrono::Utc;
use ractor::ActorRef;
use tokio::sync::oneshot;

use super::earn::referral_edges;
use super::ingest::ingest;
use super::{IngestItem, ItemResult, ProductMsg, ProductState, RequestMeta};
use crate::domain::campaign::MAX_DEPTH;

/// A request held until the referrals it reads are stored (or surely not).
pub(super) struct Held {
    items: Vec<IngestItem>,
    meta: Arc<RequestMeta>,
    reply: oneshot::Sender<Vec<(usize, ItemResult)>>,
}

impl Held {
    fn wallets(&self) -> impl Iterator<Item = Address> + '_ {
        self.items.iter().filter_map(|i| i.wallet)
    }
}

/// Ingests the request now, or holds it: while it reads a referral in flight, or
/// one of its wallets has a request held before it.
pub(super) async fn admit(
    myself: &ActorRef<ProductMsg>,
    state: &mut ProductState,
    items: Vec<IngestItem>,
    meta: Arc<RequestMeta>,
    reply: oneshot::Sender<Vec<(usize, ItemResult)>>,
) {
    let request = Held { items, meta, reply };
    let behind = state
        .held
        .iter()
        .any(|earlier| earlier.wallets().any(|w| request.wallets().any(|x| x == w)));
    if behind || reads_in_flight(state, &request).await {
        hold(state, request);
        return;
    }
    take_up(myself, state, request).await;
}

/// Takes up, in order, the held requests that no longer wait: called once a
/// write set's outcome is known.
pub(super) async fn resume(myself: &ActorRef<ProductMsg>, state: &mut ProductState) {
    if state.held.is_empty() {
        return;
    }
    let mut still: HashSet<Address> = HashSet::new();
    for request in std::mem::take(&mut state.held) {
        let waits = !request.reply.is_closed()
            && (request.wallets().any(|w| still.contains(&w))
                || reads_in_flight(state, &request).await);
        if waits {
            still.extend(request.wallets());
            state.held.push_back(request);
            continue;
        }
        let n = request.items.len() as u64;
        state.args.held.fetch_sub(n, Ordering::AcqRel);
        if request.reply.is_closed() {
            // Its client gave up (the request timed out): nothing is stored.
            state.args.queued.fetch_sub(n, Ordering::AcqRel);
            continue;
        }
        take_up(myself, state, request).await;
    }
}

fn hold(state: &mut ProductState, request: Held) {
    state
        .args
        .held
        .fetch_add(request.items.len() as u64, Ordering::AcqRel);
    state.held.push_back(request);
}

async fn take_up(myself: &ActorRef<ProductMsg>, state: &mut ProductState, request: Held) {
    let Held { items, meta, reply } = request;
    state
        .args
        .queued
        .fetch_sub(items.len() as u64, Ordering::AcqRel);
    ingest(myself, state, items, &meta, reply).await;
}

/// Whether the request reads an edge registered by a write still in flight: an
/// item a live campaign rewards reads its wallet's chain (as deep as a campaign
/// pays), and a referral reads its wallet's own edge and its referrer's whole
/// chain (the cycle check).
async fn reads_in_flight(state: &mut ProductState, request: &Held) -> bool {
    if state.referrals_in_flight.is_empty() {
        return false;
    }
    let now = Utc::now();
    let mut reads = Vec::new();
    for item in &request.items {
        let Some(wallet) = item.wallet else { continue };
        let kind = item.interaction.kind;
        if let Some(referrer) = item.interaction.referrer {
            reads.push((wallet, Some(1)));
            reads.push((referrer, None));
        }
        if state
            .campaigns
            .iter()
            .any(|c| c.trigger == kind && c.is_live(now))
        {
            reads.push((wallet, Some(usize::from(MAX_DEPTH))));
        }
    }
    if reads.is_empty() {
        return false;
    }
    // Without the edges the request fails in `ingest` anyway.
    let Some(edges) = referral_edges(state).await else {
        return false;
    };
    edges.reads_pending(&reads, |w| state.referrals_in_flight.contains_key(w))
}
