//! Follows MultiTokenPushPull's `RewardAdded` and `RewardClaimed` events into
//! PostgreSQL (SPEC §9), `confirmations` blocks behind the head. Before reading on,
//! it checks that the last block it stored is still on the chain; if a
//! reorganisation replaced it, the events above the newest block still on the chain
//! are rolled back and read again.

use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sqlx::PgPool;

use crate::chain::contracts::MultiTokenPushPull::{RewardAdded, RewardClaimed};
use crate::chain::{Chain, ChainError};
use crate::db::DbError;
use crate::db::chain_events::{self as store, ChainEvent, Cursor};
use crate::telemetry;

pub const KIND: &str = "indexer";

/// Stored blocks compared with the chain when looking for where a reorg started.
const REORG_SEARCH_BLOCKS: i64 = 256;

pub enum IndexerMsg {
    Poll,
}

#[derive(Clone)]
pub struct IndexerArgs {
    pub pool: PgPool,
    pub chain: Chain,
    pub contract: Address,
    pub confirmations: u64,
    pub from_block: u64,
    pub max_block_range: u64,
    pub poll_interval: Duration,
}

pub struct IndexerState {
    args: IndexerArgs,
    _ticker: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
enum IndexError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("a log without its block or transaction: {0:?}")]
    Incomplete(Box<Log>),
    /// The node does not have a block the indexer has seen (it lags, or another
    /// node behind the same URL answered): nothing is rolled back, the next poll
    /// tries again.
    #[error("the node does not have block {0} yet")]
    NodeBehind(u64),
}

#[derive(Clone, Copy, Default)]
pub struct Indexer;

impl Actor for Indexer {
    type Msg = IndexerMsg;
    type State = IndexerState;
    type Arguments = IndexerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: IndexerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Exported from the start, so that "no reorg" reads as 0.
        metrics::counter!(telemetry::INDEXER_REORGS_TOTAL).increment(0);
        let ticker = myself.send_interval(args.poll_interval, || IndexerMsg::Poll);
        myself.cast(IndexerMsg::Poll)?;
        Ok(IndexerState {
            args,
            _ticker: ticker,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        _message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(err) = poll(&state.args).await {
            tracing::warn!(error = %err, "indexer poll failed; retrying");
        }
        Ok(())
    }
}

async fn poll(args: &IndexerArgs) -> Result<(), IndexError> {
    let chain_id = args.chain.chain_id().await?;
    let head = args.chain.head().await?;
    let safe = head.saturating_sub(args.confirmations);
    let mut cursor = match store::cursor(&args.pool, chain_id, args.contract).await? {
        Some(cursor) => check_reorg(args, cursor).await?,
        None => None,
    };
    // Halved while the node refuses a range (too many logs, a response too
    // large for its limits or our timeout), for this poll.
    let mut range = args.max_block_range;
    loop {
        let from = cursor.map_or(args.from_block, |c| c.block_number + 1);
        if from > safe {
            break;
        }
        let to = safe.min(from + range - 1);
        // The range must follow on from the cursor: after a reorganisation since
        // the poll began, the events already stored from the old branch would stay
        // under a cursor on the new one. The next poll rolls them back.
        let Some(first) = args.chain.block(from).await? else {
            break;
        };
        if cursor.is_some_and(|c| first.parent_hash != c.block_hash) {
            break;
        }
        let end = if to == from {
            first
        } else {
            let Some(end) = args.chain.block(to).await? else {
                break;
            };
            end
        };
        let filter = Filter::new()
            .address(args.contract)
            .event_signature(vec![
                RewardAdded::SIGNATURE_HASH,
                RewardClaimed::SIGNATURE_HASH,
            ])
            .from_block(from)
            .to_block(to);
        let logs = match args.chain.logs(&filter).await {
            Ok(logs) => logs,
            Err(err) if to > from => {
                range = (to - from).div_ceil(2);
                tracing::info!(from, to, range, error = %err, "log range refused; asking for less");
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let events = logs.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let events: Vec<ChainEvent> = events.into_iter().flatten().collect();
        let next = Cursor {
            block_number: end.number,
            block_hash: end.hash,
        };
        store::append(&args.pool, chain_id, args.contract, &events, next).await?;
        for event in &events {
            metrics::counter!(telemetry::INDEXER_EVENTS_TOTAL, "event" => event.event).increment(1);
        }
        cursor = Some(next);
    }
    let at = cursor.map_or(0, |c| c.block_number);
    metrics::gauge!(telemetry::INDEXER_BLOCK).set(at as f64);
    metrics::gauge!(telemetry::INDEXER_HEAD_LAG_BLOCKS).set(head.saturating_sub(at) as f64);
    Ok(())
}

/// The cursor if its block is still on the chain; else rolls back to the newest
/// stored block that is (or to before the first block) and returns that.
async fn check_reorg(args: &IndexerArgs, cursor: Cursor) -> Result<Option<Cursor>, IndexError> {
    let chain_id = args.chain.chain_id().await?;
    if on_chain(&args.chain, cursor).await? {
        // The newest stored events must be on the chain too (their block may be
        // older than the cursor's).
        let mut intact = true;
        for block in store::recent_blocks(&args.pool, chain_id, args.contract, 1).await? {
            intact &= on_chain(&args.chain, block).await?;
        }
        if intact {
            return Ok(Some(cursor));
        }
    }
    let mut keep = None;
    for block in
        store::recent_blocks(&args.pool, chain_id, args.contract, REORG_SEARCH_BLOCKS).await?
    {
        if on_chain(&args.chain, block).await? {
            keep = Some(block);
            break;
        }
    }
    let keep = match keep {
        Some(block) => block,
        None => match args.from_block.checked_sub(1) {
            Some(before) => match args.chain.block(before).await? {
                Some(b) => Cursor {
                    block_number: b.number,
                    block_hash: b.hash,
                },
                None => return Ok(None),
            },
            None => {
                // Nothing to keep: forget every event and start from the first block.
                let removed = store::roll_back(
                    &args.pool,
                    chain_id,
                    args.contract,
                    Cursor {
                        block_number: 0,
                        block_hash: B256::ZERO,
                    },
                )
                .await?;
                report_reorg(cursor, 0, removed);
                return Ok(None);
            }
        },
    };
    let removed = store::roll_back(&args.pool, chain_id, args.contract, keep).await?;
    report_reorg(cursor, keep.block_number, removed);
    Ok(Some(keep))
}

fn report_reorg(was: Cursor, kept: u64, removed: u64) {
    metrics::counter!(telemetry::INDEXER_REORGS_TOTAL).increment(1);
    tracing::warn!(
        cursor = was.block_number,
        kept,
        removed,
        "reorganisation: indexed events above the last block still on the chain were rolled back"
    );
}

/// Whether the block is still on the chain: only another block at its height
/// says it is not; a node without that height is behind, not reorganised.
async fn on_chain(chain: &Chain, block: Cursor) -> Result<bool, IndexError> {
    match chain.block(block.block_number).await? {
        Some(b) => Ok(b.hash == block.block_hash),
        None => Err(IndexError::NodeBehind(block.block_number)),
    }
}

fn decode(log: &Log) -> Result<Option<ChainEvent>, IndexError> {
    let (Some(block_number), Some(block_hash), Some(tx_hash), Some(log_index)) = (
        log.block_number,
        log.block_hash,
        log.transaction_hash,
        log.log_index,
    ) else {
        return Err(IndexError::Incomplete(Box::new(log.clone())));
    };
    let base = |event, token, user, emitter, amount| ChainEvent {
        block_number,
        block_hash,
        tx_hash,
        log_index,
        event,
        token,
        user,
        emitter,
        amount,
    };
    if let Ok(e) = log.log_decode::<RewardAdded>() {
        let d = e.inner.data;
        return Ok(Some(base(
            "RewardAdded",
            d.token,
            d.user,
            Some(d.emitter),
            d.amount,
        )));
    }
    if let Ok(e) = log.log_decode::<RewardClaimed>() {
        let d = e.inner.data;
        return Ok(Some(base("RewardClaimed", d.token, d.user, None, d.amount)));
    }
    Ok(None)
}
