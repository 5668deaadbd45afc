//! After a run with campaigns: every stored reward recomputed independently of the
//! service (SPEC §12: "every reward equal to an independent recomputation").
//!
//! From what PostgreSQL holds — the campaigns, the registered referral edges and
//! the interactions — this module rebuilds, with its own code (none of the
//! service's), the rewards SPEC §5 asks for, and compares them with the `rewards`
//! table row by row: recipient, amount and token.
//!
//! A referral edge counts for an interaction when it was registered before it: its
//! `referral.referred` row has an id (UUIDv7, assigned in processing order by the
//! product's actor) not greater than the interaction's — a referral's own reward
//! already sees the edge it registers. The recomputation models what the
//! benchmark's campaigns use (fixed rewards, active for the whole run, no budget cap,
//! no per-user cap, no schedule); an interaction matching a campaign that uses
//! anything else is counted as `unmodelled` and fails the check.

use std::collections::HashMap;
use std::fmt;

use sqlx::Connection;
use uuid::Uuid;

/// Rows read per query.
const PAGE: i64 = 100_000;

/// The deepest referral chain a campaign pays (SPEC §5).
const MAX_DEPTH: usize = 5;

pub type Wallet = [u8; 20];

/// A campaign as the recomputation needs it.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub amount: u128,
    pub user_bps: u128,
    pub deperdition_bps: u128,
    pub max_depth: usize,
    pub requires_referral: bool,
    pub token: Wallet,
    /// What the recomputation does not model (`None`: everything is).
    pub unmodelled: Option<&'static str>,
}

/// One expected reward: level 0 is the user, 1..=5 the referrers nearest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub level: u8,
    pub wallet: Wallet,
    pub amount: u128,
}

/// SPEC §5's split of a fixed reward over the user and the chain (nearest first,
/// already truncated to the campaign's depth); zero amounts are left out.
pub fn split(campaign: &Campaign, user: Wallet, chain: &[Wallet]) -> Vec<Share> {
    let base = campaign.amount;
    let user_amount = base * campaign.user_bps / 10_000;
    let mut shares = vec![Share {
        level: 0,
        wallet: user,
        amount: user_amount,
    }];
    let mut remaining = base - user_amount;
    for (i, referrer) in chain.iter().enumerate() {
        let amount = if i + 1 < chain.len() {
            remaining * campaign.deperdition_bps / 10_000
        } else {
            remaining
        };
        remaining -= amount;
        shares.push(Share {
            level: i as u8 + 1,
            wallet: *referrer,
            amount,
        });
    }
    shares.retain(|s| s.amount > 0);
    shares
}

/// Registered referral edges: (product, referred wallet) → (id of the referral
/// interaction, referrer).
#[derive(Default)]
pub struct Edges(HashMap<(u32, Wallet), (u128, Wallet)>);

impl Edges {
    pub fn insert(&mut self, product: u32, wallet: Wallet, at: u128, referrer: Wallet) {
        self.0.insert((product, wallet), (at, referrer));
    }

    /// The wallet's referrers, nearest first, registered no later than `at`.
    pub fn chain(&self, product: u32, wallet: Wallet, at: u128, depth: usize) -> Vec<Wallet> {
        let mut chain = Vec::with_capacity(depth);
        let mut current = wallet;
        while chain.len() < depth {
            match self.0.get(&(product, current)) {
                Some(&(registered, referrer))
                    if registered <= at && referrer != wallet && !chain.contains(&referrer) =>
                {
                    chain.push(referrer);
                    current = referrer;
                }
                _ => break,
            }
        }
        chain
    }
}

#[derive(Default)]
pub struct Recomputation {
    pub interactions: u64,
    pub stored: u64,
    pub expected: u64,
    pub missing: u64,
    pub unexpected: u64,
    pub different: u64,
    pub unmodelled: u64,
}

impl Recomputation {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.unexpected == 0 && self.different == 0 && self.unmodelled == 0
    }
}

impl fmt::Display for Recomputation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recompute: interactions={} rewards_stored={} rewards_expected={} missing={} unexpected={} different={} unmodelled={} => {}",
            self.interactions,
            self.stored,
            self.expected,
            self.missing,
            self.unexpected,
            self.different,
            self.unmodelled,
            if self.ok() { "OK" } else { "FAILED" }
        )
    }
}

fn wallet(bytes: &[u8]) -> anyhow::Result<Wallet> {
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("an address of {} bytes", bytes.len()))
}

/// Product ids as small numbers.
#[derive(Default)]
struct Products(HashMap<Vec<u8>, u32>);

impl Products {
    fn get(&mut self, id: Vec<u8>) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(id).or_insert(next)
    }
}

#[derive(sqlx::FromRow)]
struct CampaignRow {
    id: i64,
    product_id: Vec<u8>,
    trigger: String,
    reward_type: String,
    reward_amount: Option<String>,
    user_bps: i32,
    deperdition_bps: i32,
    max_depth: i16,
    requires_referral: bool,
    max_rewards_per_user: Option<i32>,
    budget_cap: String,
    scheduled: bool,
    token: Vec<u8>,
}

impl CampaignRow {
    fn unmodelled(&self) -> Option<&'static str> {
        if self.reward_type != "fixed" {
            Some("range reward")
        } else if self.budget_cap != "0" {
            Some("budget cap")
        } else if self.max_rewards_per_user.is_some() {
            Some("per-user cap")
        } else if self.scheduled {
            Some("schedule")
        } else {
            None
        }
    }
}

/// Every active campaign, by (product, trigger).
async fn campaigns(
    conn: &mut sqlx::PgConnection,
    products: &mut Products,
) -> anyhow::Result<HashMap<(u32, String), Vec<Campaign>>> {
    let rows: Vec<CampaignRow> = sqlx::query_as(
        "SELECT c.id, c.product_id, c.trigger, c.reward_type, c.reward_amount::text AS reward_amount,
                c.user_bps, c.deperdition_bps, c.max_depth, c.requires_referral,
                c.max_rewards_per_user, c.budget_cap::text AS budget_cap,
                c.starts_at IS NOT NULL OR c.ends_at IS NOT NULL AS scheduled,
                b.token_address AS token
         FROM campaigns c JOIN product_banks b ON b.id = c.bank_id
         WHERE c.status = 'active'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_trigger: HashMap<(u32, String), Vec<Campaign>> = HashMap::new();
    for row in rows {
        let campaign = Campaign {
            id: row.id,
            amount: row.reward_amount.as_deref().unwrap_or("0").parse()?,
            user_bps: row.user_bps as u128,
            deperdition_bps: row.deperdition_bps as u128,
            max_depth: row.max_depth as usize,
            requires_referral: row.requires_referral,
            token: wallet(&row.token)?,
            unmodelled: row.unmodelled(),
        };
        by_trigger
            .entry((products.get(row.product_id), row.trigger))
            .or_default()
            .push(campaign);
    }
    Ok(by_trigger)
}

#[derive(sqlx::FromRow)]
struct EdgeRow {
    id: Uuid,
    product_id: Vec<u8>,
    wallet: Vec<u8>,
    referrer_wallet: Vec<u8>,
}

async fn edges(conn: &mut sqlx::PgConnection, products: &mut Products) -> anyhow::Result<Edges> {
    let rows: Vec<EdgeRow> = sqlx::query_as(
        "SELECT id, product_id, wallet, referrer_wallet FROM interactions
         WHERE type = 'referral.referred' AND referrer_wallet IS NOT NULL AND wallet IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut edges = Edges::default();
    for row in rows {
        edges.insert(
            products.get(row.product_id),
            wallet(&row.wallet)?,
            row.id.as_u128(),
            wallet(&row.referrer_wallet)?,
        );
    }
    Ok(edges)
}

#[derive(sqlx::FromRow)]
struct RewardRow {
    interaction_id: Uuid,
    campaign_id: i64,
    recipient_type: String,
    wallet: Vec<u8>,
    amount: String,
    token: Vec<u8>,
}

/// Stored rewards: (interaction, campaign, level) → (wallet, amount, token).
type Stored = HashMap<(u128, i64, u8), (Wallet, u128, Wallet)>;

async fn stored(conn: &mut sqlx::PgConnection) -> anyhow::Result<Stored> {
    let mut stored = Stored::new();
    // Pages in primary-key order, each after the last key of the one before.
    let mut after = (Uuid::nil(), 0i64, String::new());
    loop {
        let rows: Vec<RewardRow> = sqlx::query_as(
            "SELECT interaction_id, campaign_id, recipient_type, wallet, amount::text AS amount,
                    token
             FROM rewards
             WHERE (interaction_id, campaign_id, recipient_type) > ($1, $2, $3)
             ORDER BY interaction_id, campaign_id, recipient_type LIMIT $4",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(&after.2)
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = (
            last.interaction_id,
            last.campaign_id,
            last.recipient_type.clone(),
        );
        for row in rows {
            let level = match row.recipient_type.as_str() {
                "user" => 0,
                other => other.trim_start_matches("referrer_l").parse()?,
            };
            stored.insert(
                (row.interaction_id.as_u128(), row.campaign_id, level),
                (
                    wallet(&row.wallet)?,
                    row.amount.parse()?,
                    wallet(&row.token)?,
                ),
            );
        }
    }
    Ok(stored)
}

#[derive(sqlx::FromRow)]
struct InteractionRow {
    id: Uuid,
    product_id: Vec<u8>,
    wallet: Vec<u8>,
    #[sqlx(rename = "type")]
    kind: String,
}

/// Recomputes every reward of the database and compares.
pub async fn check(database_url: &str) -> anyhow::Result<Recomputation> {
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    // Each page is planned for its own bounds: a generic plan of the keyset query
    // may scan and sort the whole table for every page.
    sqlx::query("SET plan_cache_mode = force_custom_plan")
        .execute(&mut conn)
        .await?;
    let mut products = Products::default();
    let campaigns = campaigns(&mut conn, &mut products).await?;
    let edges = edges(&mut conn, &mut products).await?;
    let mut stored = stored(&mut conn).await?;
    let mut report = Recomputation {
        stored: stored.len() as u64,
        ..Recomputation::default()
    };
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<InteractionRow> = sqlx::query_as(
            "SELECT id, product_id, wallet, type FROM interactions
             WHERE id > $1 AND wallet IS NOT NULL ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(&mut conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for row in rows {
            report.interactions += 1;
            let (at, product, user) = (
                row.id.as_u128(),
                products.get(row.product_id),
                wallet(&row.wallet)?,
            );
            let Some(matching) = campaigns.get(&(product, row.kind)) else {
                continue;
            };
            for campaign in matching {
                if campaign.unmodelled.is_some() {
                    report.unmodelled += 1;
                    continue;
                }
                // A referral is required of the wallet, whatever the depth paid.
                let chain = edges.chain(product, user, at, MAX_DEPTH);
                if campaign.requires_referral && chain.is_empty() {
                    continue;
                }
                let paid = &chain[..chain.len().min(campaign.max_depth)];
                for share in split(campaign, user, paid) {
                    report.expected += 1;
                    match stored.remove(&(at, campaign.id, share.level)) {
                        None => report.missing += 1,
                        Some(row) if row != (share.wallet, share.amount, campaign.token) => {
                            report.different += 1
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    report.unexpected = stored.len() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign() -> Campaign {
        Campaign {
            id: 1,
            amount: 10 * 10u128.pow(18),
            user_bps: 5_000,
            deperdition_bps: 8_000,
            max_depth: 5,
            requires_referral: false,
            token: [9; 20],
            unmodelled: None,
        }
    }

    fn amounts(shares: &[Share]) -> Vec<u128> {
        shares.iter().map(|s| s.amount).collect()
    }

    #[test]
    fn the_design_example() {
        let unit = 10u128.pow(17);
        let shares = split(&campaign(), [1; 20], &[[2; 20], [3; 20], [4; 20]]);
        assert_eq!(amounts(&shares), [50 * unit, 40 * unit, 8 * unit, 2 * unit]);
        assert_eq!(shares[3].wallet, [4; 20]);
        assert_eq!(shares[3].level, 3);
        let alone = split(&campaign(), [1; 20], &[]);
        assert_eq!(amounts(&alone), [50 * unit]);
    }

    #[test]
    fn zero_shares_are_left_out() {
        let mut c = campaign();
        c.user_bps = 0;
        c.amount = 3;
        c.deperdition_bps = 10_000;
        let shares = split(&c, [1; 20], &[[2; 20], [3; 20]]);
        assert_eq!(shares.len(), 1);
        assert_eq!((shares[0].level, shares[0].amount), (1, 3));
    }

    #[test]
    fn a_chain_holds_the_edges_registered_before_the_interaction() {
        let mut edges = Edges::default();
        edges.insert(0, [1; 20], 10, [2; 20]);
        edges.insert(0, [2; 20], 20, [3; 20]);
        edges.insert(1, [1; 20], 5, [7; 20]);
        assert_eq!(edges.chain(0, [1; 20], 9, 5), Vec::<Wallet>::new());
        assert_eq!(edges.chain(0, [1; 20], 10, 5), [[2; 20]]);
        assert_eq!(edges.chain(0, [1; 20], 20, 5), [[2; 20], [3; 20]]);
        assert_eq!(edges.chain(0, [1; 20], 20, 1), [[2; 20]]);
        assert_eq!(edges.chain(1, [1; 20], 20, 5), [[7; 20]]);
    }
}
