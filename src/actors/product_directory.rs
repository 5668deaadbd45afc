//! Where product actors live. The front door looks a product up in the shared
//! [`ProductRegistry`] (a DashMap, no messaging); on a miss it asks the directory
//! actor, which starts the product on a task of its own — load the configuration,
//! spawn the actor linked to the directory (so the directory supervises it), whose
//! `pre_start` reloads its state — and registers it when the task reports back.
//! Starts run side by side: one that waits (on the database, or on writes a
//! crashed predecessor left in flight) holds up only the requests of its own
//! product, which wait on the same start. When a product actor fails, the
//! directory unregisters it and counts the restart; the next request respawns it.
//! A product that keeps failing is refused for a while (restart backoff) instead
//! of respawned on every request.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use dashmap::DashMap;
use moka::sync::Cache;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, MessagingErr, RpcReplyPort,
    SupervisionEvent,
};
use tokio::sync::Semaphore;

use super::product::{Product, ProductArgs, ProductMsg};
use super::supervisor::{ActorSlot, RestartPolicy, exit_of};
use crate::db::{self, products::ProductConfig};
use crate::telemetry;

pub const KIND: &str = "product_directory";

/// A running product actor and what the front door checks before using it.
#[derive(Clone)]
pub struct ProductHandle {
    pub actor: ActorRef<ProductMsg>,
    pub config: Arc<ProductConfig>,
    /// Interactions sent and not yet processed (bounded by the mailbox capacity).
    pub queued: Arc<AtomicU64>,
    /// Of those, the ones held until the referrals their requests read are stored.
    pub held: Arc<AtomicU64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("unknown product")]
    Unknown,
    #[error("the product is restarting; retry shortly")]
    Backoff,
    #[error("cannot load the product: {0}")]
    Unavailable(String),
}

/// The shared lookup table. Unknown product ids are remembered briefly so that
/// random ids cannot turn into one database query each.
pub struct ProductRegistry {
    running: DashMap<B256, ProductHandle>,
    unknown: Cache<B256, ()>,
    /// Configurations set lately, for the starts under way: the one a start
    /// loaded may predate them.
    updated: Cache<B256, Arc<ProductConfig>>,
}

impl Default for ProductRegistry {
    fn default() -> Self {
        Self {
            running: DashMap::new(),
            unknown: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(10))
                .build(),
            // Longer than a start takes (its load waits for a place, then reads).
            updated: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        }
    }
}

impl ProductRegistry {
    /// The running actor of a product, starting it if needed.
    pub async fn open(
        &self,
        directory: &ActorRef<DirectoryMsg>,
        product: B256,
    ) -> Result<ProductHandle, OpenError> {
        if let Some(handle) = self.running.get(&product) {
            return Ok(handle.clone());
        }
        if self.unknown.contains_key(&product) {
            return Err(OpenError::Unknown);
        }
        ractor::call!(directory, DirectoryMsg::Open, product)
            .map_err(|e| OpenError::Unavailable(e.to_string()))?
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Total interactions queued in product actors.
    pub fn queued(&self) -> u64 {
        self.sum(|h| &h.queued)
    }

    /// Of those, the ones held until the referrals their requests read are stored.
    pub fn held(&self) -> u64 {
        self.sum(|h| &h.held)
    }

    fn sum(&self, counter: impl Fn(&ProductHandle) -> &AtomicU64) -> u64 {
        self.running
            .iter()
            .map(|h| counter(&h).load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Replaces the configuration the front door checks (after a product PATCH
    /// or a webhook change), so that the next request sees it — also when the
    /// product's actor is starting: its start registers it with this one
    /// (`register`). Remembered before the running handle is looked at, and
    /// `register` looks after inserting, so one of the two always sees the other.
    pub fn update_config(&self, config: ProductConfig) {
        let config = Arc::new(config);
        self.updated.insert(config.id, config.clone());
        if let Some(mut handle) = self.running.get_mut(&config.id) {
            handle.config = config;
        }
    }

    /// Registers a started actor, with a configuration set during its start if
    /// there was one; returns the handle as registered.
    fn register(&self, product: B256, handle: ProductHandle) -> ProductHandle {
        self.running.insert(product, handle);
        let mut registered = self.running.get_mut(&product).expect("just registered");
        if let Some(config) = self.updated.get(&product) {
            registered.config = config;
        }
        registered.clone()
    }

    /// The running actor of a product, if any (no spawning).
    pub fn get(&self, product: &B256) -> Option<ProductHandle> {
        self.running.get(product).map(|h| h.clone())
    }
}

type OpenReply = RpcReplyPort<Result<ProductHandle, OpenError>>;

pub enum DirectoryMsg {
    Open(B256, OpenReply),
    /// A start finished (sent by its task).
    Started(B256, Result<ProductHandle, OpenError>),
}

/// What every product actor is started with, besides its own configuration.
#[derive(Clone)]
pub struct DirectoryArgs {
    pub registry: Arc<ProductRegistry>,
    pub template: ProductTemplate,
    pub policy: RestartPolicy,
}

/// The shared parts of [`ProductArgs`].
#[derive(Clone)]
pub struct ProductTemplate {
    pub pool: sqlx::PgPool,
    pub writer: ActorSlot<super::writer::WriterMsg>,
    pub gate: Arc<super::writer::WriterGate>,
    pub referral: ActorSlot<super::referral::ReferralMsg>,
    pub dedup: super::product::DedupCache,
    pub window: Duration,
    pub stale_after: Duration,
    /// Places for starts reading the database (`ingest.product_loads_at_once`): a
    /// burst of first requests to many products (a service start under load) must
    /// leave most of the pool to the writer. A start holds one only while it reads.
    pub loads: Arc<Semaphore>,
}

pub struct DirectoryState {
    args: DirectoryArgs,
    /// Actor id → product, to unregister a failed actor.
    by_actor: HashMap<ractor::ActorId, B256>,
    /// Recent failures per product, for the restart backoff.
    failures: HashMap<B256, VecDeque<Instant>>,
    /// Products being started → the requests waiting for them.
    starting: HashMap<B256, Vec<OpenReply>>,
}

#[derive(Clone, Copy, Default)]
pub struct ProductDirectory;

impl Actor for ProductDirectory {
    type Msg = DirectoryMsg;
    type State = DirectoryState;
    type Arguments = DirectoryArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DirectoryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Actors of a previous directory died with it; start from nothing.
        args.registry.running.clear();
        metrics::gauge!(telemetry::PRODUCT_ACTORS).set(0.0);
        for reason in ["failed", "stopped"] {
            telemetry::start_counter(
                telemetry::ACTOR_RESTARTS_TOTAL,
                &[("actor", "product"), ("reason", reason)],
            );
        }
        Ok(DirectoryState {
            args,
            by_actor: HashMap::new(),
            failures: HashMap::new(),
            starting: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let actors: Vec<ActorCell> = state
            .args
            .registry
            .running
            .iter()
            .map(|h| h.actor.get_cell())
            .collect();
        state.args.registry.running.clear();
        for actor in actors {
            let _ = actor.stop_and_wait(Some("shutdown".into()), None).await;
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
            DirectoryMsg::Open(product, reply) => open(&myself, state, product, reply),
            DirectoryMsg::Started(product, result) => started(state, product, result),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, reason, detail)) = exit_of(event) else {
            return Ok(());
        };
        if reason == "failed" {
            tracing::warn!(error = %detail, "product actor failed");
        }
        if let Some(product) = state.by_actor.remove(&cell.get_id()) {
            state
                .args
                .registry
                .running
                .remove_if(&product, |_, h| h.actor.get_id() == cell.get_id());
            count_failure(state, product, reason);
        }
        Ok(())
    }
}

/// A product actor gone: counted for the restart backoff and the metrics.
fn count_failure(state: &mut DirectoryState, product: B256, reason: &'static str) {
    state
        .failures
        .entry(product)
        .or_default()
        .push_back(Instant::now());
    metrics::counter!(telemetry::ACTOR_RESTARTS_TOTAL, "actor" => "product", "reason" => reason)
        .increment(1);
    metrics::gauge!(telemetry::PRODUCT_ACTORS).set(state.args.registry.len() as f64);
}

/// Answers at once when the product runs or waits out a backoff; otherwise
/// the request waits for the product's start, begun now unless one is under way.
fn open(
    myself: &ActorRef<DirectoryMsg>,
    state: &mut DirectoryState,
    product: B256,
    reply: OpenReply,
) {
    if let Some(handle) = state.args.registry.running.get(&product) {
        let _ = reply.send(Ok(handle.clone()));
        return;
    }
    if let Some(waiting) = state.starting.get_mut(&product) {
        // Callers that gave up (timed out) are dropped, so a slow start does not
        // collect one reply per retry.
        waiting.retain(|r| !r.is_closed());
        waiting.push(reply);
        return;
    }
    if in_backoff(state, product) {
        let _ = reply.send(Err(OpenError::Backoff));
        return;
    }
    state.starting.insert(product, vec![reply]);
    let (myself, template) = (myself.clone(), state.args.template.clone());
    tokio::spawn(async move {
        let result = start(&myself, template, product).await;
        if let Err(MessagingErr::SendErr(DirectoryMsg::Started(_, Ok(orphan)))) =
            myself.cast(DirectoryMsg::Started(product, result))
        {
            // The directory stopped meanwhile: nobody would supervise or use it.
            orphan
                .actor
                .stop(Some("the product directory stopped".into()));
        }
    });
}

/// Loads the product's configuration and spawns its actor, linked to the directory.
async fn start(
    directory: &ActorRef<DirectoryMsg>,
    template: ProductTemplate,
    product: B256,
) -> Result<ProductHandle, OpenError> {
    let loaded = {
        let _place = template.loads.acquire().await;
        db::products::load_config(&template.pool, product).await
    };
    let config = match loaded {
        Ok(Some(config)) => Arc::new(config),
        Ok(None) => return Err(OpenError::Unknown),
        Err(err) => return Err(OpenError::Unavailable(err.to_string())),
    };
    let (queued, held) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let args = ProductArgs {
        config: config.clone(),
        pool: template.pool,
        writer: template.writer,
        gate: template.gate,
        referral: template.referral,
        dedup: template.dedup,
        window: template.window,
        stale_after: template.stale_after,
        loads: template.loads,
        queued: queued.clone(),
        held: held.clone(),
    };
    let (actor, _) = Actor::spawn_linked(None, Product, args, directory.get_cell())
        .await
        .map_err(|e| OpenError::Unavailable(e.to_string()))?;
    Ok(ProductHandle {
        actor,
        config,
        queued,
        held,
    })
}

/// Registers a started product actor and answers the requests that waited for it.
/// An actor already stopped (its failure reached the directory before this report,
/// while it was not registered) counts as failed.
fn started(state: &mut DirectoryState, product: B256, result: Result<ProductHandle, OpenError>) {
    let registry = state.args.registry.clone();
    let result = match result {
        Ok(handle)
            if matches!(
                handle.actor.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            ) =>
        {
            count_failure(state, product, "failed");
            Err(OpenError::Unavailable(
                "the product actor stopped as it started".into(),
            ))
        }
        Ok(handle) => {
            state.by_actor.insert(handle.actor.get_id(), product);
            let handle = registry.register(product, handle);
            metrics::gauge!(telemetry::PRODUCT_ACTORS).set(registry.len() as f64);
            Ok(handle)
        }
        Err(OpenError::Unknown) => {
            registry.unknown.insert(product, ());
            Err(OpenError::Unknown)
        }
        Err(err) => Err(err),
    };
    for reply in state.starting.remove(&product).unwrap_or_default() {
        let _ = reply.send(result.clone());
    }
}

/// A product that failed more than the policy allows within its window waits for
/// the backoff of its last failure before it is started again.
fn in_backoff(state: &mut DirectoryState, product: B256) -> bool {
    let policy = state.args.policy;
    let Some(failures) = state.failures.get_mut(&product) else {
        return false;
    };
    let now = Instant::now();
    while failures
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.meltdown_window)
    {
        failures.pop_front();
    }
    match failures.back() {
        None => {
            state.failures.remove(&product);
            false
        }
        Some(last) => now.duration_since(*last) < policy.backoff(failures.len()),
    }
}
