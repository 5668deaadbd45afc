//! One actor per product: it owns the product's hot ingestion state — the dedup
//! window, the interactions waiting for their commit — and decides, in order,
//! what each interaction is: a duplicate of a committed one, a duplicate of one
//! still being written (answered with the original's fate), or new. New rows go
//! to the writer; requests are answered only when the writer reports the commit.
//! A request that reads a referral still being written waits for it (`held`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use super::referral::{ProductEdges, ReferralMsg};
use super::supervisor::ActorSlot;
use super::writer::{FlushOutcome, WriterGate, WriterMsg};
use crate::db::campaigns::{self, CampaignRow, Recap};
use crate::db::interactions;
use crate::db::products::ProductConfig;
use crate::db::refunds;
use crate::domain::campaign::{CampaignRule, CampaignStatus, RecipientType};
use crate::domain::interaction::{DedupKey, Interaction, InteractionType, window_hash};
use crate::domain::referral::ReferralOutcome;
use crate::telemetry::request_id::RequestId;

mod budgets;
mod earn;
mod held;
mod ingest;

pub use budgets::InStepError;
use budgets::{campaign_updated, deactivate, load_user_counts, recap, settle};
use held::Held;
use ingest::{expire_stale, flushed};

/// Why a product actor stops after a write set of it expired.
pub const WRITES_UNKNOWN: &str = "a write set's outcome is unknown: state to be reloaded";

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
        reply: oneshot::Sender<Result<Recap, InStepError>>,
    },
    /// Deactivate a campaign (API), in step with the writes.
    Deactivate {
        campaign_id: i64,
        from: CampaignStatus,
        reply: oneshot::Sender<Result<Option<CampaignRow>, InStepError>>,
    },
    /// Periodic, stamped when the tick fired: answers requests whose write set
    /// had been with the writer for longer than `stale_after` at that instant
    /// (the writer restarted, or the flush is stuck), then stops the actor to be
    /// rebuilt. A commit report queued behind the tick is not mistaken for one:
    /// time this actor spent busy is not counted against the writer.
    ExpireStale(std::time::Instant),
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
    /// A request whose write set has been with the writer longer than this (at
    /// an `ExpireStale` tick) is answered "unavailable".
    pub stale_after: Duration,
    /// Places for starts reading the database (the directory's, shared).
    pub loads: Arc<Semaphore>,
    /// Interactions sent to this actor and not yet processed (the front door adds).
    pub queued: Arc<AtomicU64>,
    /// Of those, the ones held until the referrals their requests read are stored.
    pub held: Arc<AtomicU64>,
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
    /// The order a refund row refunds, when this row is what made it known as
    /// refunded (from the start of its write): forgotten again if the row is
    /// surely not stored.
    refund_order: Option<String>,
}

/// A request being answered.
struct OpenRequest {
    reply: oneshot::Sender<Vec<(usize, ItemResult)>>,
    request_id: RequestId,
    /// When its write set went to the writer (none yet, or none sent).
    sent_at: Option<std::time::Instant>,
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
    /// Campaigns this actor deactivated: never active again.
    deactivated: HashSet<i64>,
    /// Wallets whose referral is registered in memory and still being written →
    /// the tag of the request writing it.
    referrals_in_flight: HashMap<Address, u64>,
    /// Requests that read one of those referrals, in arrival order (`held`).
    held: VecDeque<Held>,
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
        // (A restarting referral actor starts empty anyway.)
        if let Some(referral) = args.referral.get() {
            let _ = referral.cast(ReferralMsg::Reload {
                product: args.config.id,
            });
        }
        // Held while the state is read, not while earlier writes settle.
        let _place = args.loads.clone().acquire_owned().await?;
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
        let expiry = myself.send_interval(args.stale_after / 2, || {
            ProductMsg::ExpireStale(std::time::Instant::now())
        });
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
            deactivated: HashSet::new(),
            referrals_in_flight: HashMap::new(),
            held: VecDeque::new(),
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
                held::admit(&myself, state, items, meta, reply).await;
            }
            ProductMsg::Flushed { tag, outcome } => {
                flushed(state, tag, outcome).await;
                held::resume(&myself, state).await;
            }
            ProductMsg::ExpireStale(tick) => {
                if expire_stale(state, tick) {
                    // The next request starts a new actor, which waits for this
                    // product's writes to settle and reads what they stored.
                    myself.stop(Some(WRITES_UNKNOWN.into()));
                }
            }
            ProductMsg::CampaignUpdated(row) => campaign_updated(state, &row).await?,
            ProductMsg::Recap {
                campaign_id,
                cap,
                reply,
            } => {
                let _ = reply.send(recap(state, campaign_id, cap).await);
            }
            ProductMsg::Deactivate {
                campaign_id,
                from,
                reply,
            } => {
                let _ = reply.send(deactivate(state, campaign_id, from).await);
            }
            ProductMsg::Crash => panic!("crash requested"),
        }
        Ok(())
    }
}
