//! The machine's limit for pushing: the same `ProductBank.pushRewards` calls the
//! pusher makes — EIP-712 batches signed by the distributor key, sent through the
//! service's own `chain::Sender` (gas estimate + 20%, its nonce sequence) — but
//! straight from here, without the service's ledger, actors or pacing, to the same
//! anvil. They are sent from a fresh account funded with `anvil_setBalance`, so the
//! service's account keeps its nonce sequence. K batches of B new recipients, then
//! the same K×B recipients again (returning), then one batch of one new recipient.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use rand::Rng;
use rewardflow::chain::{Chain, Sender};
use rewardflow::config::ChainSettings;
use rewardflow::domain::push::{self, PushRewards, Reward};

pub struct Target {
    pub chain: Chain,
    pub rpc_url: String,
    pub bank: Address,
    pub token: Address,
    pub campaign: uuid::Uuid,
    pub distributor_key: String,
    pub confirmations: u64,
}

/// One pass: its transactions and how long they took.
pub struct Pass {
    pub txs: Vec<B256>,
    pub rewards: u64,
    /// First send → last transaction mined, seconds.
    pub included_seconds: f64,
    /// First send → `confirmations` blocks on top of the last one, seconds.
    pub confirmed_seconds: f64,
    pub blocks: u64,
}

pub struct Limit {
    pub first_time: Pass,
    pub returning: Pass,
    pub single: Pass,
}

pub async fn measure(target: &Target, batches: usize, size: usize) -> anyhow::Result<Limit> {
    let settings = ChainSettings {
        rpc_url: target.rpc_url.clone(),
        ..ChainSettings::default()
    };
    let distributor = Sender::new(&settings, &target.distributor_key)?;
    let account = PrivateKeySigner::random();
    let _: serde_json::Value = target
        .chain
        .provider
        .raw_request(
            "anvil_setBalance".into(),
            (account.address(), U256::from(10u64).pow(U256::from(21u64))),
        )
        .await?;
    let sender = Sender::new(&settings, &alloy::hex::encode(account.to_bytes()))?;
    let recipients: Vec<Vec<Address>> = (0..batches)
        .map(|_| (0..size).map(|_| random_address()).collect())
        .collect();
    let first_time = pass(target, &distributor, &sender, &recipients).await?;
    let returning = pass(target, &distributor, &sender, &recipients).await?;
    let single = pass(target, &distributor, &sender, &[vec![random_address()]]).await?;
    Ok(Limit {
        first_time,
        returning,
        single,
    })
}

async fn pass(
    target: &Target,
    distributor: &Sender,
    sender: &Sender,
    recipients: &[Vec<Address>],
) -> anyhow::Result<Pass> {
    // Signed beforehand: the pusher also signs before it sends.
    let mut signed = Vec::with_capacity(recipients.len());
    let chain_id = target.chain.chain_id().await?;
    for users in recipients {
        let payload = batch(target, users);
        let domain = push::bank_domain(chain_id, target.bank);
        let signature = distributor.sign_digest(push::signing_hash(&domain, &payload))?;
        signed.push((payload, signature));
    }
    let started = Instant::now();
    let mut txs = Vec::with_capacity(signed.len());
    for (payload, signature) in &signed {
        txs.push(
            sender
                .push_rewards(target.bank, payload, signature.clone())
                .await?,
        );
    }
    let deadline = started + Duration::from_secs(300);
    let (mut first_block, mut last_block) = (u64::MAX, 0);
    let mut included = Duration::ZERO;
    for tx in &txs {
        let receipt = loop {
            if let Some(receipt) = target.chain.receipt(*tx).await?
                && receipt.block_number.is_some()
            {
                break receipt;
            }
            anyhow::ensure!(Instant::now() < deadline, "{tx} not mined after 300 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        anyhow::ensure!(receipt.status(), "{tx} reverted");
        let block = receipt.block_number.unwrap_or_default();
        first_block = first_block.min(block);
        last_block = last_block.max(block);
        included = started.elapsed();
    }
    while target.chain.head().await? < last_block + target.confirmations {
        anyhow::ensure!(Instant::now() < deadline, "no confirmations after 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Pass {
        rewards: recipients.iter().map(|r| r.len() as u64).sum(),
        txs,
        included_seconds: included.as_secs_f64(),
        confirmed_seconds: started.elapsed().as_secs_f64(),
        blocks: last_block + 1 - first_block,
    })
}

/// A batch like the pusher's: one reward per recipient (amounts of the service's
/// order of magnitude), fresh random nonce, deadline 15 minutes ahead.
fn batch(target: &Target, users: &[Address]) -> PushRewards {
    let mut rng = rand::rng();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 900)
        .unwrap_or_default();
    PushRewards {
        campaignId: push::onchain_campaign_id(target.campaign),
        token: target.token,
        rewards: users
            .iter()
            .map(|&user| Reward {
                user,
                amount: U256::from(
                    rng.random_range(100_000_000_000_000_000u64..2_000_000_000_000_000_000),
                ),
            })
            .collect(),
        nonce: B256::from(rng.random::<[u8; 32]>()),
        deadline: U256::from(deadline),
    }
}

fn random_address() -> Address {
    Address::from(rand::random::<[u8; 20]>())
}
