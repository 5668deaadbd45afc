//! The steps of one batch's life (SPEC §7) against the ledger and the node. The
//! pusher actor drives them; each step is idempotent and leaves the ledger in a
//! state that [`Pushing::advance`] can pick up after any crash.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use chrono::Utc;
use sqlx::PgPool;

use super::contracts::ProductBank;
use super::{Chain, ChainError, Sender};
use crate::config::ChainSettings;
use crate::db::DbError;
use crate::db::push::{self as ledger, BatchRow, CampaignSync, PushWork};
use crate::domain::push::{self, PushRewards, Reconcile};
use crate::telemetry;

/// A batch sent this long ago without a receipt is sent again (same signature).
const RESEND_AFTER: Duration = Duration::from_secs(30);
/// A sent transaction the node no longer knows after this long was dropped from
/// its pool (its fee cap fell behind the base fee): it is sent again at once
/// instead of after `RESEND_AFTER`. Younger ones may not have reached every node.
const DROPPED_AFTER: Duration = Duration::from_secs(3);
/// Blocks' worth of gas a pusher may have sent and not yet mined.
const QUEUED_BLOCKS: u64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl PushError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Chain(err) => err.kind(),
            Self::Db(_) => "database",
        }
    }
}

/// Where a batch stands after [`Pushing::advance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// In the chain's hands: sent, or mined and waiting for confirmations.
    InFlight,
    /// Final: its rewards are `pushed`.
    Confirmed { rewards: u64 },
    /// Never paid; its rewards are `pending` again.
    Abandoned {
        status: &'static str,
        reason: String,
    },
    /// The bank refused it and it may have been broadcast before: it waits for its
    /// deadline (then expires) or for its nonce to show up used.
    Refused { reason: String },
}

/// One token's pushing: the ledger, the node, the keys.
#[derive(Clone)]
pub struct Pushing {
    pub pool: PgPool,
    pub chain: Chain,
    pub distributor: Arc<Sender>,
    pub manager: Option<Arc<Sender>>,
    pub token: Address,
    pub settings: Arc<ChainSettings>,
}

impl Pushing {
    /// The token as a metric label (lowercase hex).
    pub fn token_label(&self) -> String {
        self.token.to_string().to_lowercase()
    }

    /// Campaigns with rewards to push now.
    pub async fn work(&self) -> Result<Vec<PushWork>, PushError> {
        Ok(ledger::work(&self.pool, self.chain.chain_id().await?, self.token).await?)
    }

    /// Step 1: a batch of up to one transaction's recipients, written and marked.
    pub async fn prepare(&self, work: &PushWork) -> Result<Option<BatchRow>, PushError> {
        let head = self.chain.head().await?;
        let deadline = Utc::now() + chrono::Duration::seconds(self.settings.batch_ttl_secs as i64);
        Ok(ledger::create_batch(
            &self.pool,
            work,
            self.token,
            self.settings.recipients_per_tx(),
            deadline,
            head,
        )
        .await?)
    }

    /// The batch as signed: its recipients come back from the ledger in wallet order.
    pub async fn payload(&self, batch: &BatchRow) -> Result<PushRewards, PushError> {
        let rewards = ledger::recipients(&self.pool, batch.id).await?;
        Ok(PushRewards {
            campaignId: push::onchain_campaign_id(batch.external_id),
            token: batch.token(),
            rewards,
            nonce: batch.nonce(),
            deadline: U256::from(batch.deadline.timestamp().max(0) as u64),
        })
    }

    /// Step 2: the signature, kept in the ledger (the same one is re-sent later).
    pub async fn sign(&self, batch: &BatchRow, payload: &PushRewards) -> Result<Bytes, PushError> {
        if let Some(signature) = &batch.signature {
            return Ok(Bytes::from(signature.clone()));
        }
        let domain = push::bank_domain(self.chain.chain_id().await?, batch.bank());
        let signature = self
            .distributor
            .sign_digest(push::signing_hash(&domain, payload))?;
        ledger::set_signature(&self.pool, batch.id, &signature).await?;
        Ok(signature)
    }

    /// Step 2b: hands the transaction to the node; the ledger is not touched.
    pub async fn send(
        &self,
        batch: &BatchRow,
        payload: &PushRewards,
        signature: Bytes,
    ) -> Result<B256, PushError> {
        Ok(self
            .distributor
            .push_rewards(batch.bank(), payload, signature)
            .await?)
    }

    /// Moves an unfinished batch as far as the chain allows: the one path for a
    /// fresh batch and for one found after a crash.
    pub async fn advance(&self, batch: &BatchRow) -> Result<Progress, PushError> {
        if let Some(tx) = batch.tx_hash()
            && let Some(receipt) = self.chain.receipt(tx).await?
        {
            let Some(block) = receipt.block_number else {
                return Ok(Progress::InFlight);
            };
            if receipt.status() {
                return self
                    .confirm_if_final(batch, tx, block, Some(receipt.gas_used))
                    .await;
            }
            // This transaction reverted; an earlier broadcast of the batch may still
            // be pending, so only the nonce or the deadline can settle it.
            let reason = format!("transaction {tx} reverted");
            ledger::note_error(&self.pool, batch.id, &reason).await?;
            return self.refused_or_expired(batch, reason).await;
        }
        self.reconcile(batch).await
    }

    /// SPEC §7's verdict on a batch (`domain::push::reconcile`), its nonce read at
    /// the very block whose time is the chain's clock: read from an older block
    /// than the time (a node lagging behind a load balancer), a payment made before
    /// the deadline would look missing, and the paid batch would expire and be
    /// paid again.
    async fn verdict(&self, batch: &BatchRow) -> Result<Reconcile, PushError> {
        let block = self
            .chain
            .latest_block()
            .await?
            .ok_or_else(|| ChainError::Rpc("the node has no latest block".into()))?;
        let used = self
            .chain
            .is_nonce_used_at(batch.bank(), batch.nonce(), block.number)
            .await?;
        let margin = chrono::Duration::seconds(self.settings.deadline_margin_secs as i64);
        Ok(push::reconcile(used, batch.deadline, block.time, margin))
    }

    /// A batch whose nonce is used: confirmed once its payment is final.
    async fn confirm_used(&self, batch: &BatchRow) -> Result<Progress, PushError> {
        match self.find_push(batch).await? {
            Some((tx, block)) => self.confirm_if_final(batch, tx, block, None).await,
            // Used, but the event is not visible yet (node lagging): later.
            None => Ok(Progress::InFlight),
        }
    }

    /// Gas the pusher may have in flight: what the chain includes in the blocks
    /// that confirm a batch plus `QUEUED_BLOCKS` more. A deeper queue of our own
    /// full blocks raises the base fee past the fee cap of the last transactions
    /// sent, and the node drops them.
    pub async fn gas_in_flight_room(&self) -> Result<u64, PushError> {
        let gas_limit = self.chain.latest_block().await?.map_or(0, |b| b.gas_limit);
        let blocks = self.settings.confirmations + QUEUED_BLOCKS;
        Ok(gas_limit.saturating_mul(blocks))
    }

    /// SPEC §7's reconciliation of a batch: confirm, expire or re-send.
    async fn reconcile(&self, batch: &BatchRow) -> Result<Progress, PushError> {
        match self.verdict(batch).await? {
            Reconcile::Confirmed => self.confirm_used(batch).await,
            Reconcile::Expired => {
                self.abandon(batch, "expired", "deadline passed unused")
                    .await
            }
            Reconcile::Resend => {
                let sent_for = batch
                    .sent_at
                    .filter(|_| batch.status == "sent")
                    .and_then(|at| (Utc::now() - at).to_std().ok());
                if let Some(age) = sent_for
                    && age < RESEND_AFTER
                    && (age < DROPPED_AFTER || !self.dropped(batch).await?)
                {
                    return Ok(Progress::InFlight);
                }
                // Sent long ago and still unknown to the chain: if the node dropped it,
                // our account nonce has a gap that only this re-send can fill.
                if batch.status == "sent" && self.distributor.resync_nonce().await? {
                    tracing::warn!(batch = %batch.id, "the node dropped a transaction of ours; re-sending with the missing account nonce");
                }
                let payload = self.payload(batch).await?;
                let signature = self.sign(batch, &payload).await?;
                let sent = match self.chain.ensure_bank(batch.bank(), batch.product()).await {
                    Ok(()) => self.send(batch, &payload, signature).await,
                    Err(err) => Err(err.into()),
                };
                match sent {
                    Ok(tx) => {
                        ledger::mark_sent(&self.pool, batch.id, tx).await?;
                        Ok(Progress::InFlight)
                    }
                    Err(PushError::Chain(ChainError::Reverted(reason))) => {
                        ledger::note_error(&self.pool, batch.id, &reason).await?;
                        // Nothing of this batch was ever broadcast: it is dead now.
                        if batch.status == "created" && batch.signature.is_none() {
                            self.abandon(batch, "failed", &reason).await
                        } else {
                            self.refused_or_expired(batch, reason).await
                        }
                    }
                    Err(err) => Err(err),
                }
            }
        }
    }

    /// Whether the node has forgotten the batch's last transaction (no receipt,
    /// and no longer in its pool).
    async fn dropped(&self, batch: &BatchRow) -> Result<bool, PushError> {
        match batch.tx_hash() {
            Some(tx) => Ok(!self.chain.knows_transaction(tx).await?),
            None => Ok(false),
        }
    }

    /// A batch the bank refused (a reverted transaction or estimate): paid after
    /// all if its nonce is used (an earlier broadcast went through), dead past its
    /// deadline, else refused for now.
    async fn refused_or_expired(
        &self,
        batch: &BatchRow,
        reason: String,
    ) -> Result<Progress, PushError> {
        match self.verdict(batch).await? {
            Reconcile::Confirmed => self.confirm_used(batch).await,
            Reconcile::Expired => self.abandon(batch, "expired", &reason).await,
            Reconcile::Resend => Ok(Progress::Refused { reason }),
        }
    }

    async fn abandon(
        &self,
        batch: &BatchRow,
        status: &'static str,
        reason: &str,
    ) -> Result<Progress, PushError> {
        ledger::abandon(&self.pool, batch.id, status, reason).await?;
        metrics::counter!(telemetry::PUSH_BATCHES_TOTAL, "token" => self.token_label(), "outcome" => status)
            .increment(1);
        tracing::warn!(batch = %batch.id, status, reason, "push batch abandoned; its rewards are pending again");
        Ok(Progress::Abandoned {
            status,
            reason: reason.to_owned(),
        })
    }

    /// Step 3, once `confirmations` blocks are on top of the transaction's block.
    async fn confirm_if_final(
        &self,
        batch: &BatchRow,
        tx: B256,
        block: u64,
        gas_used: Option<u64>,
    ) -> Result<Progress, PushError> {
        let head = self.chain.head().await?;
        if head < block + self.settings.confirmations {
            return Ok(Progress::InFlight);
        }
        let rewards = ledger::confirm(&self.pool, batch.id, tx, block).await?;
        let token = self.token_label();
        metrics::counter!(telemetry::PUSH_BATCHES_TOTAL, "token" => token.clone(), "outcome" => "confirmed")
            .increment(1);
        metrics::counter!(telemetry::PUSH_REWARDS_TOTAL, "token" => token.clone())
            .increment(rewards);
        let age = (Utc::now() - batch.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!(telemetry::PUSH_DURATION_SECONDS, "token" => token.clone()).record(age);
        let gas = match gas_used {
            Some(gas) => Some(gas),
            None => self.chain.receipt(tx).await?.map(|r| r.gas_used),
        };
        if let Some(gas) = gas {
            metrics::histogram!(telemetry::PUSH_GAS_PER_REWARD, "token" => token)
                .record(gas as f64 / batch.recipient_count.max(1) as f64);
        }
        tracing::info!(batch = %batch.id, %tx, block, rewards, "push batch confirmed");
        Ok(Progress::Confirmed { rewards })
    }

    /// The transaction that used a batch's nonce, from the bank's RewardsPushed events.
    async fn find_push(&self, batch: &BatchRow) -> Result<Option<(B256, u64)>, PushError> {
        let campaign = push::onchain_campaign_id(batch.external_id);
        let filter = Filter::new()
            .address(batch.bank())
            .event_signature(ProductBank::RewardsPushed::SIGNATURE_HASH)
            .topic1(campaign)
            .from_block(batch.from_block.max(0) as u64);
        for log in self.chain.logs(&filter).await? {
            if let Ok(event) = log.log_decode::<ProductBank::RewardsPushed>()
                && event.inner.data.nonce == batch.nonce()
                && let (Some(tx), Some(block)) = (log.transaction_hash, log.block_number)
            {
                return Ok(Some((tx, block)));
            }
        }
        Ok(None)
    }

    /// Tells banks what campaigns changed: allocations after activation or a budget
    /// change, deactivation once a deactivated campaign's rewards are all pushed.
    pub async fn sync_campaigns(&self) -> Result<(), PushError> {
        let pending =
            ledger::campaigns_to_sync(&self.pool, self.chain.chain_id().await?, self.token).await?;
        for campaign in pending {
            self.sync_campaign(&campaign).await?;
        }
        Ok(())
    }

    async fn sync_campaign(&self, c: &CampaignSync) -> Result<(), PushError> {
        let (call, to) = match c.chain_state.as_str() {
            // Deactivated before its allocation was made, with nothing left to push:
            // released at once (whether or not the bank ever knew it). With rewards
            // left, it is allocated first, and goes on to `deactivate` then.
            "allocate" if c.deactivated && c.unpushed == 0 => {
                ("deactivate_campaign", "deactivated")
            }
            // The bank's budget is set, not added to: it must start from what the
            // bank has paid, so a batch still in flight (no new one starts before the
            // allocation: `work`) settles first; its payment would count twice.
            "allocate" if c.in_flight == 0 => ("allocate_campaign_budget", "allocated"),
            "deactivate" if c.unpushed == 0 => ("deactivate_campaign", "deactivated"),
            _ => return Ok(()),
        };
        let Some(manager) = &self.manager else {
            let error = "no manager key configured (chain.manager_key)".to_owned();
            ledger::record_sync(&self.pool, c.campaign_id, &c.chain_state, Err(error)).await?;
            metrics::counter!(telemetry::CHAIN_CALLS_TOTAL, "call" => call, "outcome" => "failed")
                .increment(1);
            return Ok(());
        };
        let onchain = push::onchain_campaign_id(c.external_id);
        let result = if let Err(err) = self.chain.ensure_bank(c.bank, c.product).await {
            Err(err)
        } else if to == "allocated" {
            // What the bank may still pay: the cap minus what it has been or is
            // being sent (0 keeps the campaign unlimited).
            let budget = if c.budget_cap.is_zero() {
                Ok(U256::ZERO)
            } else if c.budget_cap > c.pushed {
                Ok(c.budget_cap - c.pushed)
            } else {
                Err(ChainError::Reverted(
                    "the whole budget is already pushed".into(),
                ))
            };
            match budget {
                Ok(budget) => {
                    manager
                        .allocate_campaign_budget(c.bank, onchain, self.token, budget)
                        .await
                }
                Err(err) => Err(err),
            }
        } else {
            match manager.deactivate_campaign(c.bank, onchain).await {
                // Never allocated on the bank: nothing to release.
                Err(ChainError::Reverted(reason)) if reason.contains("CampaignNotActive") => {
                    Ok(B256::ZERO)
                }
                other => other,
            }
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        metrics::counter!(telemetry::CHAIN_CALLS_TOTAL, "call" => call, "outcome" => outcome)
            .increment(1);
        match result {
            Ok(tx) => {
                tracing::info!(campaign = c.campaign_id, call, %tx, "bank updated");
                ledger::record_sync(&self.pool, c.campaign_id, &c.chain_state, Ok((to, tx)))
                    .await?;
                Ok(())
            }
            Err(ChainError::Reverted(reason)) => {
                tracing::warn!(
                    campaign = c.campaign_id,
                    call,
                    reason,
                    "bank refused the call"
                );
                ledger::record_sync(&self.pool, c.campaign_id, &c.chain_state, Err(reason)).await?;
                Ok(())
            }
            Err(err) => {
                ledger::record_sync(
                    &self.pool,
                    c.campaign_id,
                    &c.chain_state,
                    Err(err.to_string()),
                )
                .await?;
                Err(err.into())
            }
        }
    }

    /// Publishes the outstanding-rewards gauges of this token.
    pub async fn publish_outstanding(&self) -> Result<(), PushError> {
        let (pending, pushing, age) = ledger::outstanding(&self.pool, self.token).await?;
        let token = self.token_label();
        metrics::gauge!(telemetry::REWARDS_OUTSTANDING, "status" => "pending", "token" => token.clone())
            .set(pending as f64);
        metrics::gauge!(telemetry::REWARDS_OUTSTANDING, "status" => "pushing", "token" => token.clone())
            .set(pushing as f64);
        metrics::gauge!(telemetry::REWARDS_OLDEST_PENDING_AGE_SECONDS, "token" => token).set(age);
        Ok(())
    }
}
