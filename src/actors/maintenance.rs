//! Periodic upkeep: probes the database for `/readyz`, publishes pool and mailbox
//! gauges, deletes expired sign-in nonces, marks ended campaigns expired, and
//! forgets idle rate-limit buckets.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sqlx::PgPool;

use super::product_directory::ProductRegistry;
use crate::db;
use crate::limits::RateLimiter;
use crate::readiness::Readiness;
use crate::telemetry;

pub const KIND: &str = "maintenance";

pub enum MaintenanceMsg {
    Tick,
}

#[derive(Clone)]
pub struct MaintenanceArgs {
    pub pool: PgPool,
    pub readiness: Arc<Readiness>,
    pub interval: Duration,
    pub products: Arc<ProductRegistry>,
    pub limiter: Arc<RateLimiter>,
}

pub struct MaintenanceState {
    args: MaintenanceArgs,
    _ticker: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy, Default)]
pub struct Maintenance;

impl Actor for Maintenance {
    type Msg = MaintenanceMsg;
    type State = MaintenanceState;
    type Arguments = MaintenanceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MaintenanceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A first probe right away, so readiness does not wait a whole interval.
        probe(&args).await;
        let ticker = myself.send_interval(args.interval, || MaintenanceMsg::Tick);
        Ok(MaintenanceState {
            args,
            _ticker: ticker,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state._ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MaintenanceMsg::Tick => {
                let args = &state.args;
                args.limiter.sweep(chrono::Utc::now().timestamp_millis());
                metrics::gauge!(telemetry::MAILBOX_DEPTH, "actor" => "product")
                    .set(args.products.queued() as f64);
                if probe(&state.args).await {
                    match db::auth_nonces::delete_expired(&state.args.pool).await {
                        Ok(n) => {
                            metrics::counter!(telemetry::AUTH_NONCES_EXPIRED_TOTAL).increment(n)
                        }
                        Err(err) => tracing::warn!(error = %err, "sweeping expired nonces failed"),
                    }
                    // Product actors stop paying at ends_at already; this makes the
                    // campaign's status say so.
                    if let Err(err) = db::campaigns::expire_ended(&state.args.pool).await {
                        tracing::warn!(error = %err, "expiring ended campaigns failed");
                    }
                }
            }
        }
        Ok(())
    }
}

/// Pings the database, records the result in the readiness latch and the pool
/// gauges; returns whether the database answered.
async fn probe(args: &MaintenanceArgs) -> bool {
    let reachable = match db::ping(&args.pool).await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %err, "database probe failed");
            false
        }
    };
    args.readiness.set_database_reachable(reachable);
    let idle = args.pool.num_idle() as f64;
    let size = f64::from(args.pool.size());
    metrics::gauge!(telemetry::DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    metrics::gauge!(telemetry::DB_POOL_CONNECTIONS, "state" => "in_use").set(size - idle);
    reachable
}
