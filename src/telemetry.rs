//! Every metric the service exports — name, type, unit, help, labels, buckets — in
//! one catalogue, plus the Prometheus recorder and log set-up. Names follow the
//! Prometheus conventions: base units, `_total` counters, `_seconds` histograms with
//! explicit buckets, bounded label sets.

pub mod process;
pub mod request_id;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{LogFormat, TelemetrySettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricKind,
    pub unit: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub buckets: &'static [f64],
}

const ROW_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
];

const PUSH_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0, 3_600.0,
];

const GAS_BUCKETS: &[f64] = &[
    5_000.0, 7_500.0, 10_000.0, 15_000.0, 20_000.0, 25_000.0, 30_000.0, 40_000.0, 60_000.0,
    100_000.0, 200_000.0,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub const HTTP_REQUESTS_TOTAL: &str = "rewardflow_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "rewardflow_http_request_duration_seconds";
pub const ACTOR_RESTARTS_TOTAL: &str = "rewardflow_actor_restarts_total";
pub const READY: &str = "rewardflow_ready";
pub const DB_POOL_CONNECTIONS: &str = "rewardflow_db_pool_connections";
pub const AUTH_LOGINS_TOTAL: &str = "rewardflow_auth_logins_total";
pub const AUTH_NONCES_EXPIRED_TOTAL: &str = "rewardflow_auth_nonces_expired_total";
pub const BUILD_INFO: &str = "rewardflow_build_info";
pub const INTERACTIONS_TOTAL: &str = "rewardflow_interactions_total";
pub const WRITER_BATCH_ROWS: &str = "rewardflow_writer_batch_rows";
pub const WRITER_FLUSH_DURATION_SECONDS: &str = "rewardflow_writer_flush_duration_seconds";
pub const WRITER_FLUSHES_TOTAL: &str = "rewardflow_writer_flushes_total";
pub const WRITER_SETTLES_WAITING: &str = "rewardflow_writer_settles_waiting";
pub const MAILBOX_DEPTH: &str = "rewardflow_mailbox_depth";
pub const INTERACTIONS_HELD: &str = "rewardflow_interactions_held";
pub const PRODUCT_ACTORS: &str = "rewardflow_product_actors";
pub const REFERRALS_TOTAL: &str = "rewardflow_referrals_total";
pub const REFERRAL_CACHE_LOOKUPS_TOTAL: &str = "rewardflow_referral_cache_lookups_total";
pub const RATE_LIMITED_TOTAL: &str = "rewardflow_rate_limited_total";
pub const WEBHOOKS_TOTAL: &str = "rewardflow_webhooks_total";
pub const REWARDS_OUTSTANDING: &str = "rewardflow_rewards_outstanding";
pub const REWARDS_OLDEST_PENDING_AGE_SECONDS: &str =
    "rewardflow_rewards_oldest_pending_age_seconds";
pub const PUSH_REWARDS_TOTAL: &str = "rewardflow_push_rewards_total";
pub const PUSH_BATCHES_TOTAL: &str = "rewardflow_push_batches_total";
pub const PUSH_DURATION_SECONDS: &str = "rewardflow_push_duration_seconds";
pub const PUSH_GAS_PER_REWARD: &str = "rewardflow_push_gas_per_reward";
pub const PUSH_ERRORS_TOTAL: &str = "rewardflow_push_errors_total";
pub const CHAIN_CALLS_TOTAL: &str = "rewardflow_chain_calls_total";
pub const INDEXER_HEAD_LAG_BLOCKS: &str = "rewardflow_indexer_head_lag_blocks";
pub const INDEXER_BLOCK: &str = "rewardflow_indexer_block";
pub const INDEXER_EVENTS_TOTAL: &str = "rewardflow_indexer_events_total";
pub const INDEXER_REORGS_TOTAL: &str = "rewardflow_indexer_reorgs_total";
pub const REWARDS_CREATED_TOTAL: &str = "rewardflow_rewards_created_total";
pub const CAMPAIGNS: &str = "rewardflow_campaigns";
pub const CAMPAIGN_BUDGET_REMAINING_TOKENS: &str = "rewardflow_campaign_budget_remaining_tokens";
pub const CAMPAIGNS_LOW_BUDGET: &str = "rewardflow_campaigns_low_budget";
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "rewardflow_process_resident_memory_bytes";
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "rewardflow_process_cpu_seconds_total";
pub const PROCESS_OPEN_FDS: &str = "rewardflow_process_open_fds";
pub const PROCESS_THREADS: &str = "rewardflow_process_threads";

/// A capped campaign is "low on budget" with less than this share of its cap left
/// (basis points).
pub const LOW_BUDGET_BPS: u32 = 1_000;

pub const CATALOGUE: &[MetricDef] = &[
    MetricDef {
        name: HTTP_REQUESTS_TOTAL,
        kind: MetricKind::Counter,
        unit: "requests",
        help: "HTTP requests answered, by route template, method and status code.",
        labels: &["route", "method", "status"],
        buckets: &[],
    },
    MetricDef {
        name: HTTP_REQUEST_DURATION_SECONDS,
        kind: MetricKind::Histogram,
        unit: "seconds",
        help: "Time from request received to response ready, by route template, method and status.",
        labels: &["route", "method", "status"],
        buckets: LATENCY_BUCKETS,
    },
    MetricDef {
        name: ACTOR_RESTARTS_TOTAL,
        kind: MetricKind::Counter,
        unit: "restarts",
        help: "Actor restarts by the supervisor, by actor kind and reason (failed: panicked or returned an error, stopped: stopped unasked, spawn_failed: a restart attempt failed).",
        labels: &["actor", "reason"],
        buckets: &[],
    },
    MetricDef {
        name: READY,
        kind: MetricKind::Gauge,
        unit: "boolean",
        help: "1 when /readyz answers 200 (migrations applied, state loaded, database reachable, not draining).",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: DB_POOL_CONNECTIONS,
        kind: MetricKind::Gauge,
        unit: "connections",
        help: "PostgreSQL pool connections by state (idle, in_use).",
        labels: &["state"],
        buckets: &[],
    },
    MetricDef {
        name: AUTH_LOGINS_TOTAL,
        kind: MetricKind::Counter,
        unit: "logins",
        help: "Sign-In with Ethereum attempts by outcome (ok or the rejection reason).",
        labels: &["outcome"],
        buckets: &[],
    },
    MetricDef {
        name: AUTH_NONCES_EXPIRED_TOTAL,
        kind: MetricKind::Counter,
        unit: "nonces",
        help: "Unused sign-in nonces deleted after their expiry.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: INTERACTIONS_TOTAL,
        kind: MetricKind::Counter,
        unit: "interactions",
        help: "Interactions by type and outcome (accepted, duplicate, rejected, unavailable) and reason (none, invalid, unknown_product, inactive_product, origin, rate_limited, overloaded, writer).",
        labels: &["type", "outcome", "reason"],
        buckets: &[],
    },
    MetricDef {
        name: WRITER_BATCH_ROWS,
        kind: MetricKind::Histogram,
        unit: "rows",
        help: "Interaction rows per flush transaction (group commit batch size).",
        labels: &[],
        buckets: ROW_BUCKETS,
    },
    MetricDef {
        name: WRITER_FLUSH_DURATION_SECONDS,
        kind: MetricKind::Histogram,
        unit: "seconds",
        help: "Duration of a flush transaction, begin to commit, by outcome.",
        labels: &["outcome"],
        buckets: LATENCY_BUCKETS,
    },
    MetricDef {
        name: WRITER_FLUSHES_TOTAL,
        kind: MetricKind::Counter,
        unit: "flushes",
        help: "Flush transactions by outcome (committed, failed).",
        labels: &["outcome"],
        buckets: &[],
    },
    MetricDef {
        name: WRITER_SETTLES_WAITING,
        kind: MetricKind::Gauge,
        unit: "actors",
        help: "Product actors waiting for the flushes of their earlier write sets before they (re)load campaign state from the database.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: MAILBOX_DEPTH,
        kind: MetricKind::Gauge,
        unit: "messages",
        help: "Work queued per actor kind: interactions queued in product actors, rows held by the writer.",
        labels: &["actor"],
        buckets: &[],
    },
    MetricDef {
        name: INTERACTIONS_HELD,
        kind: MetricKind::Gauge,
        unit: "interactions",
        help: "Interactions held in product actors (part of the queued ones) until a referral their request read, still being written, is stored or forgotten.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: PRODUCT_ACTORS,
        kind: MetricKind::Gauge,
        unit: "actors",
        help: "Product actors running.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: REFERRALS_TOTAL,
        kind: MetricKind::Counter,
        unit: "referrals",
        help: "Referral registrations by outcome (registered, already_referred, self_referral, cycle).",
        labels: &["outcome"],
        buckets: &[],
    },
    MetricDef {
        name: REFERRAL_CACHE_LOOKUPS_TOTAL,
        kind: MetricKind::Counter,
        unit: "lookups",
        help: "Referral graph lookups by result (hit: product edges in memory, miss: loaded from PostgreSQL).",
        labels: &["result"],
        buckets: &[],
    },
    MetricDef {
        name: RATE_LIMITED_TOTAL,
        kind: MetricKind::Counter,
        unit: "requests",
        help: "Requests refused with 429 by scope (wallet, ip: interactions; nonce_ip: sign-in nonces).",
        labels: &["scope"],
        buckets: &[],
    },
    MetricDef {
        name: WEBHOOKS_TOTAL,
        kind: MetricKind::Counter,
        unit: "requests",
        help: "Shop webhook deliveries by platform and outcome (accepted, duplicate, ignored, ping, unauthorized, invalid, unavailable).",
        labels: &["platform", "outcome"],
        buckets: &[],
    },
    MetricDef {
        name: REWARDS_OUTSTANDING,
        kind: MetricKind::Gauge,
        unit: "rewards",
        help: "Rewards not yet on-chain, by status (pending, pushing) and token address, as the pusher last counted them.",
        labels: &["status", "token"],
        buckets: &[],
    },
    MetricDef {
        name: REWARDS_OLDEST_PENDING_AGE_SECONDS,
        kind: MetricKind::Gauge,
        unit: "seconds",
        help: "Age of the oldest available pending reward per token (0 when none waits).",
        labels: &["token"],
        buckets: &[],
    },
    MetricDef {
        name: PUSH_REWARDS_TOTAL,
        kind: MetricKind::Counter,
        unit: "rewards",
        help: "Reward rows confirmed on-chain, by token address.",
        labels: &["token"],
        buckets: &[],
    },
    MetricDef {
        name: PUSH_BATCHES_TOTAL,
        kind: MetricKind::Counter,
        unit: "batches",
        help: "Push batches finished, by token and outcome (confirmed, failed: reverted, expired: deadline passed unused).",
        labels: &["token", "outcome"],
        buckets: &[],
    },
    MetricDef {
        name: PUSH_DURATION_SECONDS,
        kind: MetricKind::Histogram,
        unit: "seconds",
        help: "Time from a batch written to the ledger to its confirmation on-chain, by token.",
        labels: &["token"],
        buckets: PUSH_BUCKETS,
    },
    MetricDef {
        name: PUSH_GAS_PER_REWARD,
        kind: MetricKind::Histogram,
        unit: "gas",
        help: "Gas used by a confirmed pushRewards transaction divided by its recipients, by token.",
        labels: &["token"],
        buckets: GAS_BUCKETS,
    },
    MetricDef {
        name: PUSH_ERRORS_TOTAL,
        kind: MetricKind::Counter,
        unit: "errors",
        help: "Pusher errors by token and kind (rpc: node unreachable or refused, revert: the bank refused the batch, database).",
        labels: &["token", "kind"],
        buckets: &[],
    },
    MetricDef {
        name: CHAIN_CALLS_TOTAL,
        kind: MetricKind::Counter,
        unit: "calls",
        help: "Manager transactions for campaigns (allocate_campaign_budget, deactivate_campaign) by outcome (ok, failed).",
        labels: &["call", "outcome"],
        buckets: &[],
    },
    MetricDef {
        name: INDEXER_HEAD_LAG_BLOCKS,
        kind: MetricKind::Gauge,
        unit: "blocks",
        help: "Blocks between the chain head and the last block the indexer has stored.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: INDEXER_BLOCK,
        kind: MetricKind::Gauge,
        unit: "block",
        help: "Last block the indexer has stored (confirmed).",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: INDEXER_EVENTS_TOTAL,
        kind: MetricKind::Counter,
        unit: "events",
        help: "MultiTokenPushPull events stored by the indexer, by event (RewardAdded, RewardClaimed).",
        labels: &["event"],
        buckets: &[],
    },
    MetricDef {
        name: INDEXER_REORGS_TOTAL,
        kind: MetricKind::Counter,
        unit: "reorgs",
        help: "Reorganisations detected by the indexer (a stored block hash no longer on the chain); its events were rolled back.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: REWARDS_CREATED_TOTAL,
        kind: MetricKind::Counter,
        unit: "rewards",
        help: "Reward rows committed with their interactions, by recipient type (user, referrer_l1..referrer_l5) and token address.",
        labels: &["recipient_type", "token"],
        buckets: &[],
    },
    MetricDef {
        name: CAMPAIGNS,
        kind: MetricKind::Gauge,
        unit: "campaigns",
        help: "Campaigns by status (draft, active, paused, deactivated, budget_exhausted, expired), counted in PostgreSQL every maintenance tick.",
        labels: &["status"],
        buckets: &[],
    },
    MetricDef {
        name: CAMPAIGN_BUDGET_REMAINING_TOKENS,
        kind: MetricKind::Gauge,
        unit: "tokens",
        help: "Budget left in active capped campaigns, in whole tokens (cap minus used, over the bank's decimals), by token address; 0 when a bank's token has no active capped campaign.",
        labels: &["token"],
        buckets: &[],
    },
    MetricDef {
        name: CAMPAIGNS_LOW_BUDGET,
        kind: MetricKind::Gauge,
        unit: "campaigns",
        help: "Active capped campaigns with less than 10% of their cap left, by token address.",
        labels: &["token"],
        buckets: &[],
    },
    MetricDef {
        name: PROCESS_RESIDENT_MEMORY_BYTES,
        kind: MetricKind::Gauge,
        unit: "bytes",
        help: "Resident memory of the service process (VmRSS of /proc/self/status).",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: PROCESS_CPU_SECONDS_TOTAL,
        kind: MetricKind::Counter,
        unit: "seconds",
        help: "User and system CPU time of the service process, in whole seconds (the metrics facade counts integers; use rate over a minute or more).",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: PROCESS_OPEN_FDS,
        kind: MetricKind::Gauge,
        unit: "descriptors",
        help: "Open file descriptors of the service process (sockets included).",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: PROCESS_THREADS,
        kind: MetricKind::Gauge,
        unit: "threads",
        help: "OS threads of the service process.",
        labels: &[],
        buckets: &[],
    },
    MetricDef {
        name: BUILD_INFO,
        kind: MetricKind::Gauge,
        unit: "info",
        help: "Always 1; the version label says which build is running.",
        labels: &["version"],
        buckets: &[],
    },
];

/// Installs the process-wide Prometheus recorder once and returns its handle.
/// Several app instances in one process (tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for def in CATALOGUE.iter().filter(|d| d.kind == MetricKind::Histogram) {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(def.name.to_owned()), def.buckets)
                    .expect("catalogue buckets are non-empty");
            }
            let handle = builder
                .install_recorder()
                .expect("the metrics recorder is installed once per process");
            describe_all();
            register_known_series();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn describe_all() {
    for def in CATALOGUE {
        let help = def.help;
        match def.kind {
            MetricKind::Counter => metrics::describe_counter!(def.name, help),
            MetricKind::Gauge => metrics::describe_gauge!(def.name, help),
            MetricKind::Histogram => metrics::describe_histogram!(def.name, help),
        }
    }
}

/// Counter series whose label values are known up front, started at zero so that
/// `rate()`/`increase()` see their first event and alerts have a series to compare
/// (actor restarts are started by the supervisors, which know their children).
/// metrics-exporter-prometheus renders a family — HELP and TYPE lines included —
/// only once one of its series is registered: `describe_*` alone renders nothing.
const KNOWN_COUNTERS: &[(&str, &[(&str, &str)])] = &[
    (WRITER_FLUSHES_TOTAL, &[("outcome", "committed")]),
    (WRITER_FLUSHES_TOTAL, &[("outcome", "failed")]),
    (RATE_LIMITED_TOTAL, &[("scope", "wallet")]),
    (RATE_LIMITED_TOTAL, &[("scope", "ip")]),
    (RATE_LIMITED_TOTAL, &[("scope", "nonce_ip")]),
    (REFERRAL_CACHE_LOOKUPS_TOTAL, &[("result", "hit")]),
    (REFERRAL_CACHE_LOOKUPS_TOTAL, &[("result", "miss")]),
    (AUTH_NONCES_EXPIRED_TOTAL, &[]),
];

fn register_known_series() {
    for (name, labels) in KNOWN_COUNTERS {
        start_counter(name, labels);
    }
}

/// Registers a counter series at zero (or leaves it as it is).
pub fn start_counter(name: &'static str, labels: &[(&'static str, &'static str)]) {
    metrics::counter!(name, labels).increment(0);
}

/// Starts `tracing` output once per process (later calls are no-ops).
pub fn init_logging(settings: &TelemetrySettings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_follows_prometheus_naming() {
        let mut names = std::collections::HashSet::new();
        for def in CATALOGUE {
            assert!(names.insert(def.name), "{} declared twice", def.name);
            assert!(def.name.starts_with("rewardflow_"), "{}", def.name);
            assert!(!def.help.is_empty(), "{} has no help", def.name);
            match def.kind {
                MetricKind::Counter => assert!(def.name.ends_with("_total"), "{}", def.name),
                MetricKind::Histogram => {
                    assert!(!def.buckets.is_empty(), "{} has no buckets", def.name);
                    assert!(def.buckets.windows(2).all(|w| w[0] < w[1]), "{}", def.name);
                }
                MetricKind::Gauge => assert!(!def.name.ends_with("_total"), "{}", def.name),
            }
        }
    }
}
