//! Periodic upkeep: probes the database for `/readyz`, publishes pool, mailbox,
//! process and campaign gauges, deletes expired sign-in nonces, marks ended
//! campaigns expired, and forgets idle rate-limit buckets.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sqlx::PgPool;

use super::product_directory::ProductRegistry;
use crate::db;
use crate::domain::campaign::CampaignStatus;
use crate::domain::ids::to_hex;
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
        // A first round right away, so readiness and the gauges do not wait a
        // whole interval.
        telemetry::process::publish();
        if probe(&args).await {
            publish_campaign_gauges(&args.pool).await;
        }
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
                metrics::gauge!(telemetry::INTERACTIONS_HELD).set(args.products.held() as f64);
                telemetry::process::publish();
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
                    publish_campaign_gauges(&state.args.pool).await;
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

/// Campaigns by status, and the budget left in capped campaigns per token: two
/// aggregate queries per tick, so the gauges are the database's truth (shared by
/// every instance; dashboards take the max across instances).
async fn publish_campaign_gauges(pool: &PgPool) {
    match db::campaigns::count_by_status(pool).await {
        Ok(counts) => {
            for status in CampaignStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!(telemetry::CAMPAIGNS, "status" => status.as_str()).set(n as f64);
            }
        }
        Err(err) => tracing::warn!(error = %err, "counting campaigns failed"),
    }
    match db::campaigns::capped_budgets(pool, telemetry::LOW_BUDGET_BPS).await {
        Ok(budgets) => {
            for (token, remaining, low) in budgets {
                let token = to_hex(token);
                metrics::gauge!(telemetry::CAMPAIGN_BUDGET_REMAINING_TOKENS, "token" => token.clone())
                    .set(remaining);
                metrics::gauge!(telemetry::CAMPAIGNS_LOW_BUDGET, "token" => token).set(low as f64);
            }
        }
        Err(err) => tracing::warn!(error = %err, "summing campaign budgets failed"),
    }
}
