//! Starts one pusher per token with a bank on the configured chain, finds tokens of
//! new banks, forwards the writer's "rewards committed" hints, and restarts a failed
//! pusher after a backoff (it reconciles from the ledger on start).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use alloy::primitives::Address;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::pusher::{Pusher, PusherMsg};
use super::supervisor::{RestartPolicy, exit_of};
use crate::chain::push::{PushError, Pushing};
use crate::db::push as ledger;
use crate::telemetry;

pub const KIND: &str = "push_directory";

pub enum PushDirectoryMsg {
    /// Rewards committed, per token.
    Committed(Vec<(Address, u64)>),
    /// Look for tokens of new banks.
    Discover,
    /// A failed pusher's backoff is over.
    Restart(Address),
}

#[derive(Clone)]
pub struct PushDirectoryArgs {
    /// A pusher's arguments; `token` is set per pusher.
    pub template: Pushing,
    pub policy: RestartPolicy,
}

pub struct PushDirectoryState {
    args: PushDirectoryArgs,
    pushers: HashMap<Address, ActorRef<PusherMsg>>,
    /// Restarts so far per token (the backoff grows with them).
    restarts: HashMap<Address, usize>,
    /// Tokens whose pusher waits for its backoff.
    waiting: HashSet<Address>,
    /// Tokens the writer committed rewards of that have no bank on this chain
    /// (looked up again at the next discovery, not at every commit).
    elsewhere: HashSet<Address>,
    _ticker: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy, Default)]
pub struct PushDirectory;

impl Actor for PushDirectory {
    type Msg = PushDirectoryMsg;
    type State = PushDirectoryState;
    type Arguments = PushDirectoryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PushDirectoryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let interval = Duration::from_millis(args.template.settings.push_interval_ms);
        let ticker = myself.send_interval(interval, || PushDirectoryMsg::Discover);
        let state = PushDirectoryState {
            args,
            pushers: HashMap::new(),
            restarts: HashMap::new(),
            waiting: HashSet::new(),
            elsewhere: HashSet::new(),
            _ticker: ticker,
        };
        // Looked for once started, not here: a node that does not answer must not
        // hold up the service's start (and the ticker looks again).
        myself.cast(PushDirectoryMsg::Discover)?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (_, pusher) in state.pushers.drain() {
            let _ = pusher
                .get_cell()
                .stop_and_wait(Some("shutdown".into()), None)
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
            PushDirectoryMsg::Committed(counts) => {
                let unknown = |state: &PushDirectoryState, token: &Address| {
                    !state.pushers.contains_key(token)
                        && !state.waiting.contains(token)
                        && !state.elsewhere.contains(token)
                };
                if counts.iter().any(|(token, _)| unknown(state, token)) {
                    // A new bank of this chain, or a token banked on another chain.
                    if let Err(err) = discover(&myself, state).await {
                        tracing::warn!(error = %err, "looking for new tokens failed");
                    }
                    for (token, _) in &counts {
                        if unknown(state, token) {
                            state.elsewhere.insert(*token);
                        }
                    }
                }
                for (token, n) in counts {
                    if let Some(pusher) = state.pushers.get(&token) {
                        let _ = pusher.cast(PusherMsg::Committed(n));
                    }
                }
            }
            PushDirectoryMsg::Discover => {
                state.elsewhere.clear();
                if let Err(err) = discover(&myself, state).await {
                    tracing::warn!(error = %err, "looking for new tokens failed");
                }
            }
            PushDirectoryMsg::Restart(token) => {
                state.waiting.remove(&token);
                if !state.pushers.contains_key(&token) {
                    start(&myself, state, token).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, reason, detail)) = exit_of(event) else {
            return Ok(());
        };
        if reason == "failed" {
            tracing::warn!(error = %detail, "pusher failed");
        }
        let Some(token) = token_of(state, &cell) else {
            return Ok(());
        };
        state.pushers.remove(&token);
        let delay = retry_later(&myself, state, token);
        tracing::info!(%token, delay_ms = delay.as_millis() as u64, "restarting the pusher");
        metrics::counter!(telemetry::ACTOR_RESTARTS_TOTAL, "actor" => super::pusher::KIND, "reason" => reason)
            .increment(1);
        Ok(())
    }
}

fn token_of(state: &PushDirectoryState, cell: &ActorCell) -> Option<Address> {
    state
        .pushers
        .iter()
        .find(|(_, p)| p.get_id() == cell.get_id())
        .map(|(t, _)| *t)
}

async fn discover(
    myself: &ActorRef<PushDirectoryMsg>,
    state: &mut PushDirectoryState,
) -> Result<(), PushError> {
    let template = &state.args.template;
    let chain_id = template.chain.chain_id().await?;
    let tokens = ledger::tokens(&template.pool, chain_id).await?;
    for token in tokens {
        if !state.pushers.contains_key(&token) && !state.waiting.contains(&token) {
            start(myself, state, token).await;
        }
    }
    Ok(())
}

async fn start(
    myself: &ActorRef<PushDirectoryMsg>,
    state: &mut PushDirectoryState,
    token: Address,
) {
    let mut args = state.args.template.clone();
    args.token = token;
    match Actor::spawn_linked(None, Pusher, args, myself.get_cell()).await {
        Ok((pusher, _)) => {
            state.pushers.insert(token, pusher);
        }
        Err(err) => {
            tracing::warn!(%token, error = %err, "starting a pusher failed");
            retry_later(myself, state, token);
        }
    }
}

/// Schedules a restart of the token's pusher after a backoff that grows with its
/// restarts.
fn retry_later(
    myself: &ActorRef<PushDirectoryMsg>,
    state: &mut PushDirectoryState,
    token: Address,
) -> Duration {
    let n = state.restarts.entry(token).or_insert(0);
    *n += 1;
    let delay = state.args.policy.backoff(*n);
    state.waiting.insert(token);
    myself.send_after(delay, move || PushDirectoryMsg::Restart(token));
    delay
}
