//! Campaigns and the reward formula (SPEC §5): matching, the base amount (fixed, or
//! a Beta(2, β) draw that is deterministic per campaign and interaction), the
//! integer split between the user and up to five referrers, the all-or-nothing
//! budget fit, and the status machine. Amounts are integers in the token's base unit.

use alloy::primitives::{Address, U256};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::interaction::InteractionType;

pub const BPS: u32 = 10_000;
pub const MAX_DEPTH: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    Draft,
    Active,
    Paused,
    Deactivated,
    BudgetExhausted,
    Expired,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Deactivated => "deactivated",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Expired => "expired",
        }
    }

    pub const ALL: [Self; 6] = [
        Self::Draft,
        Self::Active,
        Self::Paused,
        Self::Deactivated,
        Self::BudgetExhausted,
        Self::Expired,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What a campaign manager may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    Activate,
    Pause,
    Deactivate,
}

/// `draft → active ⇄ paused`, `active|paused → deactivated` (terminal). An
/// exhausted campaign may be activated again (after its budget was raised); an
/// expired one can only be deactivated.
pub fn transition(from: CampaignStatus, action: StatusAction) -> Option<CampaignStatus> {
    use CampaignStatus::*;
    match (from, action) {
        (Draft | Paused | BudgetExhausted, StatusAction::Activate) => Some(Active),
        (Active, StatusAction::Pause) => Some(Paused),
        (Active | Paused | BudgetExhausted | Expired, StatusAction::Deactivate) => {
            Some(Deactivated)
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardSpec {
    Fixed {
        amount: U256,
    },
    /// `min + floor((max − min)·X)`, X ~ Beta(2, β), β = beta_bps / 10,000.
    Range {
        min: U256,
        max: U256,
        beta_bps: u32,
    },
}

impl RewardSpec {
    /// The smallest base this reward can draw.
    pub fn smallest_base(&self) -> U256 {
        match *self {
            RewardSpec::Fixed { amount } => amount,
            RewardSpec::Range { min, .. } => min,
        }
    }
}

/// What a user's own share from a campaign can be now, least and most, with a
/// referrer and without; `None`: nothing would be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserEstimate {
    pub referred: Option<(U256, U256)>,
    pub non_referred: Option<(U256, U256)>,
}

/// Everything the engine needs to know of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRule {
    pub id: i64,
    pub external_id: Uuid,
    pub trigger: InteractionType,
    pub requires_referral: bool,
    pub reward: RewardSpec,
    pub user_bps: u32,
    pub deperdition_bps: u32,
    pub max_depth: u8,
    pub max_rewards_per_user: Option<u32>,
    /// Zero: unlimited (bounded on-chain by the bank's balance).
    pub budget_cap: U256,
    pub used_budget: U256,
    pub lockup_seconds: u64,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub status: CampaignStatus,
    pub token: Address,
}

/// Who receives a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecipientType {
    User,
    /// Referrer at level 1..=5 (1 is the user's own referrer).
    Referrer(u8),
}

impl RecipientType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientType::User => "user",
            RecipientType::Referrer(1) => "referrer_l1",
            RecipientType::Referrer(2) => "referrer_l2",
            RecipientType::Referrer(3) => "referrer_l3",
            RecipientType::Referrer(4) => "referrer_l4",
            RecipientType::Referrer(_) => "referrer_l5",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    pub recipient: Address,
    pub recipient_type: RecipientType,
    pub amount: U256,
}

/// Why a matching campaign pays nothing for an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotLive,
    WrongTrigger,
    NoReferrer,
    UserCapReached,
    BudgetInsufficient,
    NothingToPay,
}

/// The interaction as the engine sees it.
#[derive(Debug, Clone)]
pub struct Occurrence<'a> {
    pub interaction_id: Uuid,
    pub kind: InteractionType,
    pub wallet: Address,
    /// The wallet's referrers in the product, nearest first (whole known chain).
    pub chain: &'a [Address],
    /// Rewards this wallet already got as the acting user in this campaign.
    pub user_rewards: u32,
    pub now: DateTime<Utc>,
}

impl CampaignRule {
    /// Active and within its schedule (`starts_at ≤ now < ends_at`, nulls open).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == CampaignStatus::Active
            && self.starts_at.is_none_or(|s| s <= now)
            && self.ends_at.is_none_or(|e| now < e)
    }

    pub fn is_capped(&self) -> bool {
        !self.budget_cap.is_zero()
    }

    pub fn remaining_budget(&self) -> Option<U256> {
        self.is_capped()
            .then(|| self.budget_cap.saturating_sub(self.used_budget))
    }

    /// The base amount for an interaction (deterministic).
    pub fn base_amount(&self, interaction_id: Uuid) -> U256 {
        match self.reward {
            RewardSpec::Fixed { amount } => amount,
            RewardSpec::Range { min, max, beta_bps } => {
                let mut rng = Xoshiro256::from_seed(self.external_id, interaction_id);
                let x = beta2(&mut rng, f64::from(beta_bps) / f64::from(BPS));
                range_amount(min, max, x)
            }
        }
    }

    /// What this campaign pays for the occurrence, or why it pays nothing. The
    /// budget check is all-or-nothing: the whole reward set must fit.
    pub fn evaluate(&self, occurrence: &Occurrence<'_>) -> Result<Vec<Payout>, Skip> {
        if self.trigger != occurrence.kind {
            return Err(Skip::WrongTrigger);
        }
        if !self.is_live(occurrence.now) {
            return Err(Skip::NotLive);
        }
        if self.requires_referral && occurrence.chain.is_empty() {
            return Err(Skip::NoReferrer);
        }
        if self
            .max_rewards_per_user
            .is_some_and(|cap| occurrence.user_rewards >= cap)
        {
            return Err(Skip::UserCapReached);
        }
        let depth = occurrence
            .chain
            .len()
            .min(usize::from(self.max_depth.min(MAX_DEPTH)));
        let chain = &occurrence.chain[..depth];
        let shares = split(
            self.base_amount(occurrence.interaction_id),
            self.user_bps,
            self.deperdition_bps,
            chain.len(),
        );
        let payouts: Vec<Payout> = std::iter::once((occurrence.wallet, RecipientType::User))
            .chain(
                chain
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (*r, RecipientType::Referrer(i as u8 + 1))),
            )
            .zip(shares)
            .filter(|(_, amount)| !amount.is_zero())
            .map(|((recipient, recipient_type), amount)| Payout {
                recipient,
                recipient_type,
                amount,
            })
            .collect();
        if payouts.is_empty() {
            return Err(Skip::NothingToPay);
        }
        let total = total(&payouts);
        if let Some(remaining) = self.remaining_budget()
            && total > remaining
        {
            return Err(Skip::BudgetInsufficient);
        }
        Ok(payouts)
    }

    /// The least this campaign can pay for one interaction (at least 1): the whole
    /// base when referrers are paid, the user's share alone when the user may be
    /// paid without any (not `requires_referral`, or a depth of 0).
    pub fn smallest_total(&self) -> U256 {
        let base = self.reward.smallest_base();
        let user_only = split(base, self.user_bps, self.deperdition_bps, 0)[0];
        let with_referrers = (self.max_depth > 0).then_some(base);
        let without = (!self.requires_referral || self.max_depth == 0).then_some(user_only);
        [with_referrers, without]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_zero())
            .min()
            .unwrap_or(U256::from(1u8))
    }

    /// What a user's own share can be now ([`UserEstimate`]); nothing where a
    /// referral is required, or where the budget left is too small for any reward
    /// set (the fit is all-or-nothing: a draw whose set does not fit is not paid).
    pub fn user_estimate(&self) -> UserEstimate {
        let (low, high) = match self.reward {
            RewardSpec::Fixed { amount } => (amount, amount),
            RewardSpec::Range { min, max, .. } => (min, max),
        };
        let user = |base: U256| split(base, self.user_bps, self.deperdition_bps, 0)[0];
        // With referrers the whole base is paid out; without, the user's share.
        let bounds = |referrers: bool| {
            let highest = match self.remaining_budget() {
                None => high,
                Some(remaining) if referrers => high.min(remaining),
                Some(remaining) if user(high) <= remaining => high,
                // The largest base whose user share, floor(base·bps / 10⁴), fits.
                Some(remaining) => {
                    ((remaining + U256::from(1u8)) * U256::from(BPS) - U256::from(1u8))
                        / U256::from(self.user_bps.max(1))
                }
            };
            let payable = if referrers { high } else { user(high) };
            (highest >= low && !payable.is_zero()).then(|| (user(low), user(highest.min(high))))
        };
        UserEstimate {
            referred: bounds(self.max_depth > 0),
            non_referred: (!self.requires_referral).then(|| bounds(false)).flatten(),
        }
    }

    /// A capped campaign whose remaining budget cannot fit its smallest reward.
    pub fn is_exhausted(&self) -> bool {
        self.remaining_budget()
            .is_some_and(|remaining| remaining < self.smallest_total())
    }
}

pub fn total(payouts: &[Payout]) -> U256 {
    payouts.iter().fold(U256::ZERO, |sum, p| sum + p.amount)
}

/// The integer split: `[user, r_1, …, r_n]`. With no referrer only the user's
/// share is paid; otherwise the last referrer takes what is left, so the shares
/// sum to exactly `base`.
pub fn split(base: U256, user_bps: u32, deperdition_bps: u32, referrers: usize) -> Vec<U256> {
    let bps = U256::from(BPS);
    let user = base * U256::from(user_bps) / bps;
    let mut shares = Vec::with_capacity(referrers + 1);
    shares.push(user);
    let mut remaining = base - user;
    for level in 1..=referrers {
        if level < referrers {
            let share = remaining * U256::from(deperdition_bps) / bps;
            remaining -= share;
            shares.push(share);
        } else {
            shares.push(remaining);
        }
    }
    shares
}

/// `min + floor((max − min)·x)` for x in [0, 1), in integers: x is taken with 53
/// bits of precision.
fn range_amount(min: U256, max: U256, x: f64) -> U256 {
    let scaled = U256::from((x * (1u64 << 53) as f64) as u64);
    min + (max - min) * scaled / U256::from(1u64 << 53)
}

/// X ~ Beta(2, β) as G₂/(G₂ + G_β) with Gamma variates; in [0, 1).
fn beta2(rng: &mut Xoshiro256, beta: f64) -> f64 {
    let a = gamma(rng, 2.0);
    let b = gamma(rng, beta);
    let x = a / (a + b);
    if x.is_finite() {
        x.clamp(0.0, 1.0 - f64::EPSILON)
    } else {
        0.0
    }
}

/// Gamma(shape, 1) by Marsaglia–Tsang (with the shape < 1 boost).
fn gamma(rng: &mut Xoshiro256, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = rng.unit_open();
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.unit_open();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// xoshiro256** seeded from SHA-256(campaign ‖ interaction): a fixed algorithm, so a
/// recomputation gives the same amount whatever library versions change.
struct Xoshiro256([u64; 4]);

impl Xoshiro256 {
    fn from_seed(campaign: Uuid, interaction: Uuid) -> Self {
        let digest = Sha256::new()
            .chain_update(campaign.as_bytes())
            .chain_update(interaction.as_bytes())
            .finalize();
        let mut state = [0u64; 4];
        for (i, word) in state.iter_mut().enumerate() {
            *word = u64::from_le_bytes(digest[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        if state == [0; 4] {
            state[0] = 1;
        }
        Self(state)
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in (0, 1).
    fn unit_open(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit_open(), self.unit_open());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests;
