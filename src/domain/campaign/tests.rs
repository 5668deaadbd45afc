use super::*;
use proptest::prelude::*;

fn wei(units: u64) -> U256 {
    U256::from(units) * U256::from(10u64).pow(U256::from(17u8))
}

fn rule(reward: RewardSpec) -> CampaignRule {
    CampaignRule {
        id: 1,
        external_id: Uuid::from_u128(0x1234),
        trigger: InteractionType::PurchaseCompleted,
        requires_referral: false,
        reward,
        user_bps: 5_000,
        deperdition_bps: 8_000,
        max_depth: 5,
        max_rewards_per_user: None,
        budget_cap: U256::ZERO,
        used_budget: U256::ZERO,
        lockup_seconds: 0,
        starts_at: None,
        ends_at: None,
        status: CampaignStatus::Active,
        token: Address::repeat_byte(0x70),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn addr(n: u8) -> Address {
    Address::repeat_byte(n)
}

fn occurrence(chain: &[Address]) -> Occurrence<'_> {
    Occurrence {
        interaction_id: Uuid::from_u128(7),
        kind: InteractionType::PurchaseCompleted,
        wallet: addr(0xaa),
        chain,
        user_rewards: 0,
        now: now(),
    }
}

#[test]
fn the_design_example() {
    // base 10 units (in tenths here: 100), 5000 / 8000, chain of 3 → 5 / 4 / 0.8 / 0.2.
    assert_eq!(
        split(wei(100), 5_000, 8_000, 3),
        vec![wei(50), wei(40), wei(8), wei(2)]
    );
    let chain = [addr(1), addr(2), addr(3)];
    let payouts = rule(RewardSpec::Fixed { amount: wei(100) })
        .evaluate(&occurrence(&chain))
        .unwrap();
    let got: Vec<(Address, &str, U256)> = payouts
        .iter()
        .map(|p| (p.recipient, p.recipient_type.as_str(), p.amount))
        .collect();
    assert_eq!(
        got,
        vec![
            (addr(0xaa), "user", wei(50)),
            (addr(1), "referrer_l1", wei(40)),
            (addr(2), "referrer_l2", wei(8)),
            (addr(3), "referrer_l3", wei(2)),
        ]
    );
}

#[test]
fn without_referrers_only_the_user_is_paid() {
    assert_eq!(
        split(U256::from(10u8), 5_000, 8_000, 0),
        vec![U256::from(5u8)]
    );
    let payouts = rule(RewardSpec::Fixed {
        amount: U256::from(10u8),
    })
    .evaluate(&occurrence(&[]))
    .unwrap();
    assert_eq!(total(&payouts), U256::from(5u8));
}

#[test]
fn zero_shares_make_no_payout_and_depth_truncates() {
    // 3 wei: user 1, r1 = floor(2·0.8) = 1, r2 = 1 … then zeros are dropped.
    let mut r = rule(RewardSpec::Fixed {
        amount: U256::from(3u8),
    });
    let chain = [addr(1), addr(2), addr(3), addr(4)];
    let payouts = r.evaluate(&occurrence(&chain)).unwrap();
    assert!(payouts.iter().all(|p| !p.amount.is_zero()));
    assert_eq!(total(&payouts), U256::from(3u8));
    r.max_depth = 1;
    let payouts = r.evaluate(&occurrence(&chain)).unwrap();
    assert_eq!(payouts.len(), 2);
    assert_eq!(payouts[1].recipient_type, RecipientType::Referrer(1));
}

#[test]
fn matching_rules() {
    let mut r = rule(RewardSpec::Fixed { amount: wei(10) });
    let chain = [addr(1)];
    let mut occ = occurrence(&[]);
    r.requires_referral = true;
    assert_eq!(r.evaluate(&occ), Err(Skip::NoReferrer));
    occ.chain = &chain;
    assert!(r.evaluate(&occ).is_ok());
    r.max_rewards_per_user = Some(2);
    occ.user_rewards = 2;
    assert_eq!(r.evaluate(&occ), Err(Skip::UserCapReached));
    occ.user_rewards = 1;
    assert!(r.evaluate(&occ).is_ok());
    occ.kind = InteractionType::WebshopOpen;
    assert_eq!(r.evaluate(&occ), Err(Skip::WrongTrigger));
    occ.kind = InteractionType::PurchaseCompleted;
    r.starts_at = Some(now() + chrono::Duration::seconds(1));
    assert_eq!(r.evaluate(&occ), Err(Skip::NotLive));
    r.starts_at = Some(now());
    r.ends_at = Some(now());
    assert_eq!(r.evaluate(&occ), Err(Skip::NotLive), "ends_at is exclusive");
    r.ends_at = Some(now() + chrono::Duration::seconds(1));
    assert!(r.evaluate(&occ).is_ok());
    r.status = CampaignStatus::Paused;
    assert_eq!(r.evaluate(&occ), Err(Skip::NotLive));
}

#[test]
fn the_whole_reward_must_fit_the_budget() {
    let mut r = rule(RewardSpec::Fixed {
        amount: U256::from(100u8),
    });
    r.budget_cap = U256::from(250u16);
    r.used_budget = U256::from(150u16);
    let chain = [addr(1)];
    // Exact fit.
    assert_eq!(
        total(&r.evaluate(&occurrence(&chain)).unwrap()),
        U256::from(100u8)
    );
    r.used_budget = U256::from(151u16);
    assert_eq!(
        r.evaluate(&occurrence(&chain)),
        Err(Skip::BudgetInsufficient)
    );
    // A non-referred user costs only 50: it still fits.
    assert_eq!(
        total(&r.evaluate(&occurrence(&[])).unwrap()),
        U256::from(50u8)
    );
    assert!(!r.is_exhausted());
    r.used_budget = U256::from(201u16);
    assert!(r.is_exhausted());
    r.requires_referral = true;
    r.used_budget = U256::from(151u16);
    assert!(r.is_exhausted(), "only whole bases can be paid now");
}

#[test]
fn status_machine() {
    use CampaignStatus::*;
    use StatusAction::*;
    assert_eq!(transition(Draft, Activate), Some(Active));
    assert_eq!(transition(Active, Pause), Some(Paused));
    assert_eq!(transition(Paused, Activate), Some(Active));
    assert_eq!(transition(Paused, Deactivate), Some(Deactivated));
    assert_eq!(transition(Draft, Pause), None);
    assert_eq!(transition(Draft, Deactivate), None);
    assert_eq!(transition(Deactivated, Activate), None);
    assert_eq!(transition(BudgetExhausted, Activate), Some(Active));
    assert_eq!(transition(Expired, Activate), None);
    assert_eq!(transition(Expired, Deactivate), Some(Deactivated));
    for s in [Draft, Active, Paused, Deactivated, BudgetExhausted, Expired] {
        assert_eq!(CampaignStatus::parse(s.as_str()), Some(s));
    }
}

#[test]
fn range_draws_are_deterministic_and_converge_to_the_beta_mean() {
    let (min, max) = (U256::from(1_000u32), U256::from(1_000_000u32));
    for beta_bps in [5_000u32, 10_000, 20_000, 40_000] {
        let r = rule(RewardSpec::Range { min, max, beta_bps });
        let n = 20_000u128;
        let mut sum = 0f64;
        for i in 0..n {
            let amount = r.base_amount(Uuid::from_u128(i));
            assert!(amount >= min && amount <= max);
            assert_eq!(amount, r.base_amount(Uuid::from_u128(i)), "deterministic");
            sum += amount.to::<u64>() as f64;
        }
        let beta = f64::from(beta_bps) / 10_000.0;
        let expected = 1_000.0 + 999_000.0 * 2.0 / (2.0 + beta);
        let mean = sum / n as f64;
        assert!(
            (mean - expected).abs() / expected < 0.01,
            "β={beta}: mean {mean}, expected {expected}"
        );
    }
    // Another campaign draws differently for the same interaction.
    let a = rule(RewardSpec::Range {
        min,
        max,
        beta_bps: 10_000,
    });
    let mut b = a.clone();
    b.external_id = Uuid::from_u128(0x9999);
    let differs =
        (0..20u128).any(|i| a.base_amount(Uuid::from_u128(i)) != b.base_amount(Uuid::from_u128(i)));
    assert!(differs);
}

proptest! {
    #[test]
    fn the_split_pays_exactly_what_it_charges(
        base in any::<u128>(),
        user_bps in 0u32..=10_000,
        dep_bps in 0u32..=10_000,
        n in 0usize..=5,
    ) {
        let base = U256::from(base);
        let shares = split(base, user_bps, dep_bps, n);
        prop_assert_eq!(shares.len(), n + 1);
        let sum = shares.iter().fold(U256::ZERO, |a, b| a + *b);
        prop_assert!(sum <= base);
        if n > 0 {
            prop_assert_eq!(sum, base);
        } else {
            prop_assert_eq!(sum, shares[0]);
        }
    }

    #[test]
    fn evaluation_never_overpays_nor_pays_a_wallet_twice(
        amount in 1u64..u64::MAX,
        user_bps in 0u32..=10_000,
        dep_bps in 0u32..=10_000,
        depth in 0u8..=5,
        chain_len in 0usize..=8,
        cap in 0u64..u64::MAX,
        used in 0u64..u64::MAX,
    ) {
        let mut r = rule(RewardSpec::Fixed { amount: U256::from(amount) });
        r.user_bps = user_bps;
        r.deperdition_bps = dep_bps;
        r.max_depth = depth;
        r.budget_cap = U256::from(cap);
        r.used_budget = U256::from(used.min(cap));
        let chain: Vec<Address> = (0..chain_len).map(|i| addr(i as u8 + 1)).collect();
        if let Ok(payouts) = r.evaluate(&occurrence(&chain)) {
            let paid = total(&payouts);
            prop_assert!(paid <= U256::from(amount));
            if let Some(remaining) = r.remaining_budget() {
                prop_assert!(paid <= remaining);
            }
            let mut wallets: Vec<Address> = payouts.iter().map(|p| p.recipient).collect();
            wallets.sort();
            wallets.dedup();
            prop_assert_eq!(wallets.len(), payouts.len());
            prop_assert!(payouts.len() <= usize::from(depth) + 1);
        }
    }

    #[test]
    fn range_draws_stay_in_bounds(min in any::<u64>(), spread in any::<u64>(), beta_bps in 1u32..100_000, id in any::<u128>()) {
        let (min, max) = (U256::from(min), U256::from(min) + U256::from(spread));
        let amount = rule(RewardSpec::Range { min, max, beta_bps }).base_amount(Uuid::from_u128(id));
        prop_assert!(amount >= min && amount <= max);
    }
}

#[test]
fn the_estimate_pays_only_what_the_budget_can_fit() {
    let u = U256::from;
    let fixed = rule(RewardSpec::Fixed { amount: u(10) });
    let both = |referred, non_referred| UserEstimate {
        referred,
        non_referred,
    };
    assert_eq!(
        fixed.user_estimate(),
        both(Some((u(5), u(5))), Some((u(5), u(5))))
    );
    // 7 left: a referred purchase needs the whole 10, a plain one its 5.
    let mut capped = fixed.clone();
    capped.budget_cap = u(100);
    capped.used_budget = u(93);
    assert_eq!(capped.user_estimate(), both(None, Some((u(5), u(5)))));

    let mut range = rule(RewardSpec::Range {
        min: u(100),
        max: u(1000),
        beta_bps: 10_000,
    });
    range.budget_cap = u(1000);
    range.used_budget = u(500);
    // Draws above 500 do not fit with referrers; the user alone gets at most 500.
    assert_eq!(
        range.user_estimate(),
        both(Some((u(50), u(250))), Some((u(50), u(500))))
    );
    // 200 left: the largest base whose user share fits is 401 (share 200).
    range.used_budget = u(800);
    assert_eq!(range.user_estimate().non_referred, Some((u(50), u(200))));
    // 40 left: not even the smallest draw fits.
    range.used_budget = u(960);
    assert_eq!(range.user_estimate(), both(None, None));

    let mut referral_only = fixed.clone();
    referral_only.requires_referral = true;
    assert_eq!(
        referral_only.user_estimate(),
        both(Some((u(5), u(5))), None)
    );
    // Paying referrers only: a referred user earns 0, a plain one nothing.
    let mut referrers_only = fixed;
    referrers_only.user_bps = 0;
    assert_eq!(
        referrers_only.user_estimate(),
        both(Some((u(0), u(0))), None)
    );
}
