//! What the push scenario sends over HTTP: the campaigns it needs (through the
//! business API, as the product's owner) and the interactions — referral edges
//! first, then purchases in two waves. Wave 1 is bought by new wallets; in wave 2
//! half of the buyers come back, so both first-time and returning recipients reach
//! the chain, and every other wallet is referred (chains up to depth 2), so
//! referrer rewards exist too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::report::Sample;
use crate::run::mint_for;

/// Who acts in the scenario, by wallet number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// (referred wallet, referrer): in groups of four, w+1 ← w and w+2 ← w+1.
    pub referrals: Vec<(u32, u32)>,
    /// The buyer of each purchase, per wave.
    pub waves: [Vec<u32>; 2],
    pub wallets: u32,
}

impl Plan {
    pub fn new(purchases: u64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let first = purchases / 2;
        let wave1: Vec<u32> = (0..first as u32).collect();
        let mut next = first as u32;
        let wave2: Vec<u32> = (first..purchases)
            .map(|_| {
                if first > 0 && rng.random_bool(0.5) {
                    rng.random_range(0..first as u32)
                } else {
                    next += 1;
                    next - 1
                }
            })
            .collect();
        let referrals = (0..next)
            .filter(|w| matches!(w % 4, 1 | 2))
            .map(|w| (w, w - 1))
            .collect();
        Self {
            referrals,
            waves: [wave1, wave2],
            wallets: next,
        }
    }
}

/// The address of scenario wallet `n` (a range no other scenario uses).
pub fn wallet(n: u32) -> Address {
    Address::left_padding_from(&(0xB0_0000_0000_u64 + u64::from(n)).to_be_bytes())
}

/// One interaction to send: the acting wallet and the JSON body.
pub type Item = (u32, Value);

pub fn referral_items(plan: &Plan, product: &str) -> Vec<Item> {
    plan.referrals
        .iter()
        .map(|&(child, referrer)| {
            let body = json!({"product_id": product, "type": "referral.referred",
                "referrer": format!("{:#x}", wallet(referrer)),
                "idempotency_key": format!("push-ref-{child}")});
            (child, body)
        })
        .collect()
}

pub fn purchase_items(plan: &Plan, wave: usize, product: &str) -> Vec<Item> {
    plan.waves[wave]
        .iter()
        .enumerate()
        .map(|(i, &buyer)| {
            let order = format!("push-w{wave}-{i}");
            let body = json!({"product_id": product, "type": "purchase.completed",
                "data": {"order_id": order, "amount": "4900", "currency": "EUR"},
                "idempotency_key": order});
            (buyer, body)
        })
        .collect()
}

/// Sends every item over `concurrency` connections; a refused attempt (503, 429,
/// transport error) is retried with the same idempotency key until `deadline`.
/// Fails unless every item is acknowledged (202).
pub async fn send_all(
    addr: std::net::SocketAddr,
    secret: &[u8],
    items: Vec<Item>,
    concurrency: usize,
    deadline: Instant,
) -> anyhow::Result<crate::report::Summary> {
    let tokens: std::collections::HashMap<u32, String> = items
        .iter()
        .map(|(w, _)| (*w, mint_for(secret, wallet(*w))))
        .collect();
    let shared = Arc::new((items, tokens, AtomicU64::new(0), AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let (items, tokens, next, acked) = &*shared;
                let mut conn = Connection::new(addr);
                let mut sample = Sample::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((who, body)) = items.get(i) else {
                        break;
                    };
                    let body = Bytes::from(body.to_string());
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let answer = conn
                            .post("/v1/interactions", Some(&tokens[who]), body.clone())
                            .await;
                        sample.record(sent.elapsed(), answer.as_ref().ok().map(|a| a.status));
                        match answer {
                            Ok(a) if a.status == 202 => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(a) if a.status == 503 || a.status == 429 => {
                                let wait = a.retry_after.unwrap_or(1).min(2) * 100;
                                tokio::time::sleep(Duration::from_millis(wait)).await;
                            }
                            Ok(a) => {
                                eprintln!(
                                    "interaction {i}: HTTP {}: {}",
                                    a.status,
                                    String::from_utf8_lossy(&a.body)
                                );
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
                sample
            })
        })
        .collect();
    let mut sample = Sample::default();
    for worker in workers {
        sample.merge(worker.await?);
    }
    let (items, _, _, acked) = &*shared;
    let acked = acked.load(Ordering::Relaxed);
    anyhow::ensure!(
        acked == items.len() as u64,
        "{} of {} interactions were not acknowledged",
        items.len() as u64 - acked,
        items.len()
    );
    Ok(sample.summarize(started.elapsed()))
}

/// The business API, as the demo product's owner.
pub struct Api {
    conn: Connection,
    token: String,
}

impl Api {
    pub fn new(addr: std::net::SocketAddr, secret: &[u8], owner: Address) -> Self {
        Self {
            conn: Connection::new(addr),
            token: mint_for(secret, owner),
        }
    }

    /// Creates and activates a capped campaign with a fixed reward; returns its id.
    pub async fn campaign(
        &mut self,
        product: &str,
        token: Address,
        name: &str,
        trigger: &str,
        amount: &str,
        budget_cap: &str,
    ) -> anyhow::Result<i64> {
        let body = json!({"name": name, "trigger": trigger, "token": format!("{token:#x}"),
            "reward": {"type": "fixed", "amount": amount}, "budget_cap": budget_cap});
        let answer = self
            .conn
            .post(
                &format!("/v1/products/{product}/campaigns"),
                Some(&self.token),
                Bytes::from(body.to_string()),
            )
            .await?;
        anyhow::ensure!(
            answer.status == 201,
            "creating campaign {name}: HTTP {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        let id = serde_json::from_slice::<Value>(&answer.body)?["id"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("campaign {name}: no id in the answer"))?;
        self.status(id, "activate").await?;
        Ok(id)
    }

    /// `POST /v1/campaigns/{id}/{action}` (activate, pause, deactivate).
    pub async fn status(&mut self, id: i64, action: &str) -> anyhow::Result<()> {
        let answer = self
            .conn
            .post(
                &format!("/v1/campaigns/{id}/{action}"),
                Some(&self.token),
                Bytes::new(),
            )
            .await?;
        anyhow::ensure!(
            answer.status == 200,
            "{action} campaign {id}: HTTP {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn waves_have_new_and_returning_buyers_and_referred_ones() {
        let plan = Plan::new(10_000, 3);
        assert_eq!(plan, Plan::new(10_000, 3));
        let wave1: HashSet<u32> = plan.waves[0].iter().copied().collect();
        assert_eq!(wave1.len(), 5_000, "wave 1: every buyer is new");
        let returning = plan.waves[1].iter().filter(|w| wave1.contains(w)).count();
        assert!(
            (2_300..2_700).contains(&returning),
            "about half of wave 2 comes back: {returning}"
        );
        assert_eq!(plan.wallets as usize, 5_000 + (5_000 - returning));
        // Every referral points to the previous wallet, never to itself, depth ≤ 2.
        for &(child, referrer) in &plan.referrals {
            assert_eq!(referrer + 1, child);
            assert_ne!(child % 4, 0);
            assert_ne!(child % 4, 3);
        }
        assert!(plan.referrals.len().abs_diff(plan.wallets as usize / 2) <= 1);
        assert_ne!(wallet(0), wallet(1));
    }
}
