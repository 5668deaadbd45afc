//! The EVM side: a read connection to the node, transaction senders that own their
//! account's nonce sequence, and the contract calls the service makes. Everything
//! that talks JSON-RPC lives here; decisions stay in `domain/`.

pub mod contracts;
pub mod local_node;
pub mod push;

use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{BlockNumberOrTag, Filter, Log, TransactionReceipt};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::{Http, reqwest};
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use crate::config::{ChainSettings, ConfigError, redact_urls, resolve_key};
use contracts::{MultiTokenPushPull, ProductBank};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached, timed out or refused the request.
    #[error("node: {0}")]
    Rpc(String),
    /// The contract refused the call (it would revert, or did).
    #[error("reverted: {0}")]
    Reverted(String),
}

impl ChainError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rpc(_) => "rpc",
            Self::Reverted(_) => "revert",
        }
    }
}

/// The node's error, without the node's URL path and query (API keys live there):
/// these texts reach logs, campaign views and API answers.
fn rpc<E: std::fmt::Display>(err: E) -> ChainError {
    ChainError::Rpc(redact_urls(&err.to_string()))
}

/// A contract call's failure: a decoded revert when the node says why, else an RPC error.
fn call_error(err: alloy::contract::Error) -> ChainError {
    if let Some(decoded) = err.as_decoded_interface_error::<ProductBank::ProductBankErrors>() {
        return ChainError::Reverted(format!("{decoded:?}"));
    }
    if let Some(data) = err.as_revert_data() {
        return ChainError::Reverted(format!("revert data {data}"));
    }
    if let alloy::contract::Error::TransportError(t) = &err
        && let Some(resp) = t.as_error_resp()
        && resp.message.contains("revert")
    {
        return ChainError::Reverted(resp.message.to_string());
    }
    rpc(err)
}

/// A read-only connection to the node.
#[derive(Clone)]
pub struct Chain {
    pub provider: DynProvider,
    /// Asked of the node on first use, then kept (shared by the clones), so that
    /// the service starts, and takes interactions, while the node is down.
    id: Arc<tokio::sync::OnceCell<u64>>,
}

fn http_client(url: &str, timeout: Duration) -> Result<RpcClient, ChainError> {
    let url: reqwest::Url = url.parse().map_err(rpc)?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(rpc)?;
    Ok(RpcClient::new(Http::with_client(client, url), true))
}

impl Chain {
    /// A client of the node at `chain.rpc_url`; nothing is asked of the node yet.
    pub fn new(settings: &ChainSettings) -> Result<Self, ChainError> {
        let timeout = Duration::from_millis(settings.rpc_timeout_ms);
        let provider = ProviderBuilder::new()
            .connect_client(http_client(&settings.rpc_url, timeout)?)
            .erased();
        Ok(Self {
            provider,
            id: Arc::default(),
        })
    }

    /// The node's chain id: asked the first time it is needed, then remembered.
    pub async fn chain_id(&self) -> Result<u64, ChainError> {
        self.id
            .get_or_try_init(|| async { self.provider.get_chain_id().await.map_err(rpc) })
            .await
            .copied()
    }

    pub async fn head(&self) -> Result<u64, ChainError> {
        self.provider.get_block_number().await.map_err(rpc)
    }

    /// Number, hash and time of a block; `None` if the node does not have it.
    pub async fn block(&self, number: u64) -> Result<Option<BlockRef>, ChainError> {
        self.block_at(number.into()).await
    }

    /// The node's latest block, in one call.
    pub async fn latest_block(&self) -> Result<Option<BlockRef>, ChainError> {
        self.block_at(BlockNumberOrTag::Latest).await
    }

    async fn block_at(&self, at: BlockNumberOrTag) -> Result<Option<BlockRef>, ChainError> {
        let block = self.provider.get_block_by_number(at).await.map_err(rpc)?;
        Ok(block.map(|b| BlockRef {
            number: b.header.number,
            hash: b.header.hash,
            parent_hash: b.header.parent_hash,
            time: DateTime::from_timestamp(b.header.timestamp as i64, 0).unwrap_or_default(),
            gas_limit: b.header.gas_limit,
        }))
    }

    pub async fn receipt(&self, tx: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        self.provider.get_transaction_receipt(tx).await.map_err(rpc)
    }

    /// Whether the node knows the transaction: mined, or waiting in its pool.
    pub async fn knows_transaction(&self, tx: B256) -> Result<bool, ChainError> {
        Ok(self
            .provider
            .get_transaction_by_hash(tx)
            .await
            .map_err(rpc)?
            .is_some())
    }

    pub async fn logs(&self, filter: &Filter) -> Result<Vec<Log>, ChainError> {
        self.provider.get_logs(filter).await.map_err(rpc)
    }

    /// The service signs for and pays from a bank only if it is the ProductBank of
    /// that very product: a call to a plain address "succeeds" and pays nothing, and
    /// another product's bank (every bank grants the service's keys its roles)
    /// would pay this product's rewards out of that product's tokens.
    pub async fn ensure_bank(&self, bank: Address, product: B256) -> Result<(), ChainError> {
        let code = self.provider.get_code_at(bank).await.map_err(rpc)?;
        if code.is_empty() {
            return Err(ChainError::Reverted(format!("no contract at {bank}")));
        }
        let owner = match ProductBank::new(bank, &self.provider)
            .productId()
            .call()
            .await
        {
            Ok(owner) => owner,
            Err(err) => {
                let transport = matches!(err, alloy::contract::Error::TransportError(_));
                return Err(match call_error(err) {
                    // The node did not answer: nothing is known of the contract yet.
                    err @ ChainError::Rpc(_) if transport => err,
                    // It reverted, or answered nothing or something else than a bytes32.
                    _ => ChainError::Reverted(format!("{bank} is not a ProductBank")),
                });
            }
        };
        if owner != product {
            return Err(ChainError::Reverted(format!(
                "{bank} is the bank of product {owner}, not of {product}"
            )));
        }
        Ok(())
    }

    /// `isNonceUsed` as of block `number`.
    pub async fn is_nonce_used_at(
        &self,
        bank: Address,
        nonce: B256,
        number: u64,
    ) -> Result<bool, ChainError> {
        ProductBank::new(bank, &self.provider)
            .isNonceUsed(nonce)
            .block(number.into())
            .call()
            .await
            .map_err(call_error)
    }

    pub async fn is_campaign_active(
        &self,
        bank: Address,
        campaign: B256,
    ) -> Result<bool, ChainError> {
        ProductBank::new(bank, &self.provider)
            .isCampaignActive(campaign)
            .call()
            .await
            .map_err(call_error)
    }

    pub async fn pending_amount(
        &self,
        push_pull: Address,
        token: Address,
        user: Address,
    ) -> Result<U256, ChainError> {
        MultiTokenPushPull::new(push_pull, &self.provider)
            .getPendingAmount(token, user)
            .call()
            .await
            .map_err(call_error)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    pub time: DateTime<Utc>,
    pub gas_limit: u64,
}

/// An account that sends transactions. It hands out its nonces itself, under a lock,
/// so that concurrent pushers and campaign calls of one key never collide; after a
/// failed send it asks the node again.
pub struct Sender {
    pub address: Address,
    signer: PrivateKeySigner,
    provider: DynProvider,
    next_nonce: Mutex<Option<u64>>,
    /// How long a bank call waits for its receipt (`chain.receipt_timeout_secs`).
    receipt_timeout: Duration,
}

impl Sender {
    pub fn new(settings: &ChainSettings, key: &str) -> Result<Self, ChainError> {
        let signer: PrivateKeySigner = key
            .trim()
            .parse()
            .map_err(|e| ChainError::Rpc(format!("invalid private key: {e}")))?;
        let timeout = Duration::from_millis(settings.rpc_timeout_ms);
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer.clone()))
            .connect_client(http_client(&settings.rpc_url, timeout)?)
            .erased();
        Ok(Self {
            address: signer.address(),
            signer,
            provider,
            next_nonce: Mutex::new(None),
            receipt_timeout: Duration::from_secs(settings.receipt_timeout_secs),
        })
    }

    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    /// Signs an EIP-712 digest: 65 bytes r ‖ s ‖ v (v = 27 or 28).
    pub fn sign_digest(&self, digest: B256) -> Result<Bytes, ChainError> {
        use alloy::signers::SignerSync;
        let signature = self
            .signer
            .sign_hash_sync(&digest)
            .map_err(|e| ChainError::Rpc(format!("signing: {e}")))?;
        Ok(Bytes::from(signature.as_bytes().to_vec()))
    }

    /// `ProductBank.pushRewards`; returns the transaction hash once the node took it.
    pub async fn push_rewards(
        &self,
        bank: Address,
        batch: &crate::domain::push::PushRewards,
        signature: Bytes,
    ) -> Result<B256, ChainError> {
        let rewards = batch
            .rewards
            .iter()
            .map(|r| contracts::ProductBank::Reward {
                user: r.user,
                amount: r.amount,
            })
            .collect::<Vec<_>>();
        let contract = ProductBank::new(bank, &self.provider);
        let call = contract.pushRewards(
            batch.campaignId,
            batch.token,
            rewards,
            batch.nonce,
            batch.deadline,
            signature,
        );
        let mut next = self.next_nonce.lock().await;
        let gas = call.estimate_gas().await.map_err(call_error)?;
        let nonce = self.nonce(&mut next).await?;
        match call.gas(gas + gas / 5).nonce(nonce).send().await {
            Ok(pending) => {
                *next = Some(nonce + 1);
                Ok(*pending.tx_hash())
            }
            Err(err) => {
                *next = None;
                Err(call_error(err))
            }
        }
    }

    /// `ProductBank.allocateCampaignBudget` (0 = unlimited), waited for.
    pub async fn allocate_campaign_budget(
        &self,
        bank: Address,
        campaign: B256,
        token: Address,
        budget: U256,
    ) -> Result<B256, ChainError> {
        let contract = ProductBank::new(bank, &self.provider);
        let call = contract.allocateCampaignBudget(campaign, token, budget);
        let mut next = self.next_nonce.lock().await;
        let gas = call.estimate_gas().await.map_err(call_error)?;
        let nonce = self.nonce(&mut next).await?;
        let sent = call.gas(gas + gas / 5).nonce(nonce).send().await;
        self.settle(&mut next, nonce, sent).await
    }

    /// `ProductBank.deactivateCampaign`, waited for.
    pub async fn deactivate_campaign(
        &self,
        bank: Address,
        campaign: B256,
    ) -> Result<B256, ChainError> {
        let contract = ProductBank::new(bank, &self.provider);
        let call = contract.deactivateCampaign(campaign);
        let mut next = self.next_nonce.lock().await;
        let gas = call.estimate_gas().await.map_err(call_error)?;
        let nonce = self.nonce(&mut next).await?;
        let sent = call.gas(gas + gas / 5).nonce(nonce).send().await;
        self.settle(&mut next, nonce, sent).await
    }

    /// Lowers the cached account nonce to the node's when the node holds fewer of
    /// our transactions than we handed out: one we sent was dropped from its pool,
    /// and every later one waits behind that gap for ever. The next send then takes
    /// the missing nonce. Returns whether the cache was ahead.
    pub async fn resync_nonce(&self) -> Result<bool, ChainError> {
        let mut next = self.next_nonce.lock().await;
        let Some(cached) = *next else {
            return Ok(false);
        };
        let held = self
            .provider
            .get_transaction_count(self.address)
            .pending()
            .await
            .map_err(rpc)?;
        if held < cached {
            *next = Some(held);
            return Ok(true);
        }
        Ok(false)
    }

    async fn nonce(&self, next: &mut Option<u64>) -> Result<u64, ChainError> {
        if let Some(n) = *next {
            return Ok(n);
        }
        let n = self
            .provider
            .get_transaction_count(self.address)
            .pending()
            .await
            .map_err(rpc)?;
        *next = Some(n);
        Ok(n)
    }

    /// Advances the nonce after a send and waits for the receipt of a manager call.
    async fn settle(
        &self,
        next: &mut Option<u64>,
        nonce: u64,
        sent: Result<
            alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
            alloy::contract::Error,
        >,
    ) -> Result<B256, ChainError> {
        let pending = match sent {
            Ok(pending) => {
                *next = Some(nonce + 1);
                pending
            }
            Err(err) => {
                *next = None;
                return Err(call_error(err));
            }
        };
        let receipt = match pending
            .with_timeout(Some(self.receipt_timeout))
            .get_receipt()
            .await
        {
            Ok(receipt) => receipt,
            Err(err) => {
                // Not mined in time, perhaps dropped by the node: the next call asks
                // the node for the account's nonce again, so no gap is left behind
                // (a second allocation sets the same budget; a second deactivation
                // reverts harmlessly).
                *next = None;
                return Err(rpc(err));
            }
        };
        if receipt.status() {
            Ok(receipt.transaction_hash)
        } else {
            Err(ChainError::Reverted(format!(
                "transaction {} reverted",
                receipt.transaction_hash
            )))
        }
    }
}

/// The node and the keys, as configured; `None` when `chain.rpc_url` is empty.
pub struct ChainContext {
    pub chain: Chain,
    pub distributor: Arc<Sender>,
    /// The manager key's sender (the distributor's when both keys are the same).
    pub manager: Option<Arc<Sender>>,
    pub push_pull: Option<Address>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainSetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "chain.distributor_key (or chain.distributor_key_file) must be set when chain.rpc_url is"
    )]
    NoDistributorKey,
    #[error("{key}: {source}")]
    Key {
        key: &'static str,
        source: ChainError,
    },
    #[error("chain.rpc_url: {0}")]
    Client(ChainError),
}

impl ChainContext {
    /// The keys and a client of the node. The node is not asked anything here: a
    /// node that is down delays pushing and indexing, not the service's start.
    pub fn new(settings: &ChainSettings) -> Result<Option<Self>, ChainSetupError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let distributor_key = resolve_key(
            &settings.distributor_key,
            &settings.distributor_key_file,
            "chain.distributor_key_file",
        )?
        .ok_or(ChainSetupError::NoDistributorKey)?;
        let distributor = Arc::new(Sender::new(settings, distributor_key.expose()).map_err(
            |source| ChainSetupError::Key {
                key: "chain.distributor_key",
                source,
            },
        )?);
        let manager = match resolve_key(
            &settings.manager_key,
            &settings.manager_key_file,
            "chain.manager_key_file",
        )? {
            None => None,
            Some(key) => {
                let sender =
                    Sender::new(settings, key.expose()).map_err(|source| ChainSetupError::Key {
                        key: "chain.manager_key",
                        source,
                    })?;
                Some(if sender.address == distributor.address {
                    distributor.clone()
                } else {
                    Arc::new(sender)
                })
            }
        };
        let chain = Chain::new(settings).map_err(ChainSetupError::Client)?;
        let push_pull = crate::domain::ids::parse_address(&settings.multi_token_push_pull).ok();
        Ok(Some(Self {
            chain,
            distributor,
            manager,
            push_pull,
        }))
    }
}
