//! One typed `Settings`, loaded from defaults → `config.toml` → `REWARDFLOW_*`
//! environment → CLI flags (see `load.rs`). Every key is documented in the
//! repository's `config.toml`, with its unit in its name.

mod chain;
mod load;
mod secret;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use chain::{ChainSettings, resolve_key};
pub use load::{ConfigError, ConfigSource, Override};
pub use secret::{Secret, redact_urls, resolve_jwt_secret};

/// The environment-variable prefix; nesting uses a double underscore
/// (`REWARDFLOW_SERVER__LISTEN` is `server.listen`).
pub const ENV_PREFIX: &str = "REWARDFLOW_";
/// The longest duration setting accepted, in seconds.
const MAX_DURATION_SECS: u64 = 10 * 365 * 86_400;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub dev: DevSettings,
    pub auth: AuthSettings,
    pub ingest: IngestSettings,
    pub rate_limit: RateLimitSettings,
    pub supervisor: SupervisorSettings,
    pub telemetry: TelemetrySettings,
    pub chain: ChainSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the HTTP front door binds.
    pub listen: SocketAddr,
    /// Largest accepted request body; larger bodies get 413.
    pub body_limit_bytes: u64,
    /// Time a request may take before the server answers 503.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests before stopping actors.
    pub shutdown_grace_ms: u64,
    /// Largest request head (request line and headers, HTTP/1.1) or header list
    /// (h2); larger → 431 or a closed connection. At least 8192.
    pub max_header_bytes: u64,
    /// Time a client has to send its request head; a slower one is disconnected.
    pub header_read_timeout_ms: u64,
    /// Browser origins allowed to call the API besides the products' own (CORS),
    /// e.g. the merchants' dashboard.
    pub cors_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            max_header_bytes: 16 * 1024,
            header_read_timeout_ms: 5_000,
            cors_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// PostgreSQL URL. Empty: `serve` refuses to start, `dev` starts its own cluster.
    pub url: Secret,
    pub max_connections: u32,
    pub min_connections: u32,
    /// How long a caller waits for a pooled connection before failing fast.
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations when the service starts.
    pub migrate_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::default(),
            max_connections: 16,
            min_connections: 2,
            acquire_timeout_ms: 2_000,
            migrate_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevSettings {
    /// Directory for local state: the dev PostgreSQL cluster and generated dev secrets.
    pub data_dir: PathBuf,
    /// TCP port of the dev PostgreSQL cluster (on 127.0.0.1; 0: a free one).
    pub postgres_port: u16,
    /// Directory holding `initdb`, `pg_ctl`, `postgres`. Empty: auto-detect.
    pub postgres_bin_dir: PathBuf,
    /// Server settings (`name=value`) for the dev cluster: sizing for a write-heavy
    /// service. Durability settings (fsync, synchronous_commit) are left on.
    pub postgres_settings: Vec<String>,
    /// The anvil binary `rewardflow dev` starts when `chain.rpc_url` is empty.
    pub anvil_bin: PathBuf,
    /// Port of the dev anvil node (on 127.0.0.1; 0: one the system chooses).
    pub anvil_port: u16,
    /// Seconds between blocks of the dev anvil node.
    pub anvil_block_time_secs: u64,
    /// The deploy script `rewardflow dev` runs against its anvil node.
    pub deploy_script: PathBuf,
    /// `chain.push_interval_ms` under `rewardflow dev`: rewards show up on-chain
    /// within seconds.
    pub push_interval_ms: u64,
}

impl Default for DevSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".rewardflow"),
            postgres_port: 54329,
            postgres_bin_dir: PathBuf::new(),
            postgres_settings: vec![
                "shared_buffers=1GB".into(),
                "max_wal_size=8GB".into(),
                "checkpoint_timeout=15min".into(),
                "wal_buffers=64MB".into(),
                "max_connections=200".into(),
            ],
            anvil_bin: PathBuf::from(
                "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil",
            ),
            anvil_port: 8545,
            anvil_block_time_secs: 1,
            deploy_script: PathBuf::from("contracts/scripts/deploy.sh"),
            push_interval_ms: 3_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HMAC secret for session tokens. Environment only (`REWARDFLOW_AUTH__JWT_SECRET`).
    pub jwt_secret: Secret,
    /// File holding the session-token secret. When neither this nor `jwt_secret` is
    /// set, a secret is generated once under `dev.data_dir`.
    pub jwt_secret_file: PathBuf,
    /// Lifetime of a session token.
    pub token_ttl_secs: u64,
    /// Lifetime of a sign-in nonce.
    pub nonce_ttl_secs: u64,
    /// Hosts accepted as the `domain` of a Sign-In with Ethereum message (port ignored).
    pub siwe_domains: Vec<String>,
    /// Tolerated clock difference for `Issued At` in the future.
    pub clock_skew_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::default(),
            jwt_secret_file: PathBuf::new(),
            token_ttl_secs: 86_400,
            nonce_ttl_secs: 300,
            siwe_domains: vec!["localhost".into(), "127.0.0.1".into()],
            clock_skew_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Interactions a product actor may have queued; beyond, requests get 503.
    pub product_mailbox_capacity: u64,
    /// Rows the writer may hold (buffered and being flushed); beyond, 503.
    pub writer_max_pending_rows: u64,
    /// Most interaction rows in one flush transaction.
    pub writer_max_batch_rows: u64,
    /// Flush transactions that may run at once.
    pub writer_flush_concurrency: u64,
    /// After a failed flush, how often the writer probes the database.
    pub writer_retry_interval_ms: u64,
    /// Interactions without idempotency or natural key are duplicates of an identical
    /// one (same wallet, type and data) seen within this window.
    pub dedup_window_secs: u64,
    /// Idempotency and natural keys remembered in memory (all products); older keys
    /// are still caught by the database's unique indexes.
    pub dedup_cache_entries: u64,
    /// Referral edges kept in memory (all products); evicted products reload.
    pub referral_cache_edges: u64,
    /// `Retry-After` sent with 503 answers under overload.
    pub retry_after_secs: u64,
    /// Product actors reading their state from the database at once (a burst of
    /// first requests must leave the pool to the writer); a start waiting for its
    /// product's earlier writes to settle holds no place.
    pub product_loads_at_once: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            product_mailbox_capacity: 20_000,
            writer_max_pending_rows: 100_000,
            writer_max_batch_rows: 5_000,
            writer_flush_concurrency: 2,
            writer_retry_interval_ms: 250,
            dedup_window_secs: 60,
            dedup_cache_entries: 1_000_000,
            referral_cache_edges: 5_000_000,
            retry_after_secs: 1,
            product_loads_at_once: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Interactions one wallet may send per hour (0: no limit).
    pub per_wallet_per_hour: u64,
    /// Interactions one source IP may send per hour (0: no limit; an IPv6 source
    /// is its /64). Generous: many users share a NAT address. `rewardflow dev`
    /// turns it off.
    pub per_ip_per_hour: u64,
    /// Sign-in nonces one source IP (IPv6: its /64) may ask for per hour (0: no limit). Each is a
    /// row until it is used or expires, and asking needs no credentials.
    pub nonces_per_ip_per_hour: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_wallet_per_hour: 100,
            per_ip_per_hour: 360_000,
            nonces_per_ip_per_hour: 3_600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSettings {
    /// First restart delay; doubles on each restart up to `restart_backoff_max_ms`.
    pub restart_backoff_initial_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// More restarts than this within `meltdown_window_secs` stops the service.
    pub meltdown_max_restarts: u32,
    pub meltdown_window_secs: u64,
    /// Period of the maintenance actor (database probe, expired nonce sweep).
    pub maintenance_interval_ms: u64,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        Self {
            restart_backoff_initial_ms: 100,
            restart_backoff_max_ms: 10_000,
            meltdown_max_restarts: 10,
            meltdown_window_secs: 60,
            maintenance_interval_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `rewardflow=debug,info`.
    pub log_level: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

impl Settings {
    /// Loads the layered configuration; see [`ConfigSource`].
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        load::load(source)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("settings always serialize")
    }

    /// Range checks that serde cannot express; each error names its key.
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("server.body_limit_bytes", self.server.body_limit_bytes),
            ("server.request_timeout_ms", self.server.request_timeout_ms),
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
            (
                "database.acquire_timeout_ms",
                self.database.acquire_timeout_ms,
            ),
            (
                "ingest.product_loads_at_once",
                self.ingest.product_loads_at_once,
            ),
            (
                "ingest.product_mailbox_capacity",
                self.ingest.product_mailbox_capacity,
            ),
            (
                "ingest.writer_max_pending_rows",
                self.ingest.writer_max_pending_rows,
            ),
            (
                "ingest.writer_max_batch_rows",
                self.ingest.writer_max_batch_rows,
            ),
            (
                "ingest.writer_flush_concurrency",
                self.ingest.writer_flush_concurrency,
            ),
            (
                "ingest.writer_retry_interval_ms",
                self.ingest.writer_retry_interval_ms,
            ),
            ("dev.push_interval_ms", self.dev.push_interval_ms),
            ("auth.token_ttl_secs", self.auth.token_ttl_secs),
            ("auth.nonce_ttl_secs", self.auth.nonce_ttl_secs),
            (
                "supervisor.restart_backoff_initial_ms",
                self.supervisor.restart_backoff_initial_ms,
            ),
            (
                "supervisor.meltdown_window_secs",
                self.supervisor.meltdown_window_secs,
            ),
            (
                "supervisor.maintenance_interval_ms",
                self.supervisor.maintenance_interval_ms,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        // Added to dates and instants: far beyond any sensible value they would
        // overflow them (a panic per request), so "for ever" is refused here.
        let durations = [
            ("auth.token_ttl_secs", self.auth.token_ttl_secs),
            ("auth.nonce_ttl_secs", self.auth.nonce_ttl_secs),
            ("auth.clock_skew_secs", self.auth.clock_skew_secs),
            ("ingest.dedup_window_secs", self.ingest.dedup_window_secs),
            (
                "supervisor.meltdown_window_secs",
                self.supervisor.meltdown_window_secs,
            ),
            ("chain.batch_ttl_secs", self.chain.batch_ttl_secs),
            (
                "chain.deadline_margin_secs",
                self.chain.deadline_margin_secs,
            ),
            (
                "chain.receipt_timeout_secs",
                self.chain.receipt_timeout_secs,
            ),
        ];
        for (key, value) in durations {
            if value > MAX_DURATION_SECS {
                return Err(ConfigError::invalid(
                    key,
                    &format!("must be at most {MAX_DURATION_SECS} (ten years)"),
                ));
            }
        }
        if !(8192..=1 << 20).contains(&self.server.max_header_bytes) {
            return Err(ConfigError::invalid(
                "server.max_header_bytes",
                "must be between 8192 and 1048576",
            ));
        }
        if let Err(err) = crate::domain::product::normalize_origins(&self.server.cors_origins) {
            return Err(ConfigError::invalid(
                "server.cors_origins",
                &err.to_string(),
            ));
        }
        if self.database.min_connections > self.database.max_connections {
            return Err(ConfigError::invalid(
                "database.min_connections",
                "must not exceed database.max_connections",
            ));
        }
        if self.supervisor.restart_backoff_max_ms < self.supervisor.restart_backoff_initial_ms {
            return Err(ConfigError::invalid(
                "supervisor.restart_backoff_max_ms",
                "must be at least supervisor.restart_backoff_initial_ms",
            ));
        }
        if self.auth.siwe_domains.is_empty() {
            return Err(ConfigError::invalid(
                "auth.siwe_domains",
                "must list at least one host",
            ));
        }
        self.chain.validate()?;
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).is_err() {
            return Err(ConfigError::invalid(
                "telemetry.log_level",
                "is not a valid tracing filter directive",
            ));
        }
        Ok(())
    }
}
