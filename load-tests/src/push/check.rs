//! SPEC §7's invariant after the run: for every wallet, what MultiTokenPushPull
//! holds for it (nobody has claimed, so pending = credited) equals Σ of its
//! `pushed` rewards in PostgreSQL, and the contract's total pending equals Σ of
//! all of them.

use std::fmt;

use alloy::primitives::{Address, U256};
use rewardflow::chain::Chain;
use rewardflow::chain::contracts::MultiTokenPushPull;
use sqlx::PgPool;

pub struct Agreement {
    pub wallets: usize,
    pub mismatched: Vec<(Address, U256, U256)>,
    pub pushed_total: U256,
    pub onchain_total: U256,
}

impl Agreement {
    pub fn ok(&self) -> bool {
        self.mismatched.is_empty() && self.pushed_total == self.onchain_total
    }
}

impl fmt::Display for Agreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "check: wallets={} mismatched={} pushed_total={} onchain_total_pending={} => {}",
            self.wallets,
            self.mismatched.len(),
            self.pushed_total,
            self.onchain_total,
            if self.ok() { "OK" } else { "FAILED" }
        )?;
        for (wallet, db, chain) in self.mismatched.iter().take(5) {
            write!(f, "\n  {wallet}: postgres {db}, chain {chain}")?;
        }
        Ok(())
    }
}

/// Compares every wallet with pushed rewards in `token` (`concurrency` calls at once).
pub async fn onchain_equals_pushed(
    pool: &PgPool,
    chain: &Chain,
    push_pull: Address,
    token: Address,
    concurrency: usize,
) -> anyhow::Result<Agreement> {
    let pushed = super::ledger::pushed_per_wallet(pool, token).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let chunk = pushed.len().div_ceil(concurrency.max(1)).max(1);
    for part in pushed.chunks(chunk) {
        let (part, chain) = (part.to_vec(), chain.clone());
        tasks.spawn(async move {
            let mut mismatched = Vec::new();
            for (wallet, amount) in part {
                let onchain = chain.pending_amount(push_pull, token, wallet).await?;
                if onchain != amount {
                    mismatched.push((wallet, amount, onchain));
                }
            }
            anyhow::Ok(mismatched)
        });
    }
    let mut mismatched = Vec::new();
    while let Some(done) = tasks.join_next().await {
        mismatched.extend(done??);
    }
    let onchain_total = MultiTokenPushPull::new(push_pull, &chain.provider)
        .getTotalPending(token)
        .call()
        .await?;
    Ok(Agreement {
        wallets: pushed.len(),
        mismatched,
        pushed_total: pushed.iter().map(|(_, a)| *a).sum(),
        onchain_total,
    })
}
