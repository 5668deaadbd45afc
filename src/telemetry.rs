//! Every metric the service exports — name, type, unit, help, labels, buckets — in
//! one catalogue, plus the Prometheus recorder and log set-up. Names follow the
//! Prometheus conventions: base units, `_total` counters, `_seconds` histograms with
//! explicit buckets, bounded label sets.

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

const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub const HTTP_REQUESTS_TOTAL: &str = "rewardflow_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "rewardflow_http_request_duration_seconds";
pub const ACTOR_RESTARTS_TOTAL: &str = "rewardflow_actor_restarts_total";
pub const ACTOR_MELTDOWNS_TOTAL: &str = "rewardflow_actor_meltdowns_total";
pub const READY: &str = "rewardflow_ready";
pub const DB_POOL_CONNECTIONS: &str = "rewardflow_db_pool_connections";
pub const AUTH_LOGINS_TOTAL: &str = "rewardflow_auth_logins_total";
pub const AUTH_NONCES_EXPIRED_TOTAL: &str = "rewardflow_auth_nonces_expired_total";
pub const BUILD_INFO: &str = "rewardflow_build_info";

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
        help: "Actor restarts by the supervisor, by actor kind and reason (panic, error, stopped, spawn_failed).",
        labels: &["actor", "reason"],
        buckets: &[],
    },
    MetricDef {
        name: ACTOR_MELTDOWNS_TOTAL,
        kind: MetricKind::Counter,
        unit: "meltdowns",
        help: "Times an actor restarted too often within the meltdown window and its supervisor gave up.",
        labels: &["actor"],
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
