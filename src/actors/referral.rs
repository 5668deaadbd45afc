//! The referral graph: per product, each wallet's referrer. A product's edges are
//! loaded from PostgreSQL once, on first use, and then kept in a moka cache
//! (weighed by edge count, so cold products are evicted and reload later).
//! Registrations are decided here, one at a time (first referrer wins, no
//! self-referral, no cycle); the edge is applied at once and forgotten again if
//! the write that carries it fails.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use alloy::primitives::{Address, B256};
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
}

impl ProductEdges {
    pub fn referrer_of(&self, wallet: Address) -> Option<Address> {
        self.edges.read().expect("edges lock").get(&wallet).copied()
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
    /// Each wallet's referrers, nearest first, at most five levels.
    Chains {
        product: B256,
        wallets: Vec<Address>,
        reply: RpcReplyPort<Result<Vec<Vec<Address>>, String>>,
    },
    /// Removes edges applied by `Register` whose write failed.
    Forget {
        product: B256,
        pairs: Vec<(Address, Address)>,
    },
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
        let cache = Cache::builder()
            .max_capacity(args.max_edges)
            .weigher(|_: &B256, edges: &Arc<ProductEdges>| {
                u32::try_from(edges.len() + 1).unwrap_or(u32::MAX)
            })
            .build();
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
            ReferralMsg::Chains {
                product,
                wallets,
                reply,
            } => {
                let result = match edges_of(state, product).await {
                    Ok(edges) => Ok(wallets
                        .iter()
                        .map(|w| {
                            referral::chain(*w, usize::from(MAX_DEPTH), |x| edges.referrer_of(x))
                        })
                        .collect()),
                    Err(err) => Err(err.to_string()),
                };
                let _ = reply.send(result);
            }
            ReferralMsg::Forget { product, pairs } => {
                if let Some(edges) = state.cache.get(&product) {
                    let mut map = edges.edges.write().expect("edges lock");
                    for (wallet, referrer) in pairs {
                        if map.get(&wallet) == Some(&referrer) {
                            map.remove(&wallet);
                        }
                    }
                }
            }
        }
        Ok(())
    }
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
    let edges = Arc::new(ProductEdges {
        edges: RwLock::new(loaded.into_iter().collect()),
    });
    state.cache.insert(product, edges.clone());
    Ok(edges)
}
