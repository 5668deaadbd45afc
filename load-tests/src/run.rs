//! The scenarios: single-interaction requests (the SDK path) and batched requests.
//! Every interaction carries an idempotency key derived from the run and its
//! sequence number; refused attempts (503, 429, transport errors) are retried with
//! the same key until acknowledged or the time limit, so "acknowledged" can later
//! be checked against the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use rewardflow::domain::ids::{parse_address, product_id_for_domain, to_hex};
use rewardflow::domain::session_token;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Target;
use crate::client::Connection;
use crate::report::Sample;
use crate::scenario::{Scenario, product_domain, wallet_hex};
use crate::verify;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    Single,
    Batch,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum, default_value = "single")]
    pub mode: Mode,
    /// Interactions to send in all.
    #[arg(long, default_value_t = 100_000)]
    pub interactions: u64,
    /// Interactions per request in batch mode.
    #[arg(long, default_value_t = 100)]
    pub batch_size: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    #[arg(long, default_value_t = 100_000)]
    pub wallets: u32,
    /// Every wallet acts in turn instead of drawn ones (the memory measurement:
    /// the first `wallets` interactions that are not referrals use every wallet).
    #[arg(long)]
    pub every_wallet: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of the idempotency keys; a new id makes new interactions.
    #[arg(long, default_value = "run")]
    pub run_id: String,
    /// Give up (unacknowledged interactions stay so) after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
    /// Verify against this database afterwards.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

const OWNER: u32 = u32::MAX - 1;

pub async fn setup(target: &Target) -> anyhow::Result<()> {
    let secret = target.secret()?;
    let token = mint(&secret, OWNER);
    let mut conn = Connection::new(target.addr);
    let mut created = 0;
    for i in 0..target.products {
        let body = json!({"domain": product_domain(i), "name": format!("Load test product {i}")});
        let answer = conn
            .post("/v1/products", Some(&token), Bytes::from(body.to_string()))
            .await?;
        match answer.status {
            201 => created += 1,
            409 => {}
            other => anyhow::bail!("creating product {i}: HTTP {other}: {:?}", answer.body),
        }
    }
    eprintln!(
        "products: {} in the scenario, {created} created now",
        target.products
    );
    if target.campaigns_per_product > 0 {
        setup_campaigns(target, &token, &mut conn).await?;
    }
    Ok(())
}

const TRIGGERS: &[&str] = &[
    "webshop.open",
    "press.open_article",
    "press.read_article",
    "purchase.completed",
    "purchase.started",
    "referral.referred",
    "referral.link_creation",
    "retail.customer_meeting",
];

/// The chain of the scenario's banks: not the one `rewardflow dev` runs, so no
/// pusher works on them and the run measures ingestion alone (pushing has its own
/// scenario, `push`, against real banks).
const INGESTION_BANK_CHAIN_ID: u64 = 1;

/// A bank and N active campaigns for every product of the scenario.
async fn setup_campaigns(
    target: &Target,
    token: &str,
    conn: &mut Connection,
) -> anyhow::Result<()> {
    let reward_token = "0x7070707070707070707070707070707070707070";
    for i in 0..target.products {
        let product = to_hex(product_id_for_domain(&product_domain(i)));
        let bank = json!({"chain_id": INGESTION_BANK_CHAIN_ID, "bank_address": format!("0x{:040x}", u64::from(i) + 1),
            "token": reward_token, "symbol": "RWD", "decimals": 18});
        let answer = conn
            .post(
                &format!("/v1/products/{product}/banks"),
                Some(token),
                Bytes::from(bank.to_string()),
            )
            .await?;
        if answer.status != 201 && answer.status != 409 {
            anyhow::bail!("bank of product {i}: HTTP {}", answer.status);
        }
        for c in 0..target.campaigns_per_product {
            let campaign = json!({"name": format!("Campaign {c}"),
                "trigger": TRIGGERS[c as usize % TRIGGERS.len()], "token": reward_token,
                "reward": {"type": "fixed", "amount": "1000000000000000000"}});
            let path = format!("/v1/products/{product}/campaigns");
            let answer = conn
                .post(&path, Some(token), Bytes::from(campaign.to_string()))
                .await?;
            anyhow::ensure!(
                answer.status == 201,
                "campaign of product {i}: HTTP {}",
                answer.status
            );
            let created: Value = serde_json::from_slice(&answer.body)?;
            let id = created["id"].as_i64().unwrap_or_default();
            let path = format!("/v1/campaigns/{id}/activate");
            let answer = conn.post(&path, Some(token), Bytes::new()).await?;
            anyhow::ensure!(
                answer.status == 200,
                "activating campaign {id}: HTTP {}",
                answer.status
            );
        }
    }
    eprintln!(
        "campaigns: {} per product, active",
        target.campaigns_per_product
    );
    Ok(())
}

/// Session tokens for the scenario's wallets, minted with the service's secret.
fn mint(secret: &[u8], wallet: u32) -> String {
    mint_for(
        secret,
        parse_address(&wallet_hex(wallet)).expect("valid address"),
    )
}

/// A day-long session token for `wallet`, minted with the service's secret.
pub fn mint_for(secret: &[u8], wallet: alloy::primitives::Address) -> String {
    session_token::mint(secret, wallet, now_secs(), 24 * 3600)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Shared by the workers.
struct Shared {
    args: RunArgs,
    scenario: Scenario,
    tokens: Vec<String>,
    next: AtomicU64,
    /// Per interaction: 0 not acknowledged, 1 accepted, 2 duplicate.
    acked: Vec<AtomicU8>,
    /// (interaction, id the service answered with), from every acknowledgement.
    ids: std::sync::Mutex<Vec<(u64, String)>>,
    retries: AtomicU64,
    deadline: Instant,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let secret = args.target.secret()?;
    let scenario = Scenario::new(
        &args.run_id,
        args.seed,
        args.target.products,
        args.wallets,
        args.interactions,
    )
    .every_wallet(args.every_wallet);
    let tokens: Vec<String> = (0..args.wallets).map(|w| mint(&secret, w)).collect();
    let shared = Arc::new(Shared {
        scenario,
        tokens,
        next: AtomicU64::new(0),
        acked: (0..args.interactions).map(|_| AtomicU8::new(0)).collect(),
        ids: std::sync::Mutex::new(Vec::with_capacity(args.interactions as usize)),
        retries: AtomicU64::new(0),
        deadline: Instant::now() + Duration::from_secs(args.max_seconds),
        args: args.clone(),
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let shared = shared.clone();
            tokio::spawn(async move { worker(&shared).await })
        })
        .collect();
    let mut sample = Sample::default();
    for worker in workers {
        sample.merge(worker.await?);
    }
    let elapsed = started.elapsed();
    let acked = shared
        .acked
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) != 0)
        .count() as u64;
    let summary = sample.summarize(elapsed);
    let mode = if args.mode == Mode::Single {
        "single"
    } else {
        "batch"
    };
    println!(
        "mode={mode} interactions={} acknowledged={acked} interactions_per_s={:.0} retries={} | requests: {summary}",
        args.interactions,
        acked as f64 / elapsed.as_secs_f64(),
        shared.retries.load(Ordering::Relaxed),
    );
    if let Some(url) = &args.database_url {
        let acked: Vec<bool> = shared
            .acked
            .iter()
            .map(|a| a.load(Ordering::Relaxed) != 0)
            .collect();
        let ids = std::mem::take(&mut *shared.ids.lock().expect("ids"));
        let report = verify::exactly_once(url, &args.run_id, &acked, &ids).await?;
        println!("{report}");
        anyhow::ensure!(report.ok(), "verification failed");
    }
    anyhow::ensure!(
        acked == args.interactions,
        "{} interactions were never acknowledged",
        args.interactions - acked
    );
    Ok(())
}

async fn worker(shared: &Shared) -> Sample {
    let mut conn = Connection::new(shared.args.target.addr);
    let mut sample = Sample::default();
    let step = if shared.args.mode == Mode::Single {
        1
    } else {
        shared.args.batch_size
    };
    loop {
        let first = shared.next.fetch_add(step, Ordering::Relaxed);
        if first >= shared.args.interactions {
            break;
        }
        let last = (first + step).min(shared.args.interactions);
        let (wallet, body) = if shared.args.mode == Mode::Single {
            shared.scenario.interaction(first)
        } else {
            batch(shared, first, last)
        };
        let body = Bytes::from(serde_json::to_vec(&body).expect("json"));
        let token = &shared.tokens[wallet as usize];
        while Instant::now() < shared.deadline {
            let sent = Instant::now();
            let answer = conn
                .post("/v1/interactions", Some(token), body.clone())
                .await;
            let status = answer.as_ref().ok().map(|a| a.status);
            sample.record(sent.elapsed(), status);
            match answer {
                Ok(a) if a.status == 202 => {
                    if acknowledge(shared, first, last, &a.body) {
                        break;
                    }
                    // Some items of the batch were "unavailable": resend it (the
                    // stored ones come back as duplicates).
                    backoff(shared, a.retry_after.unwrap_or(1).min(2) * 100).await;
                }
                Ok(a) if a.status == 503 || a.status == 429 => {
                    backoff(shared, a.retry_after.unwrap_or(1).min(2) * 100).await;
                }
                Ok(a) => {
                    eprintln!(
                        "interaction {first}: HTTP {}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    );
                    break;
                }
                Err(_) => backoff(shared, 50).await,
            }
        }
    }
    sample
}

async fn backoff(shared: &Shared, millis: u64) {
    shared.retries.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// Batch `first..last`: one wallet; the block's referral edge first when it has one.
fn batch(shared: &Shared, first: u64, last: u64) -> (u32, Value) {
    let block = first / shared.args.batch_size;
    let (wallet, head) = match shared.scenario.batch_referral(block, first) {
        Some((child, body)) => (child, Some(body)),
        None => (shared.scenario.random_wallet(block), None),
    };
    let skip = u64::from(head.is_some());
    let mut items: Vec<Value> = head.into_iter().collect();
    items.extend((first + skip..last).map(|seq| shared.scenario.plain_interaction(seq)));
    (wallet, json!({ "interactions": items }))
}

/// What the tool reads of an answered item (the rest, rewards included, is
/// skipped while parsing: the generator shares the machine with the service).
#[derive(Deserialize)]
struct AckItem {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
struct AckBatch {
    interactions: Vec<AckItem>,
}

/// Records what a 202 acknowledged; true when every interaction of it is.
fn acknowledge(shared: &Shared, first: u64, last: u64, body: &[u8]) -> bool {
    let items = if shared.args.mode == Mode::Single {
        serde_json::from_slice::<AckItem>(body).map(|item| vec![item])
    } else {
        serde_json::from_slice::<AckBatch>(body).map(|batch| batch.interactions)
    };
    let Ok(items) = items else {
        return false;
    };
    let mut complete = true;
    let mut ids = Vec::with_capacity(items.len());
    for (seq, item) in (first..last).zip(items) {
        let mark = match item.status.as_str() {
            "accepted" => 1,
            "duplicate" => 2,
            // Refused for good: reported, not retried.
            "rejected" => {
                eprintln!(
                    "interaction {seq} rejected: {}",
                    String::from_utf8_lossy(body)
                );
                continue;
            }
            _ => {
                complete = false;
                continue;
            }
        };
        shared.acked[seq as usize].store(mark, Ordering::Relaxed);
        ids.push((seq, item.id.unwrap_or_default()));
    }
    shared.ids.lock().expect("ids").extend(ids);
    complete
}
