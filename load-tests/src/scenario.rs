//! A realistic, reproducible interaction stream: a mix of types over N products
//! and W wallets, with per-product referral trees up to depth 5. Interaction
//! number `seq` is always the same for the same seed, so any worker can produce
//! any interaction and a retry resends exactly the same one (same idempotency key).

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewardflow::domain::ids::{product_id_for_domain, to_hex};
use serde_json::{Value, json};

/// One in this many interactions is a referral (while edges remain).
const REFERRAL_EVERY: u64 = 10;
const MAX_DEPTH: u8 = 5;
const ROOTS_PER_PRODUCT: usize = 3;

/// Weighted mix of the other types.
const MIX: &[(&str, u32)] = &[
    ("webshop.open", 40),
    ("press.open_article", 20),
    ("press.read_article", 10),
    ("purchase.started", 9),
    ("purchase.completed", 8),
    ("referral.link_creation", 3),
    ("retail.customer_meeting", 2),
];

pub struct Scenario {
    pub run: String,
    seed: u64,
    wallets: u32,
    product_ids: Vec<String>,
    /// (product, child wallet, referrer wallet), shallow levels first.
    edges: Vec<(u32, u32, u32)>,
    /// Per product, the wallets in its referral tree (who act most).
    members: Vec<Vec<u32>>,
    /// Every wallet acts in turn (see `every_wallet`).
    every_wallet: bool,
}

/// A prime above `u32::MAX`: multiplying by it permutes any range of wallets.
const SPREAD: u128 = 4_294_967_311;

/// The domain of load-test product `i`.
pub fn product_domain(i: u32) -> String {
    format!("p{i}.load.rewardflow.test")
}

impl Scenario {
    pub fn new(run: &str, seed: u64, products: u32, wallets: u32, interactions: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let product_ids = (0..products)
            .map(|i| to_hex(product_id_for_domain(&product_domain(i))))
            .collect();
        let per_product = (interactions / REFERRAL_EVERY / u64::from(products.max(1))) as usize;
        let mut by_product: Vec<Vec<(u32, u32)>> = Vec::with_capacity(products as usize);
        let mut members = Vec::with_capacity(products as usize);
        for _ in 0..products {
            let mut tree: Vec<(u32, u8)> = (0..ROOTS_PER_PRODUCT)
                .map(|_| (rng.random_range(0..wallets), 0))
                .collect();
            let mut taken: HashSet<u32> = tree.iter().map(|(w, _)| *w).collect();
            let mut edges = Vec::with_capacity(per_product);
            while edges.len() < per_product && taken.len() < wallets as usize {
                let (parent, depth) = tree[rng.random_range(0..tree.len())];
                if depth >= MAX_DEPTH {
                    continue;
                }
                let child = rng.random_range(0..wallets);
                if !taken.insert(child) {
                    continue;
                }
                tree.push((child, depth + 1));
                edges.push((child, parent));
            }
            members.push(tree.into_iter().map(|(w, _)| w).collect());
            by_product.push(edges);
        }
        // Interleave products so that parents tend to be registered before children.
        let mut edges = Vec::new();
        for level in 0..per_product {
            for (p, list) in by_product.iter().enumerate() {
                if let Some((child, parent)) = list.get(level) {
                    edges.push((p as u32, *child, *parent));
                }
            }
        }
        Self {
            run: run.to_owned(),
            seed,
            wallets,
            product_ids,
            edges,
            members,
            every_wallet: false,
        }
    }

    /// The acting wallet of the interactions that are not referrals is no longer
    /// drawn: the first W of them are by the W wallets, each once, and so on (to
    /// make the service know every wallet, for the memory measurement).
    pub fn every_wallet(mut self, on: bool) -> Self {
        self.every_wallet = on;
        self
    }

    /// Interaction `seq`: the acting wallet and the JSON body.
    pub fn interaction(&self, seq: u64) -> (u32, Value) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let key = format!("{}-{seq}", self.run);
        if seq.is_multiple_of(REFERRAL_EVERY)
            && let Some(&(product, child, parent)) = self.edges.get((seq / REFERRAL_EVERY) as usize)
        {
            let body = json!({
                "product_id": self.product_ids[product as usize],
                "type": "referral.referred",
                "referrer": wallet_hex(parent),
                "idempotency_key": key,
            });
            return (child, body);
        }
        let product = rng.random_range(0..self.product_ids.len());
        let members = &self.members[product];
        let wallet = if self.every_wallet {
            // Referrals come first in every ten while edges remain.
            let referrals = seq.div_ceil(REFERRAL_EVERY).min(self.edges.len() as u64);
            let turn = u128::from(seq - referrals);
            (turn * SPREAD % u128::from(self.wallets)) as u32
        } else if rng.random_bool(0.5) && !members.is_empty() {
            members[rng.random_range(0..members.len())]
        } else {
            rng.random_range(0..self.wallets)
        };
        (wallet, self.body(&mut rng, product, &key, seq))
    }

    /// Interaction `seq` without its acting wallet (a batch has one), never a referral.
    pub fn plain_interaction(&self, seq: u64) -> Value {
        let mut rng = StdRng::seed_from_u64(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let product = rng.random_range(0..self.product_ids.len());
        let key = format!("{}-{seq}", self.run);
        self.body(&mut rng, product, &key, seq)
    }

    /// The referral edge carried by batch `block`, if any: (child, body).
    pub fn batch_referral(&self, block: u64, seq: u64) -> Option<(u32, Value)> {
        let &(product, child, parent) = self.edges.get(block as usize)?;
        Some((
            child,
            json!({
                "product_id": self.product_ids[product as usize],
                "type": "referral.referred",
                "referrer": wallet_hex(parent),
                "idempotency_key": format!("{}-{seq}", self.run),
            }),
        ))
    }

    pub fn random_wallet(&self, block: u64) -> u32 {
        let mut rng = StdRng::seed_from_u64(self.seed.rotate_left(17) ^ block);
        rng.random_range(0..self.wallets)
    }

    fn body(&self, rng: &mut StdRng, product: usize, key: &str, seq: u64) -> Value {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut pick = rng.random_range(0..total);
        let kind = MIX
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(k, _)| *k)
            .expect("weights cover the range");
        let data = if kind.starts_with("purchase.") {
            json!({"order_id": key, "amount": rng.random_range(500..50_000).to_string(), "currency": "EUR"})
        } else {
            json!({"page": format!("/articles/{}", rng.random_range(0..500)), "n": seq})
        };
        json!({
            "product_id": self.product_ids[product],
            "type": kind,
            "data": data,
            "idempotency_key": key,
            "analytics": {"session_id": format!("s{}", rng.random_range(0..1_000_000))},
        })
    }
}

pub fn wallet_hex(n: u32) -> String {
    format!("0x{:040x}", u64::from(n) + 0x1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wallet_acts_once_in_turn() {
        let s = Scenario::new("t", 7, 10, 1_000, 2_000).every_wallet(true);
        let acting: Vec<u32> = (0..2_000)
            .map(|seq| s.interaction(seq))
            .filter(|(_, body)| body["type"] != "referral.referred")
            .map(|(wallet, _)| wallet)
            .collect();
        assert_eq!(acting.len(), 1_800);
        let first: HashSet<u32> = acting[..1_000].iter().copied().collect();
        assert_eq!(first.len(), 1_000);
        assert!(acting.iter().all(|w| *w < 1_000));
    }

    #[test]
    fn reproducible_and_shaped_as_asked() {
        let a = Scenario::new("t", 7, 10, 1_000, 10_000);
        let b = Scenario::new("t", 7, 10, 1_000, 10_000);
        for seq in [0, 1, 10, 999] {
            assert_eq!(a.interaction(seq), b.interaction(seq));
        }
        assert_eq!(a.edges.len(), 1_000);
        let referrals = (0..10_000)
            .filter(|s| a.interaction(*s).1["type"] == "referral.referred")
            .count();
        assert_eq!(referrals, 1_000);
        // No wallet is referred twice in a product, and nobody refers themselves.
        let mut seen = HashSet::new();
        for &(p, child, parent) in &a.edges {
            assert!(seen.insert((p, child)));
            assert_ne!(child, parent);
        }
    }
}
