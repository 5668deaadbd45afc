//! `[chain]`: the EVM node, the contracts, the signer keys and the pusher's and
//! indexer's pacing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSettings {
    /// JSON-RPC URL of the node. Empty: no pushes (rewards stay `pending`), no indexer;
    /// `rewardflow dev` starts a local anvil instead. Shown by `print-config` without
    /// its path and query, where providers put API keys.
    #[serde(serialize_with = "host_only")]
    pub rpc_url: String,
    /// The global MultiTokenPushPull contract the indexer follows. Empty: no indexer.
    pub multi_token_push_pull: String,
    /// Private key (hex) that signs the EIP-712 batches and sends `pushRewards`.
    /// Environment only (`REWARDFLOW_CHAIN__DISTRIBUTOR_KEY`).
    pub distributor_key: Secret,
    /// File holding the distributor key (used when `distributor_key` is empty).
    pub distributor_key_file: PathBuf,
    /// Private key (hex) holding MANAGER_ROLE on the banks: allocates and deactivates
    /// campaign budgets. Environment only (`REWARDFLOW_CHAIN__MANAGER_KEY`).
    pub manager_key: Secret,
    /// File holding the manager key (used when `manager_key` is empty).
    pub manager_key_file: PathBuf,
    /// How often each pusher looks for available pending rewards.
    pub push_interval_ms: u64,
    /// Recipients in one batch; a buffer this full is pushed at once.
    pub max_batch: u64,
    /// Gas one `pushRewards` transaction may use; bigger batches are split.
    pub max_gas_per_tx: u64,
    /// Gas budgeted per recipient when splitting (a first-time recipient costs ≈ 25k).
    pub gas_per_recipient: u64,
    /// Gas budgeted per transaction on top of the recipients.
    pub gas_per_batch: u64,
    /// Lifetime of a signed batch: its on-chain deadline is now + this.
    pub batch_ttl_secs: u64,
    /// After the deadline plus this margin an unused nonce is dead and its rewards
    /// go back to `pending`.
    pub deadline_margin_secs: u64,
    /// Blocks on top of a transaction's block before it counts as final (0: the
    /// receipt is enough). Also the indexer's depth.
    pub confirmations: u64,
    /// Per-bank pause after a failed push, doubling up to `failure_backoff_max_ms`.
    pub failure_backoff_initial_ms: u64,
    pub failure_backoff_max_ms: u64,
    /// Timeout of one JSON-RPC request.
    pub rpc_timeout_ms: u64,
    /// How long a bank call (allocate, deactivate) waits to be mined; then it is
    /// given up and made again at the next round.
    pub receipt_timeout_secs: u64,
    /// First block the indexer reads when it has no cursor yet.
    pub indexer_from_block: u64,
    /// How often the indexer polls the node for new blocks.
    pub indexer_poll_interval_ms: u64,
    /// Most blocks asked for in one `eth_getLogs`.
    pub indexer_max_block_range: u64,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self {
            rpc_url: String::new(),
            multi_token_push_pull: String::new(),
            distributor_key: Secret::default(),
            distributor_key_file: PathBuf::new(),
            manager_key: Secret::default(),
            manager_key_file: PathBuf::new(),
            push_interval_ms: 300_000,
            max_batch: 100,
            max_gas_per_tx: 10_000_000,
            gas_per_recipient: 30_000,
            gas_per_batch: 120_000,
            batch_ttl_secs: 900,
            deadline_margin_secs: 120,
            confirmations: 2,
            failure_backoff_initial_ms: 1_000,
            failure_backoff_max_ms: 300_000,
            rpc_timeout_ms: 10_000,
            receipt_timeout_secs: 120,
            indexer_from_block: 0,
            indexer_poll_interval_ms: 2_000,
            indexer_max_block_range: 2_000,
        }
    }
}

impl ChainSettings {
    pub fn enabled(&self) -> bool {
        !self.rpc_url.is_empty()
    }

    /// Recipients one transaction may carry under `max_gas_per_tx` (at least 1),
    /// and never more than `max_batch`.
    pub fn recipients_per_tx(&self) -> usize {
        let room = self.max_gas_per_tx.saturating_sub(self.gas_per_batch);
        (room / self.gas_per_recipient.max(1)).clamp(1, self.max_batch) as usize
    }

    /// Gas budgeted for a transaction carrying `recipients`.
    pub fn budgeted_gas(&self, recipients: usize) -> u64 {
        self.gas_per_batch
            .saturating_add(self.gas_per_recipient.saturating_mul(recipients as u64))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("chain.push_interval_ms", self.push_interval_ms),
            ("chain.max_batch", self.max_batch),
            ("chain.max_gas_per_tx", self.max_gas_per_tx),
            ("chain.gas_per_recipient", self.gas_per_recipient),
            ("chain.batch_ttl_secs", self.batch_ttl_secs),
            (
                "chain.failure_backoff_initial_ms",
                self.failure_backoff_initial_ms,
            ),
            ("chain.rpc_timeout_ms", self.rpc_timeout_ms),
            ("chain.receipt_timeout_secs", self.receipt_timeout_secs),
            (
                "chain.indexer_poll_interval_ms",
                self.indexer_poll_interval_ms,
            ),
            (
                "chain.indexer_max_block_range",
                self.indexer_max_block_range,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        if self.failure_backoff_max_ms < self.failure_backoff_initial_ms {
            return Err(ConfigError::invalid(
                "chain.failure_backoff_max_ms",
                "must be at least chain.failure_backoff_initial_ms",
            ));
        }
        if self.max_gas_per_tx < self.gas_per_batch + self.gas_per_recipient {
            return Err(ConfigError::invalid(
                "chain.max_gas_per_tx",
                "must fit at least one recipient (gas_per_batch + gas_per_recipient)",
            ));
        }
        if !self.rpc_url.is_empty() && reqwest_url(&self.rpc_url).is_none() {
            return Err(ConfigError::invalid("chain.rpc_url", "is not a valid URL"));
        }
        if !self.multi_token_push_pull.is_empty()
            && crate::domain::ids::parse_address(&self.multi_token_push_pull).is_err()
        {
            return Err(ConfigError::invalid(
                "chain.multi_token_push_pull",
                "is not a 0x-prefixed 20-byte address",
            ));
        }
        Ok(())
    }
}

fn reqwest_url(raw: &str) -> Option<alloy::transports::http::reqwest::Url> {
    raw.parse().ok()
}

/// A key from the environment value, else from the file; `None` when neither is set.
pub fn resolve_key(
    value: &Secret,
    file: &std::path::Path,
    file_key: &str,
) -> Result<Option<Secret>, ConfigError> {
    if !value.is_empty() {
        return Ok(Some(value.clone()));
    }
    if file.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).map_err(|err| {
        ConfigError::invalid(file_key, &format!("cannot read {}: {err}", file.display()))
    })?;
    Ok(Some(Secret::new(text.trim())))
}

fn host_only<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&super::redact_urls(url))
}
