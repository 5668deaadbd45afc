//! The `push` scenario (SPEC §7, §12): rewards created by purchases sent over HTTP
//! and pushed on-chain by the service's own pushers, measured from its ledger and
//! the chain — rewards pushed per minute, batches, gas per reward split first-time
//! / returning, fixed gas per batch — then checked (on-chain = PostgreSQL per
//! wallet), and set beside the machine's limit measured right after on the same
//! anvil: the same calls sent directly. Runs against `rewardflow dev` (its demo
//! product, bank and token); see `run-benchmarks.sh`, `SCENARIOS=push`.

mod check;
mod gas;
mod ledger;
mod limit;
mod traffic;

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use clap::Args;
use rewardflow::chain::Chain;
use rewardflow::config::ChainSettings;
use sqlx::PgPool;

use crate::Target;

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    #[arg(long, env = "RPC_URL")]
    pub rpc_url: String,
    #[arg(long, env = "MULTI_TOKEN_PUSH_PULL")]
    pub push_pull: Address,
    /// The product the purchases go to (`rewardflow dev`'s demo product).
    #[arg(long, env = "DEMO_PRODUCT_ID")]
    pub product: String,
    #[arg(long, env = "DEMO_TOKEN")]
    pub token: Address,
    /// The demo campaign, paused so that only the scenario's campaign pays.
    #[arg(long, env = "DEMO_CAMPAIGN_ID")]
    pub demo_campaign: i64,
    /// Owner of the product and distributor of its bank (dev: anvil's first account).
    #[arg(long, env = "PUSH_BENCH_KEY", default_value = rewardflow::dev::DEV_KEY, hide_default_value = true)]
    pub key: String,
    /// Purchases in all (two waves of half).
    #[arg(long, default_value_t = 20_000)]
    pub purchases: u64,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 5)]
    pub seed: u64,
    /// Machine limit: batches per pass (sent at once: more than ~10 blocks of them
    /// raise the base fee past the fee cap of the first, which the node then drops).
    #[arg(long, default_value_t = 24)]
    pub limit_batches: usize,
    /// Machine limit: recipients per batch (the service's `chain.max_batch`).
    #[arg(long, default_value_t = 300)]
    pub batch_size: usize,
    /// The service's `chain.confirmations` (the limit waits for as many).
    #[arg(long, default_value_t = 2)]
    pub confirmations: u64,
    /// Bound on each wait for the service, in seconds.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
}

/// Reward per purchase of the scenario's campaign (2 RFD: half to the buyer, the
/// rest up the referral chain).
const REWARD: &str = "2000000000000000000";

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let secret = args.target.secret()?;
    let pool = PgPool::connect(&args.database_url).await?;
    let chain = Chain::new(&ChainSettings {
        rpc_url: args.rpc_url.clone(),
        ..ChainSettings::default()
    })?;
    let owner = args.key.parse::<PrivateKeySigner>()?.address();
    let limit = Duration::from_secs(args.max_seconds);
    let head = chain.head().await?;
    let block = chain
        .provider
        .get_block_by_number(head.into())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no block {head}"))?;
    println!(
        "chain=anvil block_gas_limit={} chain_id={}",
        block.header.gas_limit,
        chain.chain_id().await?
    );

    let mut api = traffic::Api::new(args.target.addr, &secret, owner);
    api.status(args.demo_campaign, "pause").await?;
    let two = U256::from(2u8);
    let reward: U256 = REWARD.parse()?;
    let cap = (reward * U256::from(args.purchases) * two).to_string();
    let campaign = api
        .campaign(
            &args.product,
            args.token,
            "Push benchmark",
            "purchase.completed",
            REWARD,
            &cap,
        )
        .await?;
    let limit_rewards = (2 * args.limit_batches * args.batch_size + 1) as u64;
    let limit_cap = (reward * U256::from(limit_rewards)).to_string();
    let limit_campaign = api
        .campaign(
            &args.product,
            args.token,
            "Push benchmark: machine limit",
            "retail.customer_meeting",
            REWARD,
            &limit_cap,
        )
        .await?;
    ledger::wait_allocated(&pool, campaign, limit).await?;
    ledger::wait_allocated(&pool, limit_campaign, limit).await?;

    let plan = traffic::Plan::new(args.purchases, args.seed);
    let send = |items| {
        traffic::send_all(
            args.target.addr,
            &secret,
            items,
            args.concurrency,
            Instant::now() + limit,
        )
    };
    let summary = send(traffic::referral_items(&plan, &args.product)).await?;
    println!("referrals={} | {summary}", plan.referrals.len());

    let mut service_txs = Vec::new();
    let (mut rewards, mut recipients, mut seconds) = (0i64, 0i64, 0f64);
    for wave in 0..2 {
        let since = ledger::now(&pool).await?;
        let summary = send(traffic::purchase_items(&plan, wave, &args.product)).await?;
        ledger::wait_all_pushed(&pool, campaign, limit).await?;
        let w = ledger::wave(&pool, campaign, since).await?;
        println!(
            "push wave={} purchases={} purchases_per_s={:.0} | rewards={} recipients={} batches={} \
             recipients_per_batch={:.0} (min {}, max {}) first_batch_after_s={:.2} push_s={:.2} \
             rewards_per_min={:.0} recipients_per_min={:.0} reward_to_pushed_p50_s={:.2} p99_s={:.2}",
            wave + 1,
            plan.waves[wave].len(),
            plan.waves[wave].len() as f64 / summary.seconds.max(1e-9),
            w.rewards,
            w.recipients,
            w.batches,
            w.recipients as f64 / w.batches.max(1) as f64,
            w.min_recipients,
            w.max_recipients,
            w.first_batch_after,
            w.push_seconds,
            per_min(w.rewards, w.push_seconds),
            per_min(w.recipients, w.push_seconds),
            w.latency_p50,
            w.latency_p99,
        );
        rewards += w.rewards;
        recipients += w.recipients;
        seconds += w.push_seconds;
        service_txs.extend(w.txs);
    }
    println!(
        "push both_waves rewards={rewards} recipients={recipients} push_s={seconds:.2} \
         rewards_per_min={:.0} recipients_per_min={:.0}",
        per_min(rewards, seconds),
        per_min(recipients, seconds)
    );

    let agreement =
        check::onchain_equals_pushed(&pool, &chain, args.push_pull, args.token, 8).await?;
    println!("{agreement}");
    anyhow::ensure!(agreement.ok(), "on-chain balances differ from PostgreSQL");

    let (bank, external_id) = ledger::bank_and_campaign(&pool, limit_campaign).await?;
    let target = limit::Target {
        chain: chain.clone(),
        rpc_url: args.rpc_url.clone(),
        bank,
        token: args.token,
        campaign: external_id,
        distributor_key: args.key.clone(),
        confirmations: args.confirmations,
    };
    let direct = limit::measure(&target, args.limit_batches, args.batch_size).await?;
    for (name, pass) in [
        ("first_time", &direct.first_time),
        ("returning", &direct.returning),
    ] {
        println!(
            "limit pass={name} batches={} recipients_per_batch={} rewards={} blocks={} included_s={:.2} \
             confirmed_s={:.2} rewards_per_min={:.0} (to inclusion: {:.0})",
            pass.txs.len(),
            args.batch_size,
            pass.rewards,
            pass.blocks,
            pass.included_seconds,
            pass.confirmed_seconds,
            per_min(pass.rewards as i64, pass.confirmed_seconds),
            per_min(pass.rewards as i64, pass.included_seconds),
        );
    }

    let credits = gas::credits(&chain, args.push_pull, args.token, chain.head().await?).await?;
    let service = gas::measure(&chain, &service_txs, &credits).await?;
    report_service_gas(&service);
    let first = gas::measure(&chain, &direct.first_time.txs, &credits).await?;
    let returning = gas::measure(&chain, &direct.returning.txs, &credits).await?;
    let single = gas::measure(&chain, &direct.single.txs, &credits).await?;
    report_direct_gas(&first, &returning, &single);
    Ok(())
}

fn per_min(count: i64, seconds: f64) -> f64 {
    count as f64 * 60.0 / seconds.max(1e-9)
}

/// The service's batches: totals, and the least-squares terms.
fn report_service_gas(batches: &[gas::Measured]) {
    let first: u64 = batches.iter().map(|b| b.split.first).sum();
    let returning: u64 = batches.iter().map(|b| b.split.returning).sum();
    let gas: u64 = batches.iter().map(|b| b.gas).sum();
    print!(
        "gas service batches={} recipients_first_time={first} recipients_returning={returning} \
         gas_total={gas} gas_per_recipient_all_in={:.0}",
        batches.len(),
        gas as f64 / (first + returning).max(1) as f64
    );
    match gas::fit(batches) {
        Some(fit) => println!(
            " | fit: fixed_per_batch={:.0} per_first_time={:.0} per_returning={:.0} max_residual={:.0}",
            fit.fixed, fit.per_first, fit.per_returning, fit.max_residual
        ),
        None => println!(" | fit: the batch mix does not determine the terms"),
    }
}

/// The direct batches: B new recipients, the same B again, and one new recipient.
/// With g1 = fixed + f, gB_new = fixed + B·f, gB_ret = fixed + B·r:
/// f = (gB_new − g1)/(B − 1), fixed = g1 − f, r = (gB_ret − fixed)/B.
fn report_direct_gas(
    first: &[gas::Measured],
    returning: &[gas::Measured],
    single: &[gas::Measured],
) {
    let mean =
        |b: &[gas::Measured]| b.iter().map(|m| m.gas as f64).sum::<f64>() / b.len().max(1) as f64;
    let size = first
        .first()
        .map_or(1, |b| b.split.first + b.split.returning);
    let all_new = first
        .iter()
        .all(|b| b.split.returning == 0 && b.split.first == size);
    let all_back = returning
        .iter()
        .all(|b| b.split.first == 0 && b.split.returning == size);
    let (g1, g_new, g_ret) = (mean(single), mean(first), mean(returning));
    let f = (g_new - g1) / (size.max(2) - 1) as f64;
    let fixed = g1 - f;
    let r = (g_ret - fixed) / size as f64;
    println!(
        "gas direct batch_of_1_new={g1:.0} batch_of_{size}_new_mean={g_new:.0} batch_of_{size}_returning_mean={g_ret:.0} \
         => fixed_per_batch={fixed:.0} per_first_time={f:.0} per_returning={r:.0} (recipients as labelled: {})",
        if all_new && all_back { "yes" } else { "NO" }
    );
}
