//! The referral graph: per product, each wallet's referrer. A product's edges are
//! loaded from PostgreSQL once, on first use, and then kept in a moka cache
//! (weighed by edge count, so cold products are evicted and reload later).
//! Registrations are decided here, one at a time (first referrer wins, no
//! self-referral, no cycle); the edge is applied at once and forgotten again if
//! the write that carries it fails.
//!
//! Product actors read their referral chains themselves, from the product's
//! edges they hold a handle to (`Edges`): no message per interaction. The handle
//! stays valid while the cache holds the edges; evicted edges are marked, and the
//! holder asks for the reloaded ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use alloy::primitives::{Address, B256};
use moka::notification::RemovalCause;
use moka::sync::Cache;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sqlx::PgPool;

use crate::db;
use crate::domain::campaign::MAX_DEPTH;
use crate::domain::referral::{self, ReferralOutcome};
use crate::telemetry;

pub const KIND: &str = "referral";

/// One product's edges: wallet → referrer.
#[derive(Debug, Default)]
pub struct ProductEdges {
    edges: RwLock<HashMap<Address, Address>>,
    /// Set when the cache drops these edges: registrations go to a reloaded copy.
    evicted: AtomicBool,
}

impl ProductEdges {
    fn new(edges: HashMap<Address, Address>) -> Self {
        Self {
            edges: RwLock::new(edges),
            evicted: AtomicBool::new(false),
        }
    }

    /// Each wallet's referrers, nearest first, at most five levels.
    pub fn chains(&self, wallets: &[Address]) -> Vec<Vec<Address>> {
        let edges = self.edges.read().expect("edges lock");
        wallets
            .iter()
            .map(|w| referral::chain(*w, usize::from(MAX_DEPTH), |x| edges.get(&x).copied()))
            .collect()
    }

    /// Whether a decision about any of `reads` — (wallet, edges read from its
    /// chain; `None`: all) — reads an edge leaving a wallet `pending` names.
    pub fn reads_pending(
        &self,
        reads: &[(Address, Option<usize>)],
        pending: impl Fn(&Address) -> bool,
    ) -> bool {
        let edges = self.edges.read().expect("edges lock");
        reads.iter().any(|&(wallet, depth)| {
            referral::reads_pending(wallet, depth, |x| edges.get(&x).copied(), &pending)
        })
    }

    /// Whether these are still the product's edges (not evicted from the cache).
    pub fn is_current(&self) -> bool {
        !self.evicted.load(Ordering::Acquire)
    }

    fn len(&self) -> usize {
        self.edges.read().expect("edges lock").len()
    }
}

pub enum ReferralMsg {
    /// Decides and applies `(wallet, referrer)` edges in order.
    Register {
        product: B256,
        pairs: Vec<(Address, Address)>,
        reply: RpcReplyPort<Result<Vec<ReferralOutcome>, String>>,
    },
    /// The product's edges (loaded on a miss), for its actor to read chains from.
    Edges {
        product: B256,
        reply: RpcReplyPort<Result<Arc<ProductEdges>, String>>,
    },
    /// Removes edges applied by `Register` whose write failed; answered once they
    /// are gone, so that no chain read after it has them.
    Forget {
        product: B256,
        pairs: Vec<(Address, Address)>,
        reply: RpcReplyPort<()>,
    },
    /// Drops the product's edges; the next use loads them from the database. Sent
    /// by a product actor as it starts, once its predecessor's writes settled: a
    /// crashed actor never heard how its writes ended, so edges it registered may
    /// be in memory without being stored.
    Reload { product: B256 },
}

#[derive(Clone)]
pub struct ReferralArgs {
    pub pool: PgPool,
    pub max_edges: u64,
}

pub struct ReferralState {
    pool: PgPool,
    cache: Cache<B256, Arc<ProductEdges>>,
}

#[derive(Clone, Copy, Default)]
pub struct Referral;

impl Actor for Referral {
    type Msg = ReferralMsg;
    type State = ReferralState;
    type Arguments = ReferralArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ReferralArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cache = edges_cache(args.max_edges);
        Ok(ReferralState {
            pool: args.pool,
            cache,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReferralMsg::Register {
                product,
                pairs,
                reply,
            } => {
                let result = match edges_of(state, product).await {
                    Ok(edges) => {
                        let outcomes = register(&edges, &pairs);
                        // moka weighs a value when inserted: reweigh as the map doubles.
                        if edges.len().is_power_of_two() {
                            state.cache.insert(product, edges);
                        }
                        Ok(outcomes)
                    }
                    Err(err) => Err(err.to_string()),
                };
                if let Ok(outcomes) = &result {
                    for outcome in outcomes {
                        metrics::counter!(telemetry::REFERRALS_TOTAL, "outcome" => outcome.as_str())
                            .increment(1);
                    }
                }
                let _ = reply.send(result);
            }
            ReferralMsg::Edges { product, reply } => {
                let result = edges_of(state, product).await;
                let _ = reply.send(result.map_err(|err| err.to_string()));
            }
            ReferralMsg::Reload { product } => state.cache.invalidate(&product),
            ReferralMsg::Forget {
                product,
                pairs,
                reply,
            } => {
                if let Some(edges) = state.cache.get(&product) {
                    let mut map = edges.edges.write().expect("edges lock");
                    for (wallet, referrer) in pairs {
                        if map.get(&wallet) == Some(&referrer) {
                            map.remove(&wallet);
                        }
                    }
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

/// Product → edges, weighed by edge count. Edges dropped for any reason but a
/// re-insertion of the same product are marked evicted. The listener runs on the
/// thread that evicts: the referral actor's, inside a cache call, so no
/// registration can reach the old edges after they are dropped.
fn edges_cache(max_edges: u64) -> Cache<B256, Arc<ProductEdges>> {
    Cache::builder()
        .max_capacity(max_edges)
        .weigher(|_: &B256, edges: &Arc<ProductEdges>| {
            u32::try_from(edges.len() + 1).unwrap_or(u32::MAX)
        })
        .eviction_listener(|_, edges: Arc<ProductEdges>, cause| {
            if cause != RemovalCause::Replaced {
                edges.evicted.store(true, Ordering::Release);
            }
        })
        .build()
}

fn register(edges: &ProductEdges, pairs: &[(Address, Address)]) -> Vec<ReferralOutcome> {
    let mut map = edges.edges.write().expect("edges lock");
    pairs
        .iter()
        .map(|&(wallet, referrer)| {
            let outcome = referral::decide(wallet, referrer, |w| map.get(&w).copied());
            if outcome == ReferralOutcome::Registered {
                map.insert(wallet, referrer);
            }
            outcome
        })
        .collect()
}

/// The product's edges, loading them on a miss.
async fn edges_of(state: &ReferralState, product: B256) -> Result<Arc<ProductEdges>, db::DbError> {
    if let Some(edges) = state.cache.get(&product) {
        metrics::counter!(telemetry::REFERRAL_CACHE_LOOKUPS_TOTAL, "result" => "hit").increment(1);
        return Ok(edges);
    }
    metrics::counter!(telemetry::REFERRAL_CACHE_LOOKUPS_TOTAL, "result" => "miss").increment(1);
    let loaded = db::interactions::referral_edges(&state.pool, product).await?;
    let edges = Arc::new(ProductEdges::new(loaded.into_iter().collect()));
    state.cache.insert(product, edges.clone());
    Ok(edges)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alloy::primitives::{Address, B256};

    use super::{ProductEdges, edges_cache};

    fn edges(n: u8) -> Arc<ProductEdges> {
        Arc::new(ProductEdges::new(
            (1..=n)
                .map(|i| (Address::repeat_byte(i), Address::repeat_byte(i + 1)))
                .collect(),
        ))
    }

    #[test]
    fn held_edges_know_when_the_cache_dropped_them() {
        let cache = edges_cache(4);
        let (a, b) = (B256::repeat_byte(0xa), B256::repeat_byte(0xb));
        let held = edges(2);
        cache.insert(a, held.clone());
        // Re-inserted to be reweighed: still the product's edges.
        cache.insert(a, held.clone());
        cache.run_pending_tasks();
        assert!(held.is_current());
        assert_eq!(
            held.chains(&[Address::repeat_byte(1)]),
            vec![vec![Address::repeat_byte(2), Address::repeat_byte(3)]]
        );
        // A busier product needs the room: A's edges are evicted.
        for _ in 0..20 {
            let _ = cache.get(&b);
        }
        cache.insert(b, edges(2));
        cache.run_pending_tasks();
        assert!(cache.get(&a).is_none(), "A was evicted");
        assert!(!held.is_current());
        // Dropped explicitly: marked too.
        let again = cache.get(&b).expect("B is cached");
        cache.invalidate(&b);
        cache.run_pending_tasks();
        assert!(!again.is_current());
    }
}
