//! Gas per pushed reward, from the chain itself. A recipient is *first-time* when
//! MultiTokenPushPull had never credited it in that token before — its slot goes
//! from zero to non-zero (≈ 22,100 gas) — and *returning* otherwise (≈ 5,000). The
//! contract never resets a credited slot, so walking every `RewardAdded` of the
//! token from block 0 in execution order (block, log index) tells, for each
//! transaction, exactly how many of its recipients were first-time. Each batch's
//! gas is its receipt's `gasUsed`; per-reward and fixed costs come from a
//! least-squares fit `gas = fixed + first·per_first + returning·per_returning`.

use std::collections::{HashMap, HashSet};

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use rewardflow::chain::Chain;
use rewardflow::chain::contracts::MultiTokenPushPull::RewardAdded;

/// Recipients of one transaction, split by whether the chain had seen them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    pub first: u64,
    pub returning: u64,
}

/// Per transaction, its first-time and returning recipients, from `(tx, user)`
/// credits in execution order.
pub fn classify(credits: impl IntoIterator<Item = (B256, Address)>) -> HashMap<B256, Split> {
    let mut seen = HashSet::new();
    let mut per_tx: HashMap<B256, Split> = HashMap::new();
    for (tx, user) in credits {
        let split = per_tx.entry(tx).or_default();
        if seen.insert(user) {
            split.first += 1;
        } else {
            split.returning += 1;
        }
    }
    per_tx
}

/// Every credit of `token` by MultiTokenPushPull up to `to_block`, classified.
pub async fn credits(
    chain: &Chain,
    push_pull: Address,
    token: Address,
    to_block: u64,
) -> anyhow::Result<HashMap<B256, Split>> {
    let filter = Filter::new()
        .address(push_pull)
        .event_signature(RewardAdded::SIGNATURE_HASH)
        .topic1(token.into_word())
        .from_block(0)
        .to_block(to_block);
    let mut logs = chain.logs(&filter).await?;
    logs.sort_by_key(|l| (l.block_number, l.log_index));
    let mut ordered = Vec::with_capacity(logs.len());
    for log in logs {
        let event = log.log_decode::<RewardAdded>()?;
        let tx = log
            .transaction_hash
            .ok_or_else(|| anyhow::anyhow!("a RewardAdded log without its transaction"))?;
        ordered.push((tx, event.inner.data.user));
    }
    Ok(classify(ordered))
}

/// A batch as measured: its recipients and the gas its transaction used.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub split: Split,
    pub gas: u64,
}

/// Receipts of `txs` (all must be mined), joined with their recipients.
pub async fn measure(
    chain: &Chain,
    txs: &[B256],
    credits: &HashMap<B256, Split>,
) -> anyhow::Result<Vec<Measured>> {
    let mut out = Vec::with_capacity(txs.len());
    for tx in txs {
        let receipt = chain
            .provider
            .get_transaction_receipt(*tx)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no receipt for {tx}"))?;
        anyhow::ensure!(receipt.status(), "{tx} reverted");
        out.push(Measured {
            split: credits.get(tx).copied().unwrap_or_default(),
            gas: receipt.gas_used,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub fixed: f64,
    pub per_first: f64,
    pub per_returning: f64,
    /// Largest |measured − fitted| over the batches, in gas.
    pub max_residual: f64,
}

/// Least squares over the batches; `None` when the mix does not determine all
/// three terms (e.g. every batch the same size and kind).
pub fn fit(batches: &[Measured]) -> Option<Fit> {
    let rows: Vec<[f64; 3]> = batches
        .iter()
        .map(|b| [1.0, b.split.first as f64, b.split.returning as f64])
        .collect();
    // Normal equations AᵀA x = Aᵀy, solved by Gaussian elimination.
    let mut m = [[0.0f64; 4]; 3];
    for (row, b) in rows.iter().zip(batches) {
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += row[i] * row[j];
            }
            m[i][3] += row[i] * b.gas as f64;
        }
    }
    let scale: Vec<f64> = (0..3).map(|i| m[i][i].max(1.0)).collect();
    for col in 0..3 {
        let pivot = (col..3).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        // Relative to the column's own size: what is left is rounding noise.
        if m[pivot][col].abs() < 1e-9 * scale[col] {
            return None;
        }
        m.swap(col, pivot);
        for r in 0..3 {
            if r != col {
                let factor = m[r][col] / m[col][col];
                let pivot_row = m[col];
                for (cell, p) in m[r].iter_mut().zip(pivot_row).skip(col) {
                    *cell -= factor * p;
                }
            }
        }
    }
    let x: Vec<f64> = (0..3).map(|i| m[i][3] / m[i][i]).collect();
    let max_residual = rows
        .iter()
        .zip(batches)
        .map(|(r, b)| (b.gas as f64 - (x[0] * r[0] + x[1] * r[1] + x[2] * r[2])).abs())
        .fold(0.0, f64::max);
    if x.iter().any(|v| !v.is_finite()) {
        return None;
    }
    Some(Fit {
        fixed: x[0],
        per_first: x[1],
        per_returning: x[2],
        max_residual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(n: u8) -> B256 {
        B256::repeat_byte(n)
    }

    fn user(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    #[test]
    fn a_recipient_is_first_time_only_in_its_first_credit() {
        let split = classify([
            (tx(1), user(1)),
            (tx(1), user(2)),
            (tx(2), user(2)),
            (tx(2), user(3)),
            (tx(3), user(1)),
        ]);
        assert_eq!(
            split[&tx(1)],
            Split {
                first: 2,
                returning: 0
            }
        );
        assert_eq!(
            split[&tx(2)],
            Split {
                first: 1,
                returning: 1
            }
        );
        assert_eq!(
            split[&tx(3)],
            Split {
                first: 0,
                returning: 1
            }
        );
    }

    fn batch(first: u64, returning: u64, gas: u64) -> Measured {
        Measured {
            split: Split { first, returning },
            gas,
        }
    }

    #[test]
    fn the_fit_recovers_the_terms_of_a_linear_cost() {
        let cost = |f: u64, r: u64| 98_000 + 25_400 * f + 8_300 * r;
        let batches: Vec<_> = [(300, 0), (120, 0), (150, 150), (40, 260), (1, 0)]
            .iter()
            .map(|&(f, r)| batch(f, r, cost(f, r)))
            .collect();
        let fit = fit(&batches).expect("determined");
        assert!((fit.fixed - 98_000.0).abs() < 1e-3, "{fit:?}");
        assert!((fit.per_first - 25_400.0).abs() < 1e-6, "{fit:?}");
        assert!((fit.per_returning - 8_300.0).abs() < 1e-6, "{fit:?}");
        assert!(fit.max_residual < 1e-3);
    }

    #[test]
    fn an_undetermined_mix_has_no_fit() {
        // Only full first-time batches: the fixed and per-reward terms cannot be told apart.
        let batches = vec![batch(300, 0, 7_700_000); 5];
        assert_eq!(fit(&batches), None);
    }
}
