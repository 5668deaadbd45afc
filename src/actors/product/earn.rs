//! What fresh interactions earn: every active campaign evaluated in order, over
//! the referral chains of the product's edges, charged in memory before anything
//! is written.

use std::sync::Arc;

use alloy::primitives::{Address, U256};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{GrantedReward, IngestItem, ProductState};
use crate::actors::referral::{ProductEdges, ReferralMsg};
use crate::db::flush::MayExhaust;
use crate::db::rewards::{RewardRow, UserReward};
use crate::domain::campaign::{
    CampaignRule, CampaignStatus, Occurrence, RecipientType, Skip, total,
};

#[derive(Clone, Default)]
pub(super) struct ItemEarnings {
    pub(super) granted: Vec<GrantedReward>,
    pub(super) charges: Vec<(i64, U256)>,
}

/// What the fresh items earn from the active campaigns, charged in memory now.
pub(super) struct Earned {
    /// Per item: its rewards and what each campaign was charged for it.
    pub(super) per_item: Vec<ItemEarnings>,
    pub(super) rewards: Vec<RewardRow>,
    pub(super) users: Vec<UserReward>,
    pub(super) exhausted: Vec<MayExhaust>,
}

/// Evaluates every active campaign for every fresh item, in order, charging
/// budgets and per-user counters in memory (so concurrent requests can never
/// overspend); `None` when the referral chains cannot be had. `refunded`: per
/// item, a purchase of an order refunded before it (earns nothing).
/// `newly_referred`: the item, and its wallet, whose referral this batch registered
/// — that wallet had no referrer before it, so its items placed earlier in the
/// batch earn without one (SPEC §4's rules apply per interaction, in order). One
/// is enough: an SDK batch is one wallet's (a wallet's first referrer wins) and
/// webhooks carry no referrals.
pub(super) async fn earn(
    state: &mut ProductState,
    ids: &[Uuid],
    fresh: &[IngestItem],
    refunded: &[bool],
    newly_referred: Option<(usize, Address)>,
    now: DateTime<Utc>,
) -> Option<Earned> {
    let mut earned = Earned {
        per_item: vec![ItemEarnings::default(); fresh.len()],
        rewards: Vec::new(),
        users: Vec::new(),
        exhausted: Vec::new(),
    };
    let matched = |item: &IngestItem, refunded: bool| {
        item.wallet.is_some()
            && !refunded
            && state
                .campaigns
                .iter()
                .any(|c| c.trigger == item.interaction.kind && c.is_live(now))
    };
    let rewardable: Vec<(usize, Address)> = fresh
        .iter()
        .enumerate()
        .filter(|(index, item)| matched(item, refunded[*index]))
        .filter_map(|(index, item)| Some((index, item.wallet?)))
        .collect();
    if rewardable.is_empty() {
        return Some(earned);
    }
    let wallets: Vec<Address> = rewardable.iter().map(|(_, w)| *w).collect();
    let product = state.args.config.id;
    let chains = referral_edges(state).await?.chains(&wallets);
    for ((index, wallet), chain) in rewardable.into_iter().zip(&chains) {
        let (item, id) = (&fresh[index], &ids[index]);
        let before_its_referral = newly_referred.is_some_and(|(at, w)| index < at && w == wallet);
        let chain: &[Address] = if before_its_referral { &[] } else { chain };
        for campaign in state
            .campaigns
            .iter_mut()
            .filter(|c| c.trigger == item.interaction.kind)
        {
            let counter = (campaign.id, wallet);
            // Counted only for campaigns with a per-user cap.
            let user_rewards = match campaign.max_rewards_per_user {
                Some(_) => state.user_counts.get(&counter).copied().unwrap_or(0),
                None => 0,
            };
            let occurrence = Occurrence {
                interaction_id: *id,
                kind: item.interaction.kind,
                wallet,
                chain,
                user_rewards,
                now,
            };
            let payouts = match campaign.evaluate(&occurrence) {
                Ok(payouts) => payouts,
                // Its cap was lowered below what the smallest reward needs.
                Err(Skip::BudgetInsufficient) if campaign.is_exhausted() => {
                    campaign.status = CampaignStatus::BudgetExhausted;
                    earned.exhausted.push(may_exhaust(campaign));
                    continue;
                }
                Err(_) => continue,
            };
            // An unlimited campaign's spend is the sum of its rewards: nothing to
            // charge (nor to give back if the row is not stored).
            let capped = !campaign.budget_cap.is_zero();
            let charged = if capped { total(&payouts) } else { U256::ZERO };
            campaign.used_budget += charged;
            if campaign.max_rewards_per_user.is_some() {
                *state.user_counts.entry(counter).or_default() += 1;
            }
            let available_at = now + chrono::Duration::seconds(campaign.lockup_seconds as i64);
            let mut user_amount = U256::ZERO;
            for payout in payouts {
                if payout.recipient_type == RecipientType::User {
                    user_amount = payout.amount;
                }
                earned.rewards.push(RewardRow {
                    id: Uuid::now_v7(),
                    product_id: product,
                    campaign_id: campaign.id,
                    interaction_id: *id,
                    wallet: payout.recipient,
                    token: campaign.token,
                    amount: payout.amount,
                    recipient_type: payout.recipient_type.as_str(),
                    available_at,
                    created_at: now,
                    charged: capped,
                });
                earned.per_item[index].granted.push(GrantedReward {
                    campaign_id: campaign.id,
                    recipient: payout.recipient,
                    recipient_type: payout.recipient_type,
                    token: campaign.token,
                    amount: payout.amount,
                });
            }
            if campaign.max_rewards_per_user.is_some() {
                earned.users.push(UserReward {
                    campaign_id: campaign.id,
                    wallet,
                    interaction_id: *id,
                    amount: user_amount,
                    at: now,
                });
            }
            earned.per_item[index].charges.push((campaign.id, charged));
            if campaign.is_exhausted() {
                campaign.status = CampaignStatus::BudgetExhausted;
                earned.exhausted.push(may_exhaust(campaign));
            }
        }
    }
    Some(earned)
}

fn may_exhaust(campaign: &CampaignRule) -> MayExhaust {
    MayExhaust {
        campaign_id: campaign.id,
        smallest: campaign.smallest_total(),
    }
}

/// The product's referral edges: the handle held since the last call while the
/// referral actor's cache still holds them, else asked for again.
pub(super) async fn referral_edges(state: &mut ProductState) -> Option<Arc<ProductEdges>> {
    if let Some(edges) = state.edges.upgrade().filter(|e| e.is_current()) {
        return Some(edges);
    }
    let referral = state.args.referral.get()?;
    let product = state.args.config.id;
    let edges = ractor::call!(referral, |reply| ReferralMsg::Edges { product, reply })
        .ok()?
        .ok()?;
    state.edges = Arc::downgrade(&edges);
    Some(edges)
}
