//! Referral rules (SPEC §4 rule 4): first referrer wins, no self-referral, no
//! cycle anywhere in the referrer's chain; and chains for rewards, nearest first.

use std::collections::HashSet;

use alloy::primitives::Address;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralOutcome {
    Registered,
    AlreadyReferred,
    SelfReferral,
    Cycle,
}

impl ReferralOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::AlreadyReferred => "already_referred",
            Self::SelfReferral => "self_referral",
            Self::Cycle => "cycle",
        }
    }
}

/// Whether the edge `referrer → wallet` may be registered, given each wallet's
/// current referrer in the product.
pub fn decide(
    wallet: Address,
    referrer: Address,
    referrer_of: impl Fn(Address) -> Option<Address>,
) -> ReferralOutcome {
    if wallet == referrer {
        return ReferralOutcome::SelfReferral;
    }
    if referrer_of(wallet).is_some() {
        return ReferralOutcome::AlreadyReferred;
    }
    // Walk the referrer's whole chain (not only 5 levels); `seen` stops a corrupt
    // cycle that does not pass through `wallet`.
    let mut seen = HashSet::new();
    let mut current = referrer;
    while let Some(next) = referrer_of(current) {
        if next == wallet {
            return ReferralOutcome::Cycle;
        }
        if !seen.insert(next) {
            break;
        }
        current = next;
    }
    ReferralOutcome::Registered
}

/// Whether a decision about `wallet` reads an edge that may still be undone: one
/// of the first `depth` edges of its chain (`None`: all of them, as the cycle
/// check reads a referrer's chain) leaves a wallet that `pending` names.
pub fn reads_pending(
    wallet: Address,
    depth: Option<usize>,
    referrer_of: impl Fn(Address) -> Option<Address>,
    pending: impl Fn(&Address) -> bool,
) -> bool {
    let mut seen = HashSet::new();
    let mut current = wallet;
    for _ in 0..depth.unwrap_or(usize::MAX) {
        if pending(&current) {
            return true;
        }
        match referrer_of(current) {
            Some(next) if next != wallet && seen.insert(next) => current = next,
            _ => return false,
        }
    }
    false
}

/// The wallet's referrers, nearest first, at most `max_depth`; stops at a repeat.
pub fn chain(
    wallet: Address,
    max_depth: usize,
    referrer_of: impl Fn(Address) -> Option<Address>,
) -> Vec<Address> {
    let mut out: Vec<Address> = Vec::with_capacity(max_depth);
    let mut current = wallet;
    while out.len() < max_depth {
        match referrer_of(current) {
            Some(next) if next != wallet && !out.contains(&next) => {
                out.push(next);
                current = next;
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn a(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    fn edges(pairs: &[(u8, u8)]) -> HashMap<Address, Address> {
        pairs.iter().map(|(w, r)| (a(*w), a(*r))).collect()
    }

    #[test]
    fn the_four_outcomes() {
        // 2 was referred by 1, 3 by 2.
        let g = edges(&[(2, 1), (3, 2)]);
        let of = |w: Address| g.get(&w).copied();
        assert_eq!(decide(a(4), a(4), of), ReferralOutcome::SelfReferral);
        assert_eq!(decide(a(2), a(9), of), ReferralOutcome::AlreadyReferred);
        // 1 referred by 3 would close 1 → 2 → 3 → 1.
        assert_eq!(decide(a(1), a(3), of), ReferralOutcome::Cycle);
        assert_eq!(decide(a(4), a(3), of), ReferralOutcome::Registered);
    }

    #[test]
    fn cycles_are_found_beyond_five_levels() {
        let pairs: Vec<(u8, u8)> = (2..=20).map(|i| (i, i - 1)).collect();
        let g = edges(&pairs);
        assert_eq!(
            decide(a(1), a(20), |w| g.get(&w).copied()),
            ReferralOutcome::Cycle
        );
    }

    #[test]
    fn pending_edges_count_within_the_depth_read() {
        // 5 → 4 → 3 → 2 → 1 → 0; the edge leaving 1 is pending.
        let g = edges(&[(5, 4), (4, 3), (3, 2), (2, 1), (1, 0)]);
        let of = |w: Address| g.get(&w).copied();
        let pending = |w: &Address| *w == a(1);
        // A chain of five levels from 5 reads the edges leaving 5, 4, 3, 2, 1.
        assert!(reads_pending(a(5), Some(5), of, pending));
        // Four levels stop before the edge leaving 1.
        assert!(!reads_pending(a(5), Some(4), of, pending));
        // The whole chain of 9 (no referrer) reads nothing; of 2, the pending edge.
        assert!(!reads_pending(a(9), None, of, pending));
        assert!(reads_pending(a(2), None, of, pending));
        // The wallet's own edge counts.
        assert!(reads_pending(a(1), Some(1), of, pending));
        // A corrupt cycle ends the walk.
        let g = edges(&[(1, 2), (2, 3), (3, 1)]);
        assert!(!reads_pending(
            a(1),
            None,
            |w| g.get(&w).copied(),
            |w| *w == a(9)
        ));
    }

    #[test]
    fn chains_are_nearest_first_and_bounded() {
        let g = edges(&[(5, 4), (4, 3), (3, 2), (2, 1)]);
        let of = |w: Address| g.get(&w).copied();
        assert_eq!(chain(a(5), 5, of), vec![a(4), a(3), a(2), a(1)]);
        assert_eq!(chain(a(5), 2, of), vec![a(4), a(3)]);
        assert_eq!(chain(a(1), 5, of), Vec::<Address>::new());
        // A corrupt cycle is cut, never looped.
        let g = edges(&[(1, 2), (2, 3), (3, 1)]);
        assert_eq!(chain(a(1), 5, |w| g.get(&w).copied()), vec![a(2), a(3)]);
    }
}
