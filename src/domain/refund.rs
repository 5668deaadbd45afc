//! What a refund gives back (SPEC §6): the budget of the rewards it cancelled
//! (to campaigns with a budget cap: an unlimited campaign's spend is the sum of
//! its rewards, which the cancellation already lowered), and the buyer's per-user
//! counter of each campaign whose rewards for the order were all cancelled (a
//! campaign that already pushed some keeps counting it).

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{Address, U256};

/// A reward of the refunded purchase that was still pending, now cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledReward {
    pub campaign_id: i64,
    /// The buyer's own share (the other rows are referrers').
    pub is_user: bool,
    pub amount: U256,
}

/// The campaigns of a refund whose counts it must give back.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// Campaigns with a budget cap (their `used_budget` is charged).
    pub budget: BTreeSet<i64>,
    /// Campaigns that count rewards per user.
    pub per_user: BTreeSet<i64>,
}

/// What one refund, or several, give back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefundEffects {
    /// Budget each campaign gets back.
    pub budgets: BTreeMap<i64, U256>,
    /// (campaign, buyer) → (rewards to uncount, the buyer's amount to take back).
    pub counters: BTreeMap<(i64, Address), (u32, U256)>,
}

impl RefundEffects {
    /// The effects of refunding one purchase made by `buyer`. `kept`: campaigns in
    /// which the purchase still has rewards (pushing or pushed).
    pub fn of_purchase(
        buyer: Option<Address>,
        cancelled: &[CancelledReward],
        kept: &BTreeSet<i64>,
        counted: &Counted,
    ) -> Self {
        let mut effects = Self::default();
        for reward in cancelled {
            if counted.budget.contains(&reward.campaign_id) {
                *effects.budgets.entry(reward.campaign_id).or_default() += reward.amount;
            }
        }
        let Some(buyer) = buyer else {
            return effects;
        };
        let campaigns: BTreeSet<i64> = cancelled.iter().map(|r| r.campaign_id).collect();
        for campaign in &campaigns {
            if kept.contains(campaign) || !counted.per_user.contains(campaign) {
                continue;
            }
            let amount = cancelled
                .iter()
                .filter(|r| r.campaign_id == *campaign && r.is_user)
                .fold(U256::ZERO, |sum, r| sum + r.amount);
            effects.counters.insert((*campaign, buyer), (1, amount));
        }
        effects
    }

    /// The effects of cancelling, when their batch was abandoned, rewards of a
    /// refunded purchase that were on their way on-chain when the refund came (it
    /// kept them then, and gave back nothing for them). `now`: those rewards;
    /// `all`: every cancelled reward of the purchase, those included; `kept`:
    /// campaigns in which the purchase still has rewards pushing or pushed. Their
    /// budget comes back; the buyer's counter of a campaign in `now` comes back
    /// once nothing of the purchase is kept in it, with the buyer's whole
    /// cancelled amount there.
    pub fn of_abandoned(
        buyer: Option<Address>,
        now: &[CancelledReward],
        all: &[CancelledReward],
        kept: &BTreeSet<i64>,
        counted: &Counted,
    ) -> Self {
        let budgets_only = Counted {
            budget: counted.budget.clone(),
            per_user: BTreeSet::new(),
        };
        let mut effects = Self::of_purchase(None, now, kept, &budgets_only);
        let touched: BTreeSet<i64> = now.iter().map(|r| r.campaign_id).collect();
        let in_touched: Vec<CancelledReward> = all
            .iter()
            .filter(|r| touched.contains(&r.campaign_id))
            .cloned()
            .collect();
        let counters_only = Counted {
            budget: BTreeSet::new(),
            per_user: counted.per_user.clone(),
        };
        effects.counters = Self::of_purchase(buyer, &in_touched, kept, &counters_only).counters;
        effects
    }

    pub fn merge(&mut self, other: &RefundEffects) {
        for (campaign, amount) in &other.budgets {
            *self.budgets.entry(*campaign).or_default() += *amount;
        }
        for (key, (count, amount)) in &other.counters {
            let entry = self.counters.entry(*key).or_default();
            entry.0 += count;
            entry.1 += *amount;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty() && self.counters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reward(campaign_id: i64, is_user: bool, amount: u64) -> CancelledReward {
        CancelledReward {
            campaign_id,
            is_user,
            amount: U256::from(amount),
        }
    }

    #[test]
    fn budgets_come_back_and_counters_only_where_nothing_was_kept() {
        let buyer = Address::repeat_byte(1);
        let cancelled = [
            reward(1, true, 5),
            reward(1, false, 4),
            reward(2, true, 7),
            reward(3, false, 2),
        ];
        let kept = BTreeSet::from([2]);
        let capped = Counted {
            budget: BTreeSet::from([1, 2, 3]),
            per_user: BTreeSet::from([1, 2, 3]),
        };
        let effects = RefundEffects::of_purchase(Some(buyer), &cancelled, &kept, &capped);
        assert_eq!(
            effects.budgets,
            BTreeMap::from([(1, U256::from(9)), (2, U256::from(7)), (3, U256::from(2))])
        );
        // Campaign 2 still pushed part of it; campaign 3 paid only referrers.
        assert_eq!(
            effects.counters,
            BTreeMap::from([
                ((1, buyer), (1, U256::from(5))),
                ((3, buyer), (1, U256::ZERO))
            ])
        );

        let uncapped =
            RefundEffects::of_purchase(Some(buyer), &cancelled, &kept, &Counted::default());
        assert!(uncapped.is_empty(), "unlimited campaigns get nothing back");
        // Only campaign 3 has a budget cap; campaign 1 counts per user.
        let mixed = Counted {
            budget: BTreeSet::from([3]),
            per_user: BTreeSet::from([1]),
        };
        let some = RefundEffects::of_purchase(Some(buyer), &cancelled, &kept, &mixed);
        assert_eq!(some.budgets, BTreeMap::from([(3, U256::from(2))]));
        assert_eq!(
            some.counters,
            BTreeMap::from([((1, buyer), (1, U256::from(5)))])
        );
        let anonymous = RefundEffects::of_purchase(None, &cancelled, &kept, &capped);
        assert!(anonymous.counters.is_empty() && !anonymous.is_empty());

        let mut total = effects.clone();
        total.merge(&effects);
        assert_eq!(total.budgets[&1], U256::from(18));
        assert_eq!(total.counters[&(1, buyer)], (2, U256::from(10)));
        assert!(RefundEffects::of_purchase(Some(buyer), &[], &kept, &capped).is_empty());
    }

    #[test]
    fn an_abandoned_batch_gives_back_what_the_refund_had_to_keep() {
        let buyer = Address::repeat_byte(1);
        let capped = Counted {
            budget: BTreeSet::from([1, 2]),
            per_user: BTreeSet::from([1, 2]),
        };
        // At the refund, campaign 1's user share (5) was cancelled and its referrer
        // share (4) kept, pushing; campaign 2's user share (7) was kept too.
        let before = [reward(1, true, 5)];
        let now = [reward(1, false, 4), reward(2, true, 7)];
        let all: Vec<CancelledReward> = before.iter().chain(&now).cloned().collect();
        let effects =
            RefundEffects::of_abandoned(Some(buyer), &now, &all, &BTreeSet::new(), &capped);
        // Only what is cancelled now comes back to the budgets (5 came back then).
        assert_eq!(
            effects.budgets,
            BTreeMap::from([(1, U256::from(4)), (2, U256::from(7))])
        );
        // The counters come back now, with the buyer's whole cancelled amount.
        assert_eq!(
            effects.counters,
            BTreeMap::from([
                ((1, buyer), (1, U256::from(5))),
                ((2, buyer), (1, U256::from(7)))
            ])
        );
        // A campaign still paying part of the purchase keeps counting it, and a
        // campaign this batch did not touch is not counted again.
        let kept = BTreeSet::from([2]);
        let effects = RefundEffects::of_abandoned(Some(buyer), &now[..1], &all, &kept, &capped);
        assert_eq!(effects.budgets, BTreeMap::from([(1, U256::from(4))]));
        assert_eq!(
            effects.counters,
            BTreeMap::from([((1, buyer), (1, U256::from(5)))])
        );
        let untouched = RefundEffects::of_abandoned(Some(buyer), &[], &all, &kept, &capped);
        assert!(untouched.is_empty());
    }
}
