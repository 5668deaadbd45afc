//! One pusher per (chain, token): every `push_interval`, or as soon as the writer
//! has committed `max_batch` rewards of its token (at most one such early round a
//! second), it tells banks about campaign
//! changes, moves unfinished batches on (confirm, expire, re-send), then writes,
//! signs and sends new batches (SPEC §7). While batches are in flight it looks at
//! them again every second. Its state is the ledger: a restarted pusher reconciles
//! from PostgreSQL and the chain before anything else.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::chain::push::{Progress, PushError, Pushing};
use crate::db::push::{self as ledger, BatchRow};
use crate::domain::backoff::Streak;
use crate::telemetry;

pub const KIND: &str = "pusher";

/// Batches of one pusher in flight at once; more work waits for the next round
/// (so does work beyond the gas the chain can take, `Pushing::gas_in_flight_room`).
const MAX_IN_FLIGHT: usize = 64;
/// How often in-flight batches are looked at again.
const FOLLOW_UP: Duration = Duration::from_secs(1);
/// Least time between the end of a full round and an early one (woken by the
/// writer): under a steady stream of rewards the pusher would otherwise query the
/// ledger back to back.
const EARLY_ROUND_SPACING: Duration = Duration::from_secs(1);

pub enum PusherMsg {
    /// A full round.
    Tick,
    /// Only the batches in flight.
    FollowUp,
    /// The writer committed this many rewards of the token.
    Committed(u64),
}

pub struct PusherState {
    steps: Pushing,
    buffered: u64,
    /// Per bank whose batches failed since its last confirmed one: no new
    /// batches while it waits.
    backoff: HashMap<i64, Streak>,
    follow_up_scheduled: bool,
    /// An early round is already scheduled.
    early_round_scheduled: bool,
    last_full_round: Instant,
    _ticker: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy, Default)]
pub struct Pusher;

impl Actor for Pusher {
    type Msg = PusherMsg;
    type State = PusherState;
    type Arguments = Pushing;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        steps: Pushing,
    ) -> Result<Self::State, ActorProcessingErr> {
        let interval = Duration::from_millis(steps.settings.push_interval_ms);
        let ticker = myself.send_interval(interval, || PusherMsg::Tick);
        // Reconcile what a predecessor left unfinished right away.
        myself.cast(PusherMsg::Tick)?;
        Ok(PusherState {
            steps,
            buffered: 0,
            backoff: HashMap::new(),
            follow_up_scheduled: false,
            early_round_scheduled: false,
            last_full_round: Instant::now(),
            _ticker: ticker,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let full_round = match message {
            PusherMsg::Tick => {
                state.early_round_scheduled = false;
                true
            }
            PusherMsg::FollowUp => {
                state.follow_up_scheduled = false;
                false
            }
            PusherMsg::Committed(n) => {
                state.buffered += n;
                if state.buffered < state.steps.settings.max_batch || state.early_round_scheduled {
                    return Ok(());
                }
                let wait = EARLY_ROUND_SPACING.saturating_sub(state.last_full_round.elapsed());
                if !wait.is_zero() {
                    state.early_round_scheduled = true;
                    myself.send_after(wait, || PusherMsg::Tick);
                    return Ok(());
                }
                true
            }
        };
        let in_flight = match round(state, full_round).await {
            Ok(in_flight) => in_flight,
            Err(err) => {
                metrics::counter!(telemetry::PUSH_ERRORS_TOTAL,
                    "token" => state.steps.token_label(), "kind" => err.kind())
                .increment(1);
                tracing::warn!(token = %state.steps.token, error = %err, "push round failed; retrying later");
                // Whatever is unfinished is picked up by the next round.
                0
            }
        };
        if full_round {
            state.last_full_round = Instant::now();
        }
        if in_flight > 0 && !state.follow_up_scheduled {
            state.follow_up_scheduled = true;
            myself.send_after(FOLLOW_UP, || PusherMsg::FollowUp);
        }
        Ok(())
    }
}

/// One round; returns how many batches are still in flight.
async fn round(state: &mut PusherState, full: bool) -> Result<usize, PushError> {
    let steps = state.steps.clone();
    if full {
        state.buffered = 0;
        // Recorded on the campaign and tried again next round; the campaigns the
        // banks already know are still paid.
        if let Err(err) = steps.sync_campaigns().await {
            tracing::warn!(token = %steps.token_label(), error = %err, "telling a bank about a campaign failed");
        }
    }
    let settings = &steps.settings;
    let gas_of = |batch: &BatchRow| settings.budgeted_gas(batch.recipient_count.max(0) as usize);
    let (mut in_flight, mut gas_in_flight) = (0, 0);
    let chain_id = steps.chain.chain_id().await?;
    for batch in ledger::unfinished(&steps.pool, chain_id, steps.token).await? {
        let progress = steps.advance(&batch).await?;
        if settle(state, batch.bank_id, &progress) == 1 {
            in_flight += 1;
            gas_in_flight += gas_of(&batch);
        }
    }
    if full {
        let now = Instant::now();
        let room = steps.gas_in_flight_room().await?;
        let full_batch_gas = settings.budgeted_gas(settings.recipients_per_tx());
        'campaigns: for work in steps.work().await? {
            if state
                .backoff
                .get(&work.bank_id)
                .is_some_and(|s| s.waits(now))
            {
                continue;
            }
            // One batch always goes, whatever the room (a chain with tiny blocks).
            while in_flight < MAX_IN_FLIGHT
                && (in_flight == 0 || gas_in_flight + full_batch_gas <= room)
            {
                let Some(batch) = steps.prepare(&work).await? else {
                    break;
                };
                let progress = steps.advance(&batch).await?;
                let flying = settle(state, work.bank_id, &progress);
                in_flight += flying;
                gas_in_flight += flying as u64 * gas_of(&batch);
                if flying == 0 && !matches!(progress, Progress::Confirmed { .. }) {
                    continue 'campaigns;
                }
            }
        }
        steps.publish_outstanding().await?;
    }
    Ok(in_flight)
}

/// Books a batch's progress: a refused or failed batch backs its bank off.
/// Returns 1 if the batch is still in flight.
fn settle(state: &mut PusherState, bank: i64, progress: &Progress) -> usize {
    match progress {
        Progress::InFlight => 1,
        Progress::Confirmed { .. } => {
            state.backoff.remove(&bank);
            0
        }
        Progress::Abandoned {
            status: "expired", ..
        } => 0,
        Progress::Abandoned { reason, .. } | Progress::Refused { reason } => {
            let settings = &state.steps.settings;
            let (streak, delay) = Streak::failed(
                state.backoff.get(&bank).copied(),
                Instant::now(),
                Duration::from_millis(settings.failure_backoff_initial_ms),
                Duration::from_millis(settings.failure_backoff_max_ms),
            );
            state.backoff.insert(bank, streak);
            metrics::counter!(telemetry::PUSH_ERRORS_TOTAL,
                "token" => state.steps.token_label(), "kind" => "revert")
            .increment(1);
            tracing::warn!(
                bank,
                reason,
                delay_ms = delay.as_millis() as u64,
                "bank refused a batch; backing off"
            );
            usize::from(matches!(progress, Progress::Refused { .. }))
        }
    }
}
