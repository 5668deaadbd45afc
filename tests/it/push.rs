//! Rewards to the chain against a real anvil: the whole loop, the exactly-once
//! ledger across crashes at every step, a node outage, and a reverting push.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;
use rewardflow::chain::ChainContext;
use rewardflow::chain::contracts::{MultiTokenPushPull, ProductBank};
use rewardflow::chain::push::{Progress, Pushing};
use rewardflow::config::Settings;
use rewardflow::db::push as ledger;
use rewardflow::domain::push::onchain_campaign_id;
use serde_json::{Value, json};

use crate::chain_fixture::*;
use crate::common::{TestApp, fresh_database, test_settings};

const WAIT: Duration = Duration::from_secs(30);

async fn all_pushed(app: &TestApp) {
    eventually(WAIT, "every reward pushed", || async {
        let open = scalar_i64(
            app,
            "SELECT count(*) FROM rewards WHERE status IN ('pending', 'pushing')",
        )
        .await;
        let unfinished = scalar_i64(
            app,
            "SELECT count(*) FROM reward_batches WHERE status IN ('created', 'sent')",
        )
        .await;
        (open == 0 && unfinished == 0).then_some(())
    })
    .await;
}

/// Settings of a process on `database` whose pusher and indexer follow `chain`.
fn chain_settings(chain: &TestChain, database: &str) -> Settings {
    let mut settings = test_settings(database);
    chain.configure(&mut settings);
    settings
}

/// Waits until `n` rewards of the campaign are pushed.
async fn pushed_of(app: &TestApp, campaign: i64, n: i64) {
    let sql = format!(
        "SELECT count(*) FROM rewards WHERE campaign_id = {campaign} AND status = 'pushed'"
    );
    eventually(WAIT, "the campaign's rewards pushed", || async {
        (scalar_i64(app, &sql).await == n).then_some(())
    })
    .await;
}

async fn campaign_allocated(app: &TestApp, campaign: i64) {
    let owner = owner_token(app);
    eventually(WAIT, "the campaign allocated on its bank", || async {
        let (_, body) = app
            .get(&format!("/v1/campaigns/{campaign}"), Some(&owner))
            .await;
        (body["chain"]["state"] == "allocated").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewards_reach_the_chain_and_a_claim_is_indexed() {
    let chain = TestChain::start().await;
    let app = TestApp::spawn_with(|s| chain.configure(s)).await;
    let (product, campaign) = product_and_campaign(&app, &chain, json!({})).await;
    campaign_allocated(&app, campaign).await;

    // A chain of three: root ← mid ← claimer; the claimer buys (design example 5 / 4 / 0.8 / 0.2
    // needs depth 3: add a top).
    let claimer: alloy::signers::local::PrivateKeySigner = CLAIMER_KEY.parse().unwrap();
    let (top, root, mid, buyer) = (user(1), user(2), user(3), claimer.address());
    refer(&app, &product, root, top).await;
    refer(&app, &product, mid, root).await;
    refer(&app, &product, buyer, mid).await;
    purchase(&app, &product, buyer, "order-1").await;
    purchase(&app, &product, user(9), "order-2").await;
    all_pushed(&app).await;
    assert_exactly_once(&app, &chain).await;
    let ten = U256::from(10u64).pow(U256::from(18));
    assert_eq!(
        chain.pending_on_chain(buyer).await,
        ten * U256::from(5u64) + U256::ZERO
    );
    assert_eq!(chain.pending_on_chain(mid).await, ten * U256::from(4u64));
    assert_eq!(
        chain.pending_on_chain(root).await,
        ten * U256::from(8u64) / U256::from(10u64)
    );
    assert_eq!(
        chain.pending_on_chain(top).await,
        ten * U256::from(2u64) / U256::from(10u64)
    );

    // The wallet API: claimable once indexed.
    let path = format!("/v1/wallets/{buyer:#x}/rewards");
    let five = (ten * U256::from(5u64)).to_string();
    eventually(WAIT, "the RewardAdded indexed", || async {
        let (_, body) = app.get(&path, None).await;
        (body["tokens"][0]["claimable"] == five.as_str()).then_some(())
    })
    .await;
    let (_, body) = app.get(&path, None).await;
    assert_eq!(body["tokens"][0]["pending"], "0", "{body}");
    assert_eq!(body["tokens"][0]["claimed"], "0", "{body}");

    // The user claims on-chain; the indexer sees it.
    let user_provider = wallet_provider(&chain.rpc_url(), CLAIMER_KEY);
    let push_pull = MultiTokenPushPull::new(chain.push_pull, &user_provider);
    let receipt = succeeded(push_pull.pullReward(chain.token).send().await.unwrap()).await;
    eventually(WAIT, "the claim indexed", || async {
        let (_, body) = app.get(&path, None).await;
        (body["tokens"][0]["claimed"] == five.as_str() && body["tokens"][0]["claimable"] == "0")
            .then_some(())
    })
    .await;
    let (status, history) = app
        .get(&format!("/v1/wallets/{buyer:#x}/history"), None)
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["claims"][0]["tx_hash"],
        format!("{:#x}", receipt.transaction_hash),
        "{history}"
    );
    let rewards = history["rewards"].as_array().unwrap();
    assert!(
        rewards
            .iter()
            .any(|r| r["status"] == "pushed" && r["tx_hash"].is_string()),
        "{history}"
    );
    let (status, _) = app.get("/v1/wallets/not-an-address/rewards", None).await;
    assert_eq!(status, 422);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("rewardflow_push_batches_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rewardflow_indexer_events_total{event=\"RewardClaimed\"}"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

/// Where the previous process stopped.
#[derive(Debug, Clone, Copy)]
enum CrashPoint {
    Marked,
    Signed,
    Sent,
    Mined,
}

/// A pusher's steps for the test chain's token, played by the test itself against
/// `app`'s database (`settings` points at the chain).
async fn manual_pusher(
    app: &TestApp,
    chain: &TestChain,
    settings: &Settings,
    max_batch: u64,
) -> Pushing {
    let chain_ctx = ChainContext::new(&settings.chain).unwrap().unwrap();
    let mut chain_settings = settings.chain.clone();
    chain_settings.max_batch = max_batch;
    Pushing {
        pool: app.ctx.pool.clone(),
        chain: chain_ctx.chain.clone(),
        distributor: chain_ctx.distributor.clone(),
        manager: chain_ctx.manager.clone(),
        token: chain.token,
        settings: Arc::new(chain_settings),
    }
}

/// Runs the steps of one batch up to `point` (as a pusher that then died would),
/// restarts the service and checks every reward is paid exactly once.
async fn crash_and_recover(point: CrashPoint) {
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    let with_chain = || chain_settings(&chain, &database);
    // The first process has no pusher: the test plays its steps.
    let first = TestApp::start(test_settings(&database)).await.unwrap();
    let (product, _campaign) = product_and_campaign(&first, &chain, json!({})).await;
    for i in 0..6 {
        purchase(&first, &product, user(100 + i), &format!("o{i}")).await;
    }
    let ctx = &first.ctx;
    // Batches of 4: one crashed, one left pending.
    let steps = manual_pusher(&first, &chain, &with_chain(), 4).await;
    steps.sync_campaigns().await.unwrap();
    let work = steps.work().await.unwrap();
    assert_eq!(work.len(), 1);
    let batch = steps.prepare(&work[0]).await.unwrap().expect("a batch");
    assert_eq!(batch.recipient_count, 4);
    if !matches!(point, CrashPoint::Marked) {
        let payload = steps.payload(&batch).await.unwrap();
        let signature = steps.sign(&batch, &payload).await.unwrap();
        if matches!(point, CrashPoint::Sent | CrashPoint::Mined) {
            let tx = steps.send(&batch, &payload, signature).await.unwrap();
            if matches!(point, CrashPoint::Mined) {
                ledger::mark_sent(&ctx.pool, batch.id, tx).await.unwrap();
                let receipt = eventually(WAIT, "the receipt", || async {
                    steps.chain.receipt(tx).await.unwrap()
                })
                .await;
                assert!(receipt.status());
            }
        }
    }
    first.stop().await.unwrap();

    let second = TestApp::start(with_chain()).await.unwrap();
    all_pushed(&second).await;
    assert_exactly_once(&second, &chain).await;
    let pushed = scalar_i64(
        &second,
        "SELECT count(*) FROM rewards WHERE status = 'pushed'",
    )
    .await;
    assert_eq!(pushed, 6, "{point:?}");
    let batch_status: String =
        sqlx::query_scalar("SELECT status FROM reward_batches WHERE id = $1")
            .bind(batch.id)
            .fetch_one(&second.ctx.pool)
            .await
            .unwrap();
    assert_eq!(
        batch_status, "confirmed",
        "{point:?}: the crashed batch was finished, not redone"
    );
    second.stop().await.unwrap();
}

/// The bank's budget is set, not added to: a campaign allocated again (here on its
/// activation after a pause) while one of its batches is in flight waits until the
/// batch is settled, or the batch's payment would be counted twice and the last
/// rewards could never be paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_allocated_again_counts_a_batch_in_flight_once() {
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    // No pusher in the service: the test plays its steps.
    let app = TestApp::start(test_settings(&database)).await.unwrap();
    let cap = U256::from(100u64) * U256::from(10u64).pow(U256::from(18));
    let (product, campaign) =
        product_and_campaign(&app, &chain, json!({"budget_cap": cap.to_string()})).await;
    purchase(&app, &product, user(400), "in-flight-1").await;
    purchase(&app, &product, user(401), "in-flight-2").await;
    let steps = manual_pusher(&app, &chain, &chain_settings(&chain, &database), 10).await;
    steps.sync_campaigns().await.unwrap();
    let work = steps.work().await.unwrap();
    let batch = steps.prepare(&work[0]).await.unwrap().expect("a batch");

    // Paused and active again while the batch is marked but not sent.
    let owner = owner_token(&app);
    for action in ["pause", "activate"] {
        let (status, body) = app
            .post(
                &format!("/v1/campaigns/{campaign}/{action}"),
                &serde_json::Value::Null,
                Some(&owner),
            )
            .await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    steps.sync_campaigns().await.unwrap();
    let payload = steps.payload(&batch).await.unwrap();
    let signature = steps.sign(&batch, &payload).await.unwrap();
    let tx = steps.send(&batch, &payload, signature).await.unwrap();
    ledger::mark_sent(&app.ctx.pool, batch.id, tx)
        .await
        .unwrap();
    let sent = unfinished(&app, &steps, batch.id).await.expect("sent");
    let progress = eventually(WAIT, "the batch confirmed", || async {
        match steps.advance(&sent).await.unwrap() {
            Progress::InFlight => None,
            other => Some(other),
        }
    })
    .await;
    assert!(
        matches!(progress, Progress::Confirmed { .. }),
        "{progress:?}"
    );
    steps.sync_campaigns().await.unwrap();

    let (_, view) = app
        .get(&format!("/v1/campaigns/{campaign}"), Some(&owner))
        .await;
    assert_eq!(view["chain"]["state"], "allocated", "{view}");
    let external: uuid::Uuid = view["external_id"].as_str().unwrap().parse().unwrap();
    let left = ProductBank::new(chain.bank, &chain.provider)
        .getCampaignBudget(onchain_campaign_id(external), chain.token)
        .call()
        .await
        .unwrap();
    let paid = U256::from(10u64) * U256::from(10u64).pow(U256::from(18));
    assert_eq!(
        left,
        cap - paid,
        "the bank holds the cap minus what it paid"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_killed_after_marking_loses_nothing() {
    crash_and_recover(CrashPoint::Marked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_killed_after_signing_resends_the_same_batch() {
    crash_and_recover(CrashPoint::Signed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_killed_after_sending_does_not_pay_twice() {
    crash_and_recover(CrashPoint::Sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_killed_after_the_receipt_records_it() {
    crash_and_recover(CrashPoint::Mined).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewards_wait_while_the_node_is_down_then_go_through() {
    let mut chain = TestChain::start().await;
    let app = TestApp::spawn_with(|s| chain.configure(s)).await;
    let (product, campaign) = product_and_campaign(&app, &chain, json!({})).await;
    campaign_allocated(&app, campaign).await;
    chain.stop_node();
    for i in 0..5 {
        purchase(&app, &product, user(200 + i), &format!("down-{i}")).await;
    }
    // The pusher keeps failing to reach the node; the rewards stay pending.
    eventually(WAIT, "a push error while the node is down", || async {
        app.metrics().await.contains("kind=\"rpc\"").then_some(())
    })
    .await;
    let pending = scalar_i64(
        &app,
        "SELECT count(*) FROM rewards WHERE status = 'pending'",
    )
    .await;
    assert_eq!(pending, 5);
    chain.restart_node();
    all_pushed(&app).await;
    assert_exactly_once(&app, &chain).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_starts_while_the_node_is_down_and_pushes_once_it_is_up() {
    let mut chain = TestChain::start().await;
    let database = fresh_database().await;
    // Set up by a process without a node (a bank cannot be registered while the
    // node it would be checked on is down).
    let offline = TestApp::start(test_settings(&database)).await.unwrap();
    let (product, campaign) = product_and_campaign(&offline, &chain, json!({})).await;
    offline.stop().await.unwrap();
    chain.stop_node();
    let app = TestApp::start(chain_settings(&chain, &database))
        .await
        .unwrap();
    let (status, body) = register_bank(&app, &chain, &product, user(9)).await;
    assert_eq!(status, 503, "{body}");
    for i in 0..3 {
        purchase(&app, &product, user(300 + i), &format!("early-{i}")).await;
    }
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    let pending = "SELECT count(*) FROM rewards WHERE status = 'pending'";
    assert_eq!(scalar_i64(&app, pending).await, 3);
    chain.restart_node();
    campaign_allocated(&app, campaign).await;
    all_pushed(&app).await;
    assert_exactly_once(&app, &chain).await;
    let five = U256::from(5u64) * U256::from(10u64).pow(U256::from(18));
    assert_eq!(chain.pending_on_chain(user(300)).await, five);
    let path = format!("/v1/wallets/{:#x}/rewards", user(302));
    eventually(WAIT, "the RewardAdded indexed", || async {
        let (_, body) = app.get(&path, None).await;
        (body["tokens"][0]["claimable"] == five.to_string().as_str()).then_some(())
    })
    .await;
    app.stop().await.unwrap();
}

/// A bank call that fails for another reason than a revert (here the manager key
/// has no ether for gas) is recorded on its campaign and retried later; it does not
/// stop the pusher from paying the campaigns already allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_manager_call_does_not_stop_the_other_campaigns_pushes() {
    use alloy::signers::local::PrivateKeySigner;
    use rewardflow::config::Secret;
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    let first = TestApp::start(chain_settings(&chain, &database))
        .await
        .unwrap();
    let (paying, allocated) = product_and_campaign(&first, &chain, json!({})).await;
    campaign_allocated(&first, allocated).await;
    first.stop().await.unwrap();

    // A manager without ether: it holds the role, it cannot pay for gas.
    let broke = PrivateKeySigner::random();
    let mut settings = chain_settings(&chain, &database);
    settings.chain.manager_key = Secret::new(alloy::hex::encode(broke.to_bytes()));
    let app = TestApp::start(settings).await.unwrap();
    let (other, other_bank) = product_with_bank(&app, &chain).await;
    // (A fresh provider: the service has sent from this key meanwhile.)
    let owner = wallet_provider(&chain.rpc_url(), DEPLOYER_KEY);
    let bank = ProductBank::new(other_bank, &owner);
    let role = bank.MANAGER_ROLE().call().await.unwrap();
    succeeded(bank.grantRole(role, broke.address()).send().await.unwrap()).await;
    let stuck = active_campaign(&app, &chain, &other, json!({})).await;
    eventually(WAIT, "the allocation failing", || async {
        let (_, body) = app
            .get(&format!("/v1/campaigns/{stuck}"), Some(&owner_token(&app)))
            .await;
        body["chain"]["error"].as_str().map(str::to_owned)
    })
    .await;
    purchase(&app, &paying, user(500), "while-stuck").await;
    pushed_of(&app, allocated, 1).await;
    app.stop().await.unwrap();
}

async fn register_bank(
    app: &TestApp,
    chain: &TestChain,
    product: &str,
    bank: alloy::primitives::Address,
) -> (u16, serde_json::Value) {
    let (status, body) = app
        .post(
            &format!("/v1/products/{product}/banks"),
            &json!({"chain_id": 31337, "bank_address": bank.to_string(),
                    "token": chain.token.to_string(), "symbol": "TST", "decimals": 18}),
            Some(&owner_token(app)),
        )
        .await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_pays_only_the_rewards_of_its_own_product() {
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    let app = TestApp::start(chain_settings(&chain, &database))
        .await
        .unwrap();
    let (own, campaign) = product_and_campaign(&app, &chain, json!({})).await;
    // Another product cannot register that bank, nor a contract or an account
    // that is not a bank.
    let other = crate::interactions::create_product(&app, "other.example").await;
    for (bank, why) in [
        (chain.bank, "is the bank of product"),
        (chain.token, "is not a ProductBank"),
        (user(1), "no contract at"),
    ] {
        let (status, body) = register_bank(&app, &chain, &other, bank).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["errors"][0]["field"], "bank_address", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
    }
    app.stop().await.unwrap();

    // Registered while no node was configured: accepted then, refused by the
    // pusher once there is one.
    let offline = TestApp::start(test_settings(&database)).await.unwrap();
    let (status, body) = register_bank(&offline, &chain, &other, chain.bank).await;
    assert_eq!(status, 201, "{body}");
    let foreign = active_campaign(&offline, &chain, &other, json!({})).await;
    purchase(&offline, &other, user(2), "foreign").await;
    offline.stop().await.unwrap();
    let app = TestApp::start(chain_settings(&chain, &database))
        .await
        .unwrap();
    let (error, external) = eventually(WAIT, "the foreign allocation refused", || async {
        let (_, body) = app
            .get(
                &format!("/v1/campaigns/{foreign}"),
                Some(&owner_token(&app)),
            )
            .await;
        let external: uuid::Uuid = body["external_id"].as_str()?.parse().ok()?;
        Some((body["chain"]["error"].as_str()?.to_owned(), external))
    })
    .await;
    assert!(error.contains("is the bank of product"), "{error}");
    // The bank's own product is still paid; the other one's reward waits.
    purchase(&app, &own, user(3), "own").await;
    pushed_of(&app, campaign, 1).await;
    let waiting = format!(
        "SELECT count(*) FROM rewards WHERE campaign_id = {foreign} AND status = 'pending'"
    );
    assert_eq!(scalar_i64(&app, &waiting).await, 1);
    assert_eq!(chain.pending_on_chain(user(2)).await, U256::ZERO);
    let bank = ProductBank::new(chain.bank, &chain.provider);
    let foreign_onchain = onchain_campaign_id(external);
    assert!(!bank.isCampaignActive(foreign_onchain).call().await.unwrap());
    app.stop().await.unwrap();
}

/// The campaign's bytes32 on its bank.
async fn onchain_id(app: &TestApp, campaign: i64) -> alloy::primitives::B256 {
    let (_, view) = app
        .get(
            &format!("/v1/campaigns/{campaign}"),
            Some(&owner_token(app)),
        )
        .await;
    onchain_campaign_id(view["external_id"].as_str().unwrap().parse().unwrap())
}

async fn chain_state(app: &TestApp, campaign: i64) -> String {
    let (_, body) = app
        .get(
            &format!("/v1/campaigns/{campaign}"),
            Some(&owner_token(app)),
        )
        .await;
    body["chain"]["state"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_deactivated_before_its_allocation_is_paid_then_released() {
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    let app = TestApp::start(chain_settings(&chain, &database))
        .await
        .unwrap();
    let unit = U256::from(10u64).pow(U256::from(18));
    let cap = json!((U256::from(100u64) * unit).to_string());
    let (product, paid) = product_and_campaign(&app, &chain, json!({"budget_cap": cap})).await;
    let idle = active_campaign(
        &app,
        &chain,
        &product,
        json!({"trigger": "webshop.open", "budget_cap": cap}),
    )
    .await;
    campaign_allocated(&app, paid).await;
    campaign_allocated(&app, idle).await;
    let onchain = [onchain_id(&app, paid).await, onchain_id(&app, idle).await];
    app.stop().await.unwrap();

    // Without a node: a purchase, then a new cap for both campaigns (to be
    // allocated again) and their deactivation before that allocation is made.
    let offline = TestApp::start(test_settings(&database)).await.unwrap();
    purchase(&offline, &product, user(41), "before-deactivation").await;
    let owner = owner_token(&offline);
    for id in [paid, idle] {
        let doubled = json!({"budget_cap": (U256::from(200u64) * unit).to_string()});
        let path = format!("/v1/campaigns/{id}");
        let (status, body) = offline.patch_json(&path, &doubled, &owner).await;
        assert_eq!(status, 200, "{body}");
        let path = format!("/v1/campaigns/{id}/deactivate");
        let (status, body) = offline.post(&path, &Value::Null, Some(&owner)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(chain_state(&offline, id).await, "allocate");
    }
    offline.stop().await.unwrap();

    // The purchase's rewards are pushed, then both campaigns are released.
    let app = TestApp::start(chain_settings(&chain, &database))
        .await
        .unwrap();
    all_pushed(&app).await;
    for id in [paid, idle] {
        eventually(WAIT, "the campaign released on its bank", || async {
            (chain_state(&app, id).await == "deactivated").then_some(())
        })
        .await;
    }
    assert_eq!(
        chain.pending_on_chain(user(41)).await,
        U256::from(5u64) * unit
    );
    let bank = ProductBank::new(chain.bank, &chain.provider);
    for campaign in onchain {
        assert!(!bank.isCampaignActive(campaign).call().await.unwrap());
    }
    let allocated = bank.getAllocatedBalance(chain.token).call().await.unwrap();
    assert_eq!(allocated, U256::ZERO);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_is_released_on_its_bank_only_after_its_last_reward_is_pushed() {
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    // No pusher in the service: the test runs the pusher's bank calls itself.
    let app = TestApp::start(test_settings(&database)).await.unwrap();
    let (product, campaign) = product_and_campaign(&app, &chain, json!({})).await;
    let steps = manual_pusher(&app, &chain, &chain_settings(&chain, &database), 10).await;
    steps.sync_campaigns().await.unwrap();
    assert_eq!(chain_state(&app, campaign).await, "allocated");
    // Warm the product's actor and its referral edges (both read the table held
    // below); a referral earns nothing, so nothing of the campaign is left to push.
    refer(&app, &product, user(80), user(79)).await;

    // A purchase's reward is on its way to the database when the campaign is
    // deactivated, and the pusher looks at its campaigns meanwhile.
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let buying = purchase(&app, &product, user(81), "in-flight");
    let deactivating = async {
        crate::interactions::wait_for_blocked_insert(&app).await;
        let owner = owner_token(&app);
        let path = format!("/v1/campaigns/{campaign}/deactivate");
        let deactivated = app.post(&path, &Value::Null, Some(&owner));
        let meanwhile = async {
            // Once the deactivation is decided (in the database, or waiting for the
            // writes before it), the pusher looks: the bank must not be told while
            // the reward is not stored.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1")
                        .bind(campaign)
                        .fetch_one(&app.ctx.pool)
                        .await
                        .unwrap();
                if status == "deactivated" || app.ctx.ingest.gate.settles_waiting() > 0 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "never decided");
                tokio::task::yield_now().await;
            }
            steps.sync_campaigns().await.unwrap();
            blocker.commit().await.unwrap();
        };
        let ((status, body), ()) = tokio::join!(deactivated, meanwhile);
        assert_eq!(status, 200, "{body}");
    };
    tokio::join!(buying, deactivating);

    // A pusher with the chain: both rewards pushed, then the campaign released.
    app.stop().await.unwrap();
    let app = TestApp::start(chain_settings(&chain, &database))
        .await
        .unwrap();
    all_pushed(&app).await;
    eventually(WAIT, "the campaign released on its bank", || async {
        (chain_state(&app, campaign).await == "deactivated").then_some(())
    })
    .await;
    let five = U256::from(5u64) * U256::from(10u64).pow(U256::from(18));
    assert_eq!(chain.pending_on_chain(user(81)).await, five);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_batch_is_not_expired_by_a_node_whose_state_lags() {
    use crate::rpc_proxy::{Lag, RpcProxy};
    use alloy::providers::Provider;
    let chain = TestChain::start().await;
    let proxy = RpcProxy::start(chain.rpc_url()).await;
    let database = fresh_database().await;
    // No pusher in the service: the test plays its steps, through the proxy.
    let app = TestApp::start(test_settings(&database)).await.unwrap();
    let (product, _) = product_and_campaign(&app, &chain, json!({})).await;
    purchase(&app, &product, user(60), "paid-once").await;
    let mut settings = chain_settings(&chain, &database);
    settings.chain.rpc_url = proxy.url.clone();
    let steps = manual_pusher(&app, &chain, &settings, 10).await;
    steps.sync_campaigns().await.unwrap();
    let work = steps.work().await.unwrap();
    let batch = steps.prepare(&work[0]).await.unwrap().expect("a batch");
    let payload = steps.payload(&batch).await.unwrap();
    let signature = steps.sign(&batch, &payload).await.unwrap();
    let before = chain.provider.get_block_number().await.unwrap();
    let tx = steps.send(&batch, &payload, signature).await.unwrap();
    ledger::mark_sent(&app.ctx.pool, batch.id, tx)
        .await
        .unwrap();
    let paid = chain.provider.get_transaction_receipt(tx).await.unwrap();
    assert!(paid.expect("mined at once").status());

    // Behind the same URL, state and receipts now come from a node that has not
    // seen the payment; blocks from one that is up to date, past the deadline.
    proxy.lag(Some(Lag {
        head: before,
        blocks: false,
    }));
    let node = rewardflow::chain::Chain::new(&chain_settings(&chain, &database).chain).unwrap();
    let late = batch.deadline.timestamp() as u64 + settings.chain.deadline_margin_secs + 60;
    anvil_rpc(&node, "evm_setNextBlockTimestamp", json!([late])).await;
    anvil_rpc(&node, "anvil_mine", json!([1])).await;
    let sent = unfinished(&app, &steps, batch.id).await.expect("sent");
    let progress = steps.advance(&sent).await;
    assert!(
        !matches!(progress, Ok(Progress::Abandoned { .. })),
        "{progress:?}"
    );
    let still = unfinished(&app, &steps, batch.id)
        .await
        .expect("unfinished");
    assert_eq!(still.status, "sent");

    proxy.lag(None);
    let progress = steps.advance(&still).await.unwrap();
    assert!(
        matches!(progress, Progress::Confirmed { .. }),
        "{progress:?}"
    );
    assert_exactly_once(&app, &chain).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverting_push_returns_rewards_to_pending_until_the_budget_is_fixed() {
    let chain = TestChain::start().await;
    let app = TestApp::spawn_with(|s| chain.configure(s)).await;
    let cap = "100000000000000000000"; // 100 units
    let (product, campaign) = product_and_campaign(&app, &chain, json!({"budget_cap": cap})).await;
    campaign_allocated(&app, campaign).await;
    // Someone with the manager role shrinks the on-chain budget to 1 wei.
    let (_, view) = app
        .get(
            &format!("/v1/campaigns/{campaign}"),
            Some(&owner_token(&app)),
        )
        .await;
    let external: uuid::Uuid = view["external_id"].as_str().unwrap().parse().unwrap();
    // (A fresh provider: the service has sent from this key meanwhile.)
    let manager = wallet_provider(&chain.rpc_url(), DEPLOYER_KEY);
    let bank = ProductBank::new(chain.bank, &manager);
    let shrink =
        bank.allocateCampaignBudget(onchain_campaign_id(external), chain.token, U256::from(1u64));
    succeeded(shrink.send().await.unwrap()).await;

    purchase(&app, &product, user(300), "r-1").await;
    let error: String = eventually(WAIT, "a failed batch", || async {
        sqlx::query_scalar::<_, String>(
            "SELECT error FROM reward_batches WHERE status = 'failed' LIMIT 1",
        )
        .fetch_optional(&app.ctx.pool)
        .await
        .unwrap()
    })
    .await;
    assert!(error.contains("InsufficientBudget"), "{error}");
    let reason: String = eventually(WAIT, "the reward back to pending", || async {
        sqlx::query_scalar::<_, String>(
            "SELECT status_reason FROM rewards WHERE status = 'pending' AND status_reason IS NOT NULL LIMIT 1",
        )
        .fetch_optional(&app.ctx.pool)
        .await
        .unwrap()
    })
    .await;
    assert!(
        reason.contains("failed") && reason.contains("InsufficientBudget"),
        "{reason}"
    );
    assert!(app.metrics().await.contains("outcome=\"failed\""));

    // Raising the cap re-allocates what is left on the bank; the reward goes through.
    let (status, body) = app
        .patch_json(
            &format!("/v1/campaigns/{campaign}"),
            &json!({"budget_cap": "200000000000000000000"}),
            &owner_token(&app),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    all_pushed(&app).await;
    assert_exactly_once(&app, &chain).await;
    let on_chain_budget = bank
        .getCampaignBudget(onchain_campaign_id(external), chain.token)
        .call()
        .await
        .unwrap();
    assert_eq!(
        on_chain_budget,
        U256::from(200u64) * U256::from(10u64).pow(U256::from(18))
            - U256::from(5u64) * U256::from(10u64).pow(U256::from(18)),
        "the bank holds the cap minus what was pushed"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_after_the_push_keeps_what_was_pushed() {
    use crate::webhooks::{configure, custom_order, deliver_signed};
    use rewardflow::domain::webhook::Platform;
    let chain = TestChain::start().await;
    let app = TestApp::spawn_with(|s| chain.configure(s)).await;
    let (product, campaign) = product_and_campaign(&app, &chain, json!({})).await;
    campaign_allocated(&app, campaign).await;
    let secret = configure(&app, &product, json!({"platform": "custom"})).await;
    let buyer = user(50);

    let (status, paid) = deliver_signed(
        &app,
        &product,
        Platform::Custom,
        &secret,
        None,
        &custom_order("X-1", "paid", Some(buyer)),
    )
    .await;
    assert_eq!(status, 200, "{paid}");
    all_pushed(&app).await;
    let (status, refund) = deliver_signed(
        &app,
        &product,
        Platform::Custom,
        &secret,
        None,
        &custom_order("X-1", "refunded", Some(buyer)),
    )
    .await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["refund"]["cancelled_rewards"], 0, "{refund}");
    assert_eq!(refund["refund"]["kept_rewards"], 1, "{refund}");
    assert_eq!(
        scalar_i64(&app, "SELECT count(*) FROM rewards WHERE status = 'pushed'").await,
        1
    );
    let recorded = scalar_i64(
        &app,
        "SELECT count(*) FROM interactions WHERE type = 'purchase.refunded'
         AND (data->'refund'->>'kept_rewards')::int = 1",
    )
    .await;
    assert_eq!(recorded, 1, "the refund records what it could not cancel");
    let (_, body) = app
        .get(
            &format!("/v1/campaigns/{campaign}"),
            Some(&owner_token(&app)),
        )
        .await;
    assert_eq!(body["used_budget"], "5000000000000000000");
    assert_eq!(
        chain.pending_on_chain(buyer).await,
        U256::from(5_000_000_000_000_000_000u128)
    );
    assert_exactly_once(&app, &chain).await;
}

/// A refund that comes while the order's reward is in a batch has to keep it. When
/// that batch is then abandoned (here: its deadline passed unused), the reward is
/// cancelled rather than put back to pending and pushed later, its budget and the
/// buyer's counter come back, and the refund's record says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refunded_reward_whose_batch_is_abandoned_is_cancelled_not_pushed() {
    use crate::webhooks::{configure, custom_order, deliver_signed};
    use rewardflow::domain::webhook::Platform;
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    let with_chain = || chain_settings(&chain, &database);
    // No pusher in this process: the test plays its steps.
    let first = TestApp::start(test_settings(&database)).await.unwrap();
    let extra = json!({"budget_cap": "100000000000000000000", "max_rewards_per_user": 1});
    let (product, campaign) = product_and_campaign(&first, &chain, extra).await;
    let secret = configure(&first, &product, json!({"platform": "custom"})).await;
    let buyer = user(60);
    let deliver = |status: &'static str| {
        let order = custom_order("X-2", status, Some(buyer));
        let (app, product, secret) = (&first, &product, &secret);
        async move { deliver_signed(app, product, Platform::Custom, secret, None, &order).await }
    };
    let (status, paid) = deliver("paid").await;
    assert_eq!(status, 200, "{paid}");

    let steps = manual_pusher(&first, &chain, &with_chain(), 10).await;
    steps.sync_campaigns().await.unwrap();
    let work = steps.work().await.unwrap();
    let batch = steps.prepare(&work[0]).await.unwrap().expect("a batch");
    let (status, refund) = deliver("refunded").await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["refund"]["kept_rewards"], 1, "{refund}");
    assert_eq!(refund["refund"]["cancelled_rewards"], 0, "{refund}");

    let returned = ledger::abandon(
        &first.ctx.pool,
        batch.id,
        "expired",
        "deadline passed unused",
    )
    .await
    .unwrap();
    assert_eq!(
        returned, 0,
        "nothing of the refunded order goes back to pending"
    );
    let (status, reason): (String, String) =
        sqlx::query_as("SELECT status, cancel_reason FROM rewards")
            .fetch_one(&first.ctx.pool)
            .await
            .unwrap();
    assert_eq!(status, "cancelled");
    assert!(reason.contains("order refunded"), "{reason}");
    let (_, view) = first
        .get(
            &format!("/v1/campaigns/{campaign}"),
            Some(&owner_token(&first)),
        )
        .await;
    assert_eq!(view["used_budget"], "0", "{view}");
    assert_eq!(
        scalar_i64(
            &first,
            "SELECT coalesce(sum(reward_count), 0) FROM campaign_user_rewards",
        )
        .await,
        0,
        "the buyer's counter came back"
    );
    let recorded = scalar_i64(
        &first,
        "SELECT count(*) FROM interactions WHERE type = 'purchase.refunded'
         AND (data->'refund'->>'cancelled_rewards')::int = 1
         AND (data->'refund'->>'kept_rewards')::int = 0",
    )
    .await;
    assert_eq!(recorded, 1, "the refund's record follows");
    first.stop().await.unwrap();

    // A service with a pusher has nothing to pay the buyer.
    let second = TestApp::start(with_chain()).await.unwrap();
    all_pushed(&second).await;
    assert_eq!(chain.pending_on_chain(buyer).await, U256::ZERO);
    assert_eq!(
        scalar_i64(
            &second,
            "SELECT count(*) FROM rewards WHERE status = 'pushed'"
        )
        .await,
        0
    );
    second.stop().await.unwrap();
}

/// A batch mined and indexed before the pusher confirms it (here the pusher waits
/// on a lock the test holds on the batch) is claimable, and no longer pending: the
/// wallet's balance never counts it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_batch_is_claimable_and_not_pending_before_it_is_confirmed() {
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    let with_chain = || chain_settings(&chain, &database);
    let first = TestApp::start(test_settings(&database)).await.unwrap();
    let (product, _) = product_and_campaign(&first, &chain, json!({})).await;
    let buyer = user(70);
    purchase(&first, &product, buyer, "idx-1").await;
    let steps = manual_pusher(&first, &chain, &with_chain(), 10).await;
    steps.sync_campaigns().await.unwrap();
    let work = steps.work().await.unwrap();
    let batch = steps.prepare(&work[0]).await.unwrap().expect("a batch");
    let payload = steps.payload(&batch).await.unwrap();
    let signature = steps.sign(&batch, &payload).await.unwrap();
    let tx = steps.send(&batch, &payload, signature).await.unwrap();
    ledger::mark_sent(&first.ctx.pool, batch.id, tx)
        .await
        .unwrap();
    let receipt = eventually(WAIT, "the receipt", || async {
        steps.chain.receipt(tx).await.unwrap()
    })
    .await;
    assert!(receipt.status());
    first.stop().await.unwrap();

    // The pusher of the next process cannot confirm while the test holds the batch.
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let mut held = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM reward_batches WHERE id = $1 FOR UPDATE")
        .bind(batch.id)
        .execute(&mut *held)
        .await
        .unwrap();
    let second = TestApp::start(with_chain()).await.unwrap();
    let path = format!("/v1/wallets/{buyer:#x}/rewards");
    let five = "5000000000000000000";
    let balance = eventually(WAIT, "the reward indexed", || async {
        let (_, body) = second.get(&path, None).await;
        (body["tokens"][0]["claimable"] == five).then_some(body)
    })
    .await;
    assert_eq!(balance["tokens"][0]["pending"], "0", "{balance}");
    assert_eq!(
        scalar_i64(
            &second,
            "SELECT count(*) FROM rewards WHERE status = 'pushing'"
        )
        .await,
        1,
        "not confirmed yet"
    );
    held.rollback().await.unwrap();
    all_pushed(&second).await;
    assert_exactly_once(&second, &chain).await;
    second.stop().await.unwrap();
}

/// A batch confirmed before the indexer has seen its transaction (here the indexer
/// waits on a lock the test holds on its table) is still pending for the wallet:
/// its balance never shows the reward nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_batch_is_pending_until_the_indexer_sees_it() {
    let chain = TestChain::start().await;
    let app = TestApp::spawn_with(|s| chain.configure(s)).await;
    let (product, campaign) = product_and_campaign(&app, &chain, json!({})).await;
    campaign_allocated(&app, campaign).await;
    let mut held = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE chain_events IN EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    let buyer = user(80);
    purchase(&app, &product, buyer, "idx-2").await;
    eventually(WAIT, "the reward pushed", || async {
        let pushed = scalar_i64(&app, "SELECT count(*) FROM rewards WHERE status = 'pushed'").await;
        (pushed == 1).then_some(())
    })
    .await;
    let path = format!("/v1/wallets/{buyer:#x}/rewards");
    let five = "5000000000000000000";
    let (_, balance) = app.get(&path, None).await;
    assert_eq!(balance["tokens"][0]["pending"], five, "{balance}");
    assert_eq!(balance["tokens"][0]["claimable"], "0", "{balance}");

    held.rollback().await.unwrap();
    let balance = eventually(WAIT, "the reward indexed", || async {
        let (_, body) = app.get(&path, None).await;
        (body["tokens"][0]["claimable"] == five).then_some(body)
    })
    .await;
    assert_eq!(balance["tokens"][0]["pending"], "0", "{balance}");
    app.stop().await.unwrap();
}

/// A transaction the node dropped from its pool leaves a gap in the account's
/// nonces: every later one would wait behind it for ever. Re-sending the batch after
/// `resync_nonce` takes the missing nonce, and the batch is paid.
#[tokio::test]
async fn a_dropped_transaction_does_not_stall_the_account() {
    use alloy::primitives::{Address, B256};
    use rewardflow::chain::{Chain, Sender};
    use rewardflow::domain::push::{self, PushRewards, Reward};

    let chain = TestChain::start().await;
    let mut settings = Settings::default();
    chain.configure(&mut settings);
    let sender = Sender::new(&settings.chain, DEPLOYER_KEY).unwrap();
    let node = Chain::new(&settings.chain).unwrap();
    let campaign = B256::repeat_byte(0x42);
    let budget = U256::from(10u64).pow(U256::from(20u64));
    sender
        .allocate_campaign_budget(chain.bank, campaign, chain.token, budget)
        .await
        .unwrap();
    let batch = PushRewards {
        campaignId: campaign,
        token: chain.token,
        rewards: vec![Reward {
            user: Address::repeat_byte(0x55),
            amount: U256::from(10u64).pow(U256::from(18u64)),
        }],
        nonce: B256::repeat_byte(0x99),
        deadline: U256::from(u32::MAX),
    };
    let digest = push::signing_hash(
        &push::bank_domain(node.chain_id().await.unwrap(), chain.bank),
        &batch,
    );
    let signature = sender.sign_digest(digest).unwrap();

    // Sent while nothing is mined, then dropped by the node.
    anvil_rpc(&node, "evm_setAutomine", json!([false])).await;
    let dropped = sender
        .push_rewards(chain.bank, &batch, signature.clone())
        .await
        .unwrap();
    anvil_rpc(&node, "anvil_dropTransaction", json!([dropped])).await;
    anvil_rpc(&node, "evm_setAutomine", json!([true])).await;
    assert!(sender.resync_nonce().await.unwrap(), "the gap is seen");
    assert!(!sender.resync_nonce().await.unwrap(), "and closed once");

    let resent = sender
        .push_rewards(chain.bank, &batch, signature)
        .await
        .unwrap();
    let receipt = eventually(WAIT, "the re-sent batch mined", || async {
        node.receipt(resent).await.unwrap()
    })
    .await;
    assert!(receipt.status());
    let head = node.head().await.unwrap();
    assert!(
        node.is_nonce_used_at(chain.bank, batch.nonce, head)
            .await
            .unwrap()
    );
    assert_eq!(
        chain.pending_on_chain(Address::repeat_byte(0x55)).await,
        U256::from(10u64).pow(U256::from(18u64))
    );
}

/// The batch `id` as a pusher reads it, while it is unfinished.
/// A bank call the node dropped is given up after `chain.receipt_timeout_secs`
/// instead of being waited for for ever (holding the key's nonce lock), and the next
/// call takes the nonce it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_bank_call_is_given_up_and_made_again() {
    use alloy::primitives::B256;
    use alloy::providers::Provider;
    use rewardflow::chain::{Chain, Sender};

    let chain = TestChain::start().await;
    let mut settings = Settings::default();
    chain.configure(&mut settings);
    settings.chain.receipt_timeout_secs = 1;
    let sender = Arc::new(Sender::new(&settings.chain, DEPLOYER_KEY).unwrap());
    let node = Chain::new(&settings.chain).unwrap();
    let held = || {
        node.provider
            .get_transaction_count(sender.address)
            .pending()
    };
    let before = held().await.unwrap();
    let (campaign, budget) = (
        B256::repeat_byte(0x43),
        U256::from(10u64).pow(U256::from(20u64)),
    );

    anvil_rpc(&node, "evm_setAutomine", json!([false])).await;
    let call = {
        let sender = sender.clone();
        let bank = chain.bank;
        let token = chain.token;
        tokio::spawn(async move {
            sender
                .allocate_campaign_budget(bank, campaign, token, budget)
                .await
        })
    };
    eventually(WAIT, "the call in the node's pool", || async {
        (held().await.unwrap() == before + 1).then_some(())
    })
    .await;
    anvil_rpc(&node, "anvil_dropAllTransactions", json!([])).await;
    anvil_rpc(&node, "evm_setAutomine", json!([true])).await;
    let given_up = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call gives up")
        .unwrap();
    assert!(given_up.is_err(), "{given_up:?}");

    sender
        .allocate_campaign_budget(chain.bank, campaign, chain.token, budget)
        .await
        .expect("made again with the nonce left");
    let left = ProductBank::new(chain.bank, &chain.provider)
        .getCampaignBudget(campaign, chain.token)
        .call()
        .await
        .unwrap();
    assert_eq!(left, budget);
}

async fn unfinished(app: &TestApp, steps: &Pushing, id: uuid::Uuid) -> Option<ledger::BatchRow> {
    ledger::unfinished(
        &app.ctx.pool,
        steps.chain.chain_id().await.unwrap(),
        steps.token,
    )
    .await
    .unwrap()
    .into_iter()
    .find(|b| b.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_node_dropped_is_sent_again_without_waiting() {
    let chain = TestChain::start().await;
    let database = fresh_database().await;
    // No pusher in the service: the test plays its steps.
    let app = TestApp::start(test_settings(&database)).await.unwrap();
    let (product, _campaign) = product_and_campaign(&app, &chain, json!({})).await;
    purchase(&app, &product, user(300), "dropped-1").await;
    let mut settings = test_settings(&database);
    chain.configure(&mut settings);
    let steps = manual_pusher(&app, &chain, &settings, 100).await;
    steps.sync_campaigns().await.unwrap();
    let work = steps.work().await.unwrap();
    let batch = steps.prepare(&work[0]).await.unwrap().expect("a batch");
    let payload = steps.payload(&batch).await.unwrap();
    let signature = steps.sign(&batch, &payload).await.unwrap();
    anvil_rpc(&steps.chain, "evm_setAutomine", json!([false])).await;
    let first = steps.send(&batch, &payload, signature).await.unwrap();
    ledger::mark_sent(&app.ctx.pool, batch.id, first)
        .await
        .unwrap();
    // The batch as the pusher reads it, sent a few seconds ago: past the time a
    // fresh transaction takes to reach the node, well within the 30 s after which
    // any silent batch is sent again.
    let sent_a_while_ago = || async {
        sqlx::query(
            "UPDATE reward_batches SET sent_at = now() - interval '5 seconds' WHERE id = $1",
        )
        .bind(batch.id)
        .execute(&app.ctx.pool)
        .await
        .unwrap();
        unfinished(&app, &steps, batch.id)
            .await
            .expect("the batch is unfinished")
    };

    // Waiting in the node's pool: left alone.
    let row = sent_a_while_ago().await;
    assert!(matches!(
        steps.advance(&row).await.unwrap(),
        Progress::InFlight
    ));
    assert_eq!(sent_a_while_ago().await.tx_hash(), Some(first));

    // Dropped by the node: sent again at the first look, and paid once.
    anvil_rpc(&steps.chain, "anvil_dropTransaction", json!([first])).await;
    anvil_rpc(&steps.chain, "evm_setAutomine", json!([true])).await;
    let row = sent_a_while_ago().await;
    assert!(matches!(
        steps.advance(&row).await.unwrap(),
        Progress::InFlight
    ));
    // (The same transaction again here: same nonce, payload and fees.)
    let resent = sent_a_while_ago().await.tx_hash().expect("a transaction");
    assert!(
        steps.chain.knows_transaction(resent).await.unwrap(),
        "the batch is back in the node's hands"
    );
    eventually(Duration::from_secs(10), "the batch confirmed", || async {
        let row = unfinished(&app, &steps, batch.id).await?;
        matches!(
            steps.advance(&row).await.unwrap(),
            Progress::Confirmed { .. }
        )
        .then_some(())
    })
    .await;
    assert_exactly_once(&app, &chain).await;
    app.stop().await.unwrap();
}
