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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sqlx::{Acquire, PgPool};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::product::ProductMsg;
use super::push_directory::PushDirectoryMsg;
use super::supervisor::ActorSlot;
use crate::db::campaigns::Recap;
use crate::db::flush::{self, FlushRows};
use crate::db::interactions::InteractionRow;
use crate::db::refunds::{self, RefundOutcome, RefundRequest};
use crate::db::rewards::{RewardRow, UserReward};
use crate::db::{self, DbError};
use crate::domain::ids::to_hex;
use crate::domain::refund::RefundEffects;
use crate::telemetry;
use crate::telemetry::request_id::RequestId;

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
    /// Campaigns whose budget this write set exhausts.
    pub exhausted: Vec<i64>,
    /// Refund interactions among `rows`: their purchases' rewards to cancel.
    pub refunds: Vec<RefundRequest>,
}

/// Everything one flush writes.
#[derive(Default)]
struct Batch {
    rows: Vec<InteractionRow>,
    rewards: Vec<RewardRow>,
    users: Vec<UserReward>,
    exhausted: Vec<i64>,
    refunds: Vec<RefundRequest>,
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

/// The writer's state shared with the front door and across its restarts: rows it
/// holds and database health (admission), product actors waiting for it to settle
/// their writes, and flushes still running.
#[derive(Debug)]
pub struct WriterGate {
    pending_rows: AtomicU64,
    max_pending_rows: u64,
    healthy: AtomicBool,
    settles_waiting: AtomicU64,
    /// Flushes started and not finished, by any incarnation of the writer: a
    /// flush runs on its own task, which outlives a writer that fails.
    flushes_running: AtomicU64,
    flush_finished: Notify,
}

impl WriterGate {
    pub fn new(max_pending_rows: u64) -> Self {
        Self {
            pending_rows: AtomicU64::new(0),
            max_pending_rows,
            healthy: AtomicBool::new(true),
            settles_waiting: AtomicU64::new(0),
            flushes_running: AtomicU64::new(0),
            flush_finished: Notify::new(),
        }
    }

    /// Reserves room for `rows`; false when the writer is full or the database down.
    pub fn try_reserve(&self, rows: u64) -> bool {
        if !self.healthy.load(Ordering::Acquire) {
            return false;
        }
        let before = self.pending_rows.fetch_add(rows, Ordering::AcqRel);
        if before + rows > self.max_pending_rows {
            self.pending_rows.fetch_sub(rows, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Saturating: a restarted writer resets the count, and a reservation taken
    /// before the restart may still be released after it.
    pub fn release(&self, rows: u64) {
        let _ = self
            .pending_rows
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(rows))
            });
    }

    pub fn pending_rows(&self) -> u64 {
        self.pending_rows.load(Ordering::Acquire)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Settles queued in the writer's lanes.
    pub fn settles_waiting(&self) -> u64 {
        self.settles_waiting.load(Ordering::Acquire)
    }

    /// Returns once no flush is running.
    async fn no_flush_running(&self) {
        loop {
            let finished = self.flush_finished.notified();
            if self.flushes_running.load(Ordering::Acquire) == 0 {
                return;
            }
            finished.await;
        }
    }

    fn set_settles_waiting(&self, settles: usize) {
        self.settles_waiting
            .store(settles as u64, Ordering::Release);
        metrics::gauge!(telemetry::WRITER_SETTLES_WAITING).set(settles as f64);
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }
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
    /// Settles queued in the lanes.
    settles: usize,
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
        args.gate.pending_rows.store(0, Ordering::Release);
        args.gate.set_healthy(true);
        metrics::gauge!(telemetry::MAILBOX_DEPTH, "actor" => KIND).set(0.0);
        args.gate.set_settles_waiting(0);
        let lanes = (0..args.flush_concurrency.max(1))
            .map(|_| Lane::default())
            .collect();
        Ok(WriterState {
            args,
            lanes,
            settles: 0,
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
                    state.settles += 1;
                    state.args.gate.set_settles_waiting(state.settles);
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
            state.settles -= 1;
            state.args.gate.set_settles_waiting(state.settles);
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

/// A flush counted in [`WriterGate`] until dropped, also when its task panics.
struct FlushRunning(Arc<WriterGate>);

impl FlushRunning {
    fn start(gate: &Arc<WriterGate>) -> Self {
        gate.flushes_running.fetch_add(1, Ordering::AcqRel);
        Self(gate.clone())
    }
}

impl Drop for FlushRunning {
    fn drop(&mut self) {
        self.0.flushes_running.fetch_sub(1, Ordering::AcqRel);
        self.0.flush_finished.notify_waiters();
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

/// Who a write set of a batch belongs to, and how many of each kind of row it has.
struct Owner {
    product: ActorRef<ProductMsg>,
    product_id: B256,
    tag: u64,
    request_id: RequestId,
    counts: (usize, usize, usize, usize),
    exhausted: Vec<i64>,
}

/// Writes the sets in one transaction (flush number `number`) and tells each
/// product actor the outcome. A batch refused for a non-retryable reason is
/// retried set by set, so one bad write set cannot fail the others. Returns
/// whether the database looks down.
async fn flush(
    pool: &PgPool,
    pushers: &ActorSlot<PushDirectoryMsg>,
    sets: Vec<WriteSet>,
    number: u64,
) -> bool {
    let mut owners = Vec::with_capacity(sets.len());
    let mut batch = Batch::default();
    for set in sets {
        batch.exhausted.extend(set.exhausted.iter().copied());
        owners.push(Owner {
            product: set.product,
            product_id: set.product_id,
            tag: set.tag,
            request_id: set.request_id,
            counts: (
                set.rows.len(),
                set.rewards.len(),
                set.users.len(),
                set.refunds.len(),
            ),
            exhausted: set.exhausted,
        });
        batch.rows.extend(set.rows);
        batch.rewards.extend(set.rewards);
        batch.users.extend(set.users);
        batch.refunds.extend(set.refunds);
    }
    match write(pool, &batch).await {
        Ok(written) => {
            // Fields are only evaluated when debug is enabled: no string otherwise.
            tracing::debug!(
                flush = number,
                rows = batch.rows.len() - written.skipped.len(),
                rewards = written.created.total(),
                requests = %request_ids(&owners),
                "flush committed"
            );
            let skipped = written.skipped;
            let mut refunds = written.refunds;
            notify_pushers(pushers, &written.created);
            let mut start = 0;
            for Owner {
                product,
                tag,
                counts: (count, ..),
                ..
            } in owners
            {
                let rows = &batch.rows[start..start + count];
                let mine: HashMap<Uuid, Option<Uuid>> = rows
                    .iter()
                    .filter_map(|r| skipped.get(&r.id).map(|e| (r.id, *e)))
                    .collect();
                let (my_refunds, others): (Vec<_>, Vec<_>) = refunds
                    .into_iter()
                    .partition(|o| rows.iter().any(|r| r.id == o.refund_id));
                refunds = others;
                start += count;
                let _ = product.cast(ProductMsg::Flushed {
                    tag,
                    outcome: FlushOutcome::Committed {
                        skipped: mine,
                        refunds: my_refunds,
                    },
                });
            }
            false
        }
        Err(err) if err.is_retryable() || owners.len() == 1 => {
            tracing::warn!(
                error = %err,
                flush = number,
                rows = batch.rows.len(),
                requests = %request_ids(&owners),
                "flush failed"
            );
            let retryable = err.is_retryable();
            for Owner { product, tag, .. } in owners {
                let _ = product.cast(ProductMsg::Flushed {
                    tag,
                    outcome: FlushOutcome::Failed { retryable },
                });
            }
            retryable
        }
        Err(err) => {
            tracing::error!(
                error = %err,
                flush = number,
                "flush refused; retrying write set by write set"
            );
            let mut rows = batch.rows.into_iter();
            let mut rewards = batch.rewards.into_iter();
            let mut users = batch.users.into_iter();
            let mut refunds = batch.refunds.into_iter();
            for owner in owners {
                let (count, reward_count, user_count, refund_count) = owner.counts;
                let set = WriteSet {
                    product: owner.product,
                    product_id: owner.product_id,
                    tag: owner.tag,
                    request_id: owner.request_id,
                    rows: rows.by_ref().take(count).collect(),
                    rewards: rewards.by_ref().take(reward_count).collect(),
                    users: users.by_ref().take(user_count).collect(),
                    exhausted: owner.exhausted,
                    refunds: refunds.by_ref().take(refund_count).collect(),
                };
                if Box::pin(flush(pool, pushers, vec![set], number)).await {
                    return true;
                }
            }
            false
        }
    }
}

/// Tells the pushers how many rewards of each token were committed (a hint: a
/// pusher holding `max_batch` of them pushes before its interval).
fn notify_pushers(pushers: &ActorSlot<PushDirectoryMsg>, created: &RewardsCreated) {
    let counts = created.per_token();
    if counts.is_empty() {
        return;
    }
    if let Some(directory) = pushers.get() {
        let _ = directory.cast(PushDirectoryMsg::Committed(counts));
    }
}

/// What a committed flush stored.
struct Written {
    /// Rows a unique index refused → the id holding their key.
    skipped: HashMap<Uuid, Option<Uuid>>,
    /// Reward rows inserted, by recipient type and token.
    created: RewardsCreated,
    refunds: Vec<RefundOutcome>,
}

/// Stores the batch. Without refunds that is one statement, which commits by
/// itself (`flush::store`: one round trip). With refunds, one transaction: the
/// rows, then the refunds of those inserted (after the rewards: a purchase and
/// its refund may share a flush) and what they give back.
async fn write(pool: &PgPool, batch: &Batch) -> Result<Written, DbError> {
    let started = Instant::now();
    let rows = &batch.rows;
    let stored = FlushRows {
        interactions: rows,
        rewards: &batch.rewards,
        users: &batch.users,
        exhausted: &batch.exhausted,
    };
    let result = async {
        let mut conn = pool.acquire().await?;
        if batch.refunds.is_empty() {
            let skipped = flush::store(&mut conn, stored).await?;
            return Ok::<_, DbError>((skipped, Vec::new()));
        }
        let mut tx = conn.begin().await?;
        let skipped = flush::store(&mut tx, stored).await?;
        let stored_refunds: Vec<RefundRequest> = batch
            .refunds
            .iter()
            .filter(|r| !skipped.contains_key(&r.refund_id))
            .cloned()
            .collect();
        let refunded = refunds::cancel(&mut tx, &stored_refunds).await?;
        let mut effects = RefundEffects::default();
        for outcome in &refunded {
            effects.merge(&outcome.effects);
        }
        refunds::give_back(&mut tx, &effects).await?;
        tx.commit().await?;
        Ok((skipped, refunded))
    }
    .await;
    let outcome = if result.is_ok() {
        "committed"
    } else {
        "failed"
    };
    metrics::histogram!(telemetry::WRITER_FLUSH_DURATION_SECONDS, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(telemetry::WRITER_BATCH_ROWS).record(rows.len() as f64);
    metrics::counter!(telemetry::WRITER_FLUSHES_TOTAL, "outcome" => outcome).increment(1);
    let (skipped, refunds) = result?;
    // A row a unique index refused earned nothing.
    let created = RewardsCreated::count(
        batch
            .rewards
            .iter()
            .filter(|r| !skipped.contains_key(&r.interaction_id)),
    );
    created.publish();
    Ok(Written {
        skipped,
        created,
        refunds,
    })
}

/// Reward rows of one committed flush by (recipient type, token): counted per
/// flush, published once (a flush has few distinct pairs).
struct RewardsCreated(Vec<((&'static str, Address), u64)>);

impl RewardsCreated {
    fn count<'a>(rewards: impl Iterator<Item = &'a RewardRow>) -> Self {
        let mut counts = Vec::new();
        for reward in rewards {
            tally(&mut counts, (reward.recipient_type, reward.token), 1);
        }
        Self(counts)
    }

    fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| *n as usize).sum()
    }

    /// The counts summed over recipient types, per token.
    fn per_token(&self) -> Vec<(Address, u64)> {
        let mut counts = Vec::new();
        for ((_, token), n) in &self.0 {
            tally(&mut counts, *token, *n);
        }
        counts
    }

    fn publish(&self) {
        for ((recipient_type, token), n) in &self.0 {
            metrics::counter!(
                telemetry::REWARDS_CREATED_TOTAL,
                "recipient_type" => *recipient_type,
                "token" => to_hex(token)
            )
            .increment(*n);
        }
    }
}

/// Adds `n` to `key`'s count (a linear search: a flush has few distinct keys).
fn tally<K: PartialEq>(counts: &mut Vec<(K, u64)>, key: K, n: u64) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, sum)) => *sum += n,
        None => counts.push((key, n)),
    }
}

/// The request ids of a batch, comma-separated, for a log line.
fn request_ids(owners: &[Owner]) -> String {
    let mut ids = String::with_capacity(owners.len() * 37);
    for (i, owner) in owners.iter().enumerate() {
        if i > 0 {
            ids.push(',');
        }
        ids.push_str(owner.request_id.as_str());
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::WriterGate;

    #[test]
    fn the_gate_bounds_pending_rows_and_closes_when_unhealthy() {
        let gate = WriterGate::new(10);
        assert!(gate.try_reserve(6));
        assert!(!gate.try_reserve(5));
        assert!(gate.try_reserve(4));
        gate.release(10);
        assert_eq!(gate.pending_rows(), 0);
        gate.release(5);
        assert_eq!(gate.pending_rows(), 0, "release saturates");
        gate.set_healthy(false);
        assert!(!gate.try_reserve(1));
        gate.set_healthy(true);
        assert!(gate.try_reserve(1));
    }
}
