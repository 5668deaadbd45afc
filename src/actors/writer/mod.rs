//! Group commit. Product actors hand the writer write sets (the rows of one
//! request for one product); the writer buffers them per flush lane and, whenever
//! a lane is free, writes everything buffered for it (up to
//! `writer_max_batch_rows`) in one transaction — so at low load a row waits for
//! one commit, and at high load batches grow by themselves. After the commit (or
//! failure) each product actor gets the outcome of its write set and answers its
//! waiting requests.
//!
//! Each product belongs to one lane (by its id), so concurrent flushes never write
//! the same product's rows: campaign budgets, per-user counters and unique keys of
//! one product are only ever locked by one transaction at a time, and lanes never
//! wait for each other or deadlock.
//!
//! Admission is bounded: a product actor reserves rows in the shared
//! [`WriterGate`] before sending; when the gate is full, or the database is known
//! to be down, the request is refused at once (503) instead of queued.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{B256, U256};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::product::ProductMsg;
use super::push_directory::PushDirectoryMsg;
use super::supervisor::ActorSlot;
use crate::db::campaigns::Recap;
use crate::db::flush::MayExhaust;
use crate::db::interactions::InteractionRow;
use crate::db::refunds::{RefundOutcome, RefundRequest};
use crate::db::rewards::{RewardRow, UserReward};
use crate::db::{self, DbError};
use crate::telemetry;
use crate::telemetry::request_id::RequestId;

mod batch;
mod gate;

use batch::flush;
use gate::FlushRunning;
pub use gate::WriterGate;

pub const KIND: &str = "writer";

/// The rows of one request for one product, and what they earned.
pub struct WriteSet {
    pub product: ActorRef<ProductMsg>,
    /// The product's id: it picks the flush lane.
    pub product_id: B256,
    /// The product actor's request tag, returned with the outcome.
    pub tag: u64,
    /// The HTTP request the rows came with, named in the flush's log line.
    pub request_id: RequestId,
    pub rows: Vec<InteractionRow>,
    pub rewards: Vec<RewardRow>,
    pub users: Vec<UserReward>,
    /// Campaigns this write set may exhaust (decided on the stored spend).
    pub exhausted: Vec<MayExhaust>,
    /// Refund interactions among `rows`: their purchases' rewards to cancel.
    pub refunds: Vec<RefundRequest>,
}

#[derive(Debug, Clone)]
pub enum FlushOutcome {
    /// Committed. Rows a unique index refused map to the id holding their key
    /// (`None`: no such row, the refusal came from the one-referrer index).
    /// `refunds`: what the set's stored refunds did.
    Committed {
        skipped: HashMap<Uuid, Option<Uuid>>,
        refunds: Vec<RefundOutcome>,
    },
    /// Nothing of the write set was stored.
    Failed { retryable: bool },
}

/// A budget cap for an unlimited campaign, set in its product's lane: after the
/// flushes of everything its product actor sent before, before anything after.
pub struct RecapRequest {
    pub product_id: B256,
    pub campaign_id: i64,
    pub cap: U256,
    pub reply: oneshot::Sender<Result<Recap, DbError>>,
}

pub enum WriterMsg {
    Write(WriteSet),
    Recap(RecapRequest),
    /// Answered once every write set the product's actor sent before is flushed
    /// (committed or failed): the database then holds all it will ever hold of them.
    /// At once when the product has nothing queued or being written.
    Settle {
        product_id: B256,
        reply: oneshot::Sender<()>,
    },
    /// A flush lane finished.
    FlushDone {
        lane: usize,
        rows: u64,
        database_down: bool,
    },
    /// While the database is down: try it again.
    Probe,
}

#[derive(Clone)]
pub struct WriterArgs {
    pub pool: PgPool,
    pub gate: Arc<WriterGate>,
    pub max_batch_rows: usize,
    pub flush_concurrency: usize,
    pub retry_interval: Duration,
    /// Told after each commit how many rewards of each token it wrote.
    pub pushers: ActorSlot<PushDirectoryMsg>,
}

pub struct WriterState {
    args: WriterArgs,
    /// Per lane: its buffered write sets, and whether it is flushing.
    lanes: Vec<Lane>,
    probing: bool,
    /// Number of the next flush, for log lines.
    next_flush: u64,
}

#[derive(Clone, Copy, Default)]
pub struct Writer;

impl Actor for Writer {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WriterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A restarted writer first lets the flushes its predecessor started finish
        // (they answer their product actors themselves): until then nothing it
        // would write or settle could know what they will have stored. Then it
        // starts empty: the write sets its predecessor held but had not started
        // died with it, and their product actors expire them.
        args.gate.no_flush_running().await;
        args.gate.reset();
        metrics::gauge!(telemetry::MAILBOX_DEPTH, "actor" => KIND).set(0.0);
        let lanes = (0..args.flush_concurrency.max(1))
            .map(|_| Lane::default())
            .collect();
        Ok(WriterState {
            args,
            lanes,
            probing: false,
            next_flush: 0,
        })
    }

    /// Shutdown: the front door has drained, but write what is still buffered.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A recap or settle still queued is dropped: its caller is told the writer
        // stopped.
        let sets: Vec<WriteSet> = state
            .lanes
            .iter_mut()
            .flat_map(|lane| lane.buffer.drain(..))
            .filter_map(|entry| match entry {
                LaneEntry::Write(set) => Some(set),
                LaneEntry::Recap(_) | LaneEntry::Settle(_) => None,
            })
            .collect();
        if !sets.is_empty() {
            flush(
                &state.args.pool,
                &state.args.pushers,
                sets,
                state.next_flush,
            )
            .await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WriterMsg::Write(set) => {
                let lane = lane_of(&set.product_id, state.lanes.len());
                state.lanes[lane].buffer.push_back(LaneEntry::Write(set));
            }
            WriterMsg::Recap(request) => {
                let lane = lane_of(&request.product_id, state.lanes.len());
                state.lanes[lane]
                    .buffer
                    .push_back(LaneEntry::Recap(request));
            }
            WriterMsg::Settle { product_id, reply } => {
                let lane = lane_of(&product_id, state.lanes.len());
                if state.lanes[lane].holds(&product_id) {
                    state.lanes[lane].buffer.push_back(LaneEntry::Settle(reply));
                    state.args.gate.settle_queued();
                } else {
                    let _ = reply.send(());
                }
            }
            WriterMsg::FlushDone {
                lane,
                rows,
                database_down,
            } => {
                state.lanes[lane].flushing.clear();
                state.args.gate.release(rows);
                if database_down && !state.probing {
                    state.args.gate.set_healthy(false);
                    state.probing = true;
                    myself.send_after(state.args.retry_interval, || WriterMsg::Probe);
                }
            }
            WriterMsg::Probe => {
                if db::ping(&state.args.pool).await.is_ok() {
                    tracing::info!("database reachable again; accepting interactions");
                    state.args.gate.set_healthy(true);
                    state.probing = false;
                } else {
                    myself.send_after(state.args.retry_interval, || WriterMsg::Probe);
                }
            }
        }
        start_flushes(&myself, state);
        metrics::gauge!(telemetry::MAILBOX_DEPTH, "actor" => KIND)
            .set(state.args.gate.pending_rows() as f64);
        Ok(())
    }
}

#[derive(Default)]
struct Lane {
    buffer: VecDeque<LaneEntry>,
    /// The products of the flush or recap under way; empty when the lane is free.
    flushing: Vec<B256>,
}

impl Lane {
    fn is_busy(&self) -> bool {
        !self.flushing.is_empty()
    }

    /// Whether something `product`'s actor sent is still queued or being written.
    fn holds(&self, product: &B256) -> bool {
        self.flushing.contains(product)
            || self.buffer.iter().any(|entry| match entry {
                LaneEntry::Write(set) => set.product_id == *product,
                LaneEntry::Recap(request) => request.product_id == *product,
                LaneEntry::Settle(_) => false,
            })
    }
}

/// What a lane does, in order.
enum LaneEntry {
    Write(WriteSet),
    Recap(RecapRequest),
    /// Answered when it reaches the front of a free lane.
    Settle(oneshot::Sender<()>),
}

/// The lane of a product: stable for the writer's life.
fn lane_of(product: &B256, lanes: usize) -> usize {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&product[..8]);
    (u64::from_le_bytes(prefix) % lanes as u64) as usize
}

/// Starts the next entry of every free lane: a flush of the write sets at its
/// front (up to `writer_max_batch_rows`), or a recap; settles at the front are
/// answered on the way.
fn start_flushes(myself: &ActorRef<WriterMsg>, state: &mut WriterState) {
    for (index, lane) in state.lanes.iter_mut().enumerate() {
        if lane.is_busy() {
            continue;
        }
        while let Some(LaneEntry::Settle(reply)) = lane
            .buffer
            .pop_front_if(|entry| matches!(entry, LaneEntry::Settle(_)))
        {
            let _ = reply.send(());
            state.args.gate.settle_answered();
        }
        let Some(entry) = lane.buffer.pop_front() else {
            continue;
        };
        let pool = state.args.pool.clone();
        let first = match entry {
            LaneEntry::Write(set) => set,
            LaneEntry::Settle(_) => unreachable!("settles at the front are answered above"),
            LaneEntry::Recap(request) => {
                lane.flushing.push(request.product_id);
                run_on_lane(myself, &state.args.gate, index, 0, async move {
                    let result =
                        db::campaigns::recap(&pool, request.campaign_id, request.cap).await;
                    let database_down = result.as_ref().is_err_and(DbError::is_retryable);
                    let _ = request.reply.send(result);
                    database_down
                });
                continue;
            }
        };
        let mut rows = first.rows.len();
        let mut sets = vec![first];
        while let Some(LaneEntry::Write(set)) = lane.buffer.pop_front_if(|entry| {
            matches!(entry, LaneEntry::Write(set) if rows + set.rows.len() <= state.args.max_batch_rows)
        }) {
            rows += set.rows.len();
            sets.push(set);
        }
        lane.flushing.extend(sets.iter().map(|set| set.product_id));
        let number = state.next_flush;
        state.next_flush += 1;
        let pushers = state.args.pushers.clone();
        run_on_lane(myself, &state.args.gate, index, rows, async move {
            flush(&pool, &pushers, sets, number).await
        });
    }
}

/// Runs `work` for lane `index`, which stays busy until it is done; then the
/// lane is freed and its `rows` released. `work` says whether the database
/// looks down.
fn run_on_lane(
    myself: &ActorRef<WriterMsg>,
    gate: &Arc<WriterGate>,
    index: usize,
    rows: usize,
    work: impl Future<Output = bool> + Send + 'static,
) {
    let myself = myself.clone();
    let running = FlushRunning::start(gate);
    tokio::spawn(async move {
        let database_down = work.await;
        drop(running);
        let _ = myself.cast(WriterMsg::FlushDone {
            lane: index,
            rows: rows as u64,
            database_down,
        });
    });
}
