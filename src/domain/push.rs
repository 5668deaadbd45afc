//! The on-chain push (SPEC §7, §8) as pure logic: the EIP-712 batch a ProductBank
//! accepts, a campaign's on-chain id, aggregation per wallet, and what to do with an
//! unfinished batch found after a crash.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, U256};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use chrono::{DateTime, Utc};
use uuid::Uuid;

sol! {
    /// One recipient of a batch.
    #[derive(Debug, PartialEq, Eq)]
    struct Reward {
        address user;
        uint256 amount;
    }

    /// What the distributor signs; `ProductBank.pushRewards` recomputes it.
    #[derive(Debug)]
    struct PushRewards {
        bytes32 campaignId;
        address token;
        Reward[] rewards;
        bytes32 nonce;
        uint256 deadline;
    }
}

/// The campaign id a bank knows: the UUID's 16 bytes, right-aligned in a bytes32.
pub fn onchain_campaign_id(external_id: Uuid) -> B256 {
    let mut id = B256::ZERO;
    id[16..].copy_from_slice(external_id.as_bytes());
    id
}

/// The EIP-712 domain of one bank.
pub fn bank_domain(chain_id: u64, bank: Address) -> Eip712Domain {
    eip712_domain! {
        name: "Frak.ProductBank",
        version: "1",
        chain_id: chain_id,
        verifying_contract: bank,
    }
}

/// The digest the distributor signs for a batch.
pub fn signing_hash(domain: &Eip712Domain, batch: &PushRewards) -> B256 {
    batch.eip712_signing_hash(domain)
}

/// Sums rewards per wallet, in wallet order (the batch's recipients).
pub fn aggregate(rewards: impl IntoIterator<Item = (Address, U256)>) -> Vec<Reward> {
    let mut per_wallet: BTreeMap<Address, U256> = BTreeMap::new();
    for (wallet, amount) in rewards {
        *per_wallet.entry(wallet).or_default() += amount;
    }
    per_wallet
        .into_iter()
        .filter(|(_, amount)| !amount.is_zero())
        .map(|(user, amount)| Reward { user, amount })
        .collect()
}

pub fn total(rewards: &[Reward]) -> U256 {
    rewards.iter().map(|r| r.amount).sum()
}

/// What the chain says about an unfinished batch's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// The nonce is used: the batch was paid; record it.
    Confirmed,
    /// Unused and provably dead (past deadline + margin): its rewards go back to
    /// `pending` and will be pushed in a new batch.
    Expired,
    /// Unused and still valid: send the same signed batch again.
    Resend,
}

/// SPEC §7: used → confirmed; unused past deadline + margin → expired; else resend.
/// `chain_time` is the latest block's timestamp: the contract compares the deadline
/// with block time, not with our clock.
pub fn reconcile(
    nonce_used: bool,
    deadline: DateTime<Utc>,
    chain_time: DateTime<Utc>,
    margin: chrono::Duration,
) -> Reconcile {
    if nonce_used {
        Reconcile::Confirmed
    } else if chain_time > deadline + margin {
        Reconcile::Expired
    } else {
        Reconcile::Resend
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{address, keccak256};

    #[test]
    fn type_hash_matches_the_contract() {
        // ProductBank.PUSH_REWARDS_TYPEHASH
        let expected = keccak256(
            "PushRewards(bytes32 campaignId,address token,Reward[] rewards,bytes32 nonce,uint256 deadline)Reward(address user,uint256 amount)",
        );
        let batch = PushRewards {
            campaignId: B256::ZERO,
            token: Address::ZERO,
            rewards: vec![],
            nonce: B256::ZERO,
            deadline: U256::ZERO,
        };
        assert_eq!(batch.eip712_type_hash(), expected);
    }

    #[test]
    fn campaign_id_is_the_uuid_right_aligned() {
        let uuid = Uuid::parse_str("0191b3c4-5d6e-7f80-9102-a3b4c5d6e7f8").unwrap();
        let id = onchain_campaign_id(uuid);
        assert_eq!(
            id.to_string(),
            "0x000000000000000000000000000000000191b3c45d6e7f809102a3b4c5d6e7f8"
        );
    }

    #[test]
    fn aggregation_sums_per_wallet_and_drops_zero() {
        let a = address!("0x1000000000000000000000000000000000000001");
        let b = address!("0x2000000000000000000000000000000000000002");
        let c = address!("0x3000000000000000000000000000000000000003");
        let rewards = aggregate([
            (b, U256::from(5)),
            (a, U256::from(1)),
            (b, U256::from(7)),
            (c, U256::ZERO),
        ]);
        assert_eq!(
            rewards,
            vec![
                Reward {
                    user: a,
                    amount: U256::from(1)
                },
                Reward {
                    user: b,
                    amount: U256::from(12)
                }
            ]
        );
        assert_eq!(total(&rewards), U256::from(13));
    }

    #[test]
    fn reconcile_follows_the_ledger_rules() {
        let deadline = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let margin = chrono::Duration::seconds(60);
        let at = |t| DateTime::<Utc>::from_timestamp(t, 0).unwrap();
        assert_eq!(
            reconcile(true, deadline, at(5_000), margin),
            Reconcile::Confirmed
        );
        assert_eq!(
            reconcile(false, deadline, at(1_061), margin),
            Reconcile::Expired
        );
        assert_eq!(
            reconcile(false, deadline, at(1_060), margin),
            Reconcile::Resend
        );
        assert_eq!(
            reconcile(false, deadline, at(10), margin),
            Reconcile::Resend
        );
    }
}
