//! The indexer against a real anvil: a reorganisation (`evm_snapshot` /
//! `evm_revert`) that undoes a claim is undone in PostgreSQL too; a node that
//! lags behind what was indexed is waited for, not taken for a reorganisation;
//! one during a poll leaves nothing of the old branch behind; a node that refuses
//! long log ranges is asked for shorter ones; the wallet history pages through
//! the rewards and the indexed claims.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use rewardflow::chain::contracts::MultiTokenPushPull;
use serde_json::json;

use crate::chain_fixture::*;
use crate::common::TestApp;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_that_undoes_a_claim_is_rolled_back() {
    let chain = TestChain::start().await;
    let app = TestApp::spawn_with(|s| chain.configure(s)).await;
    let (product, _) = product_and_campaign(&app, &chain, json!({})).await;
    let claimer: alloy::signers::local::PrivateKeySigner = CLAIMER_KEY.parse().unwrap();
    purchase(&app, &product, claimer.address(), "reorg-1").await;
    let five = (U256::from(5u64) * U256::from(10u64).pow(U256::from(18))).to_string();
    let path = format!("/v1/wallets/{:#x}/rewards", claimer.address());
    let balance = |claimable: &'static str, claimed: &'static str| {
        let (app, path, five) = (&app, &path, &five);
        async move {
            let (_, body) = app.get(path, None).await;
            let pick = |v: &str| {
                if v == "five" {
                    five.clone()
                } else {
                    v.to_owned()
                }
            };
            (body["tokens"][0]["claimable"] == pick(claimable).as_str()
                && body["tokens"][0]["claimed"] == pick(claimed).as_str())
            .then_some(())
        }
    };
    eventually(WAIT, "the reward claimable", || balance("five", "0")).await;

    let snapshot: U256 = chain
        .provider
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap();
    let user = wallet_provider(&chain.rpc_url(), CLAIMER_KEY);
    let push_pull = MultiTokenPushPull::new(chain.push_pull, &user);
    succeeded(push_pull.pullReward(chain.token).send().await.unwrap()).await;
    eventually(WAIT, "the claim indexed", || balance("0", "five")).await;

    // The claim's block disappears; the chain grows past it on another branch.
    let reverted: bool = chain
        .provider
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted);
    let _: serde_json::Value = chain
        .provider
        .raw_request("anvil_mine".into(), (U256::from(3u64),))
        .await
        .unwrap();
    eventually(WAIT, "the claim rolled back", || balance("five", "0")).await;
    let (_, history) = app
        .get(
            &format!("/v1/wallets/{:#x}/history", claimer.address()),
            None,
        )
        .await;
    assert_eq!(history["claims"], json!([]), "{history}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_is_waited_for_not_taken_for_a_reorg() {
    use crate::rpc_proxy::{Lag, RpcProxy};
    let chain = TestChain::start().await;
    let proxy = RpcProxy::start(chain.rpc_url()).await;
    let app = TestApp::spawn_with(|s| {
        chain.configure(s);
        s.chain.rpc_url = proxy.url.clone();
    })
    .await;
    let (product, _) = product_and_campaign(&app, &chain, json!({})).await;
    let claimer: alloy::signers::local::PrivateKeySigner = CLAIMER_KEY.parse().unwrap();
    purchase(&app, &product, claimer.address(), "lag-1").await;
    let five = (U256::from(5u64) * U256::from(10u64).pow(U256::from(18))).to_string();
    let path = format!("/v1/wallets/{:#x}/rewards", claimer.address());
    let claimable = |amount: String| {
        let (app, path) = (&app, &path);
        async move {
            let (_, body) = app.get(path, None).await;
            (body["tokens"][0]["claimable"] == amount.as_str()).then_some(())
        }
    };
    eventually(WAIT, "the reward claimable", || claimable(five.clone())).await;
    let added = scalar_i64(&app, "SELECT max(block_number) FROM chain_events").await;
    let events = "SELECT count(*) FROM chain_events";
    let indexed = scalar_i64(&app, events).await;

    // The endpoint fails over to a node that has not seen the reward's block.
    proxy.lag(Some(Lag {
        head: added as u64 - 1,
        blocks: true,
    }));
    let before = proxy.lagged_answers();
    eventually(WAIT, "the indexer polling the lagging node", || async {
        (proxy.lagged_answers() > before + 50).then_some(())
    })
    .await;
    claimable(five.clone()).await.expect("still claimable");
    // Nothing rolled back (the reorg counter is the process's, shared by tests).
    assert_eq!(scalar_i64(&app, events).await, indexed);

    // Back on a node that is up to date: a claim is indexed.
    proxy.lag(None);
    let user = wallet_provider(&chain.rpc_url(), CLAIMER_KEY);
    let push_pull = MultiTokenPushPull::new(chain.push_pull, &user);
    succeeded(push_pull.pullReward(chain.token).send().await.unwrap()).await;
    eventually(WAIT, "the claim indexed", || claimable("0".into())).await;
    app.stop().await.unwrap();
}

/// anvil's third development account: another user who claims.
const OTHER_CLAIMER_KEY: &str =
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_during_a_poll_leaves_nothing_of_the_old_branch() {
    let chain = TestChain::start().await;
    let app = TestApp::spawn_with(|s| {
        chain.configure(s);
        s.chain.indexer_max_block_range = 1;
    })
    .await;
    let (product, _) = product_and_campaign(&app, &chain, json!({})).await;
    let signer = |key: &str| {
        key.parse::<alloy::signers::local::PrivateKeySigner>()
            .unwrap()
    };
    let (first, second) = (signer(CLAIMER_KEY), signer(OTHER_CLAIMER_KEY));
    purchase(&app, &product, first.address(), "during-1").await;
    purchase(&app, &product, second.address(), "during-2").await;
    let five = (U256::from(5u64) * U256::from(10u64).pow(U256::from(18))).to_string();
    let balance = |who: alloy::primitives::Address, claimable: String, claimed: String| {
        let app = &app;
        async move {
            let (_, body) = app
                .get(&format!("/v1/wallets/{who:#x}/rewards"), None)
                .await;
            (body["tokens"][0]["claimable"] == claimable.as_str()
                && body["tokens"][0]["claimed"] == claimed.as_str())
            .then_some(())
        }
    };
    for who in [first.address(), second.address()] {
        eventually(WAIT, "the rewards claimable", || {
            balance(who, five.clone(), "0".into())
        })
        .await;
    }
    let head = chain.provider.get_block_number().await.unwrap() as i64;
    eventually(WAIT, "the indexer at the head", || async {
        let at = scalar_i64(&app, "SELECT max(block_number) FROM indexer_cursor").await;
        (at == head).then_some(())
    })
    .await;
    let snapshot: U256 = chain
        .provider
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap();

    let anvil = |method: &'static str, params: serde_json::Value| {
        let chain = &chain;
        async move {
            let _: serde_json::Value = chain
                .provider
                .raw_request(method.into(), params)
                .await
                .unwrap();
        }
    };
    let claim = |key: &'static str| {
        let chain = &chain;
        async move {
            let user = wallet_provider(&chain.rpc_url(), key);
            let push_pull = MultiTokenPushPull::new(chain.push_pull, &user);
            push_pull.pullReward(chain.token).send().await.unwrap()
        }
    };

    // The first claim and a block on top appear together, so one poll reads two
    // ranges; the first range's write waits while the chain reorganises.
    let mut blocker = app.ctx.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE chain_events IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    anvil("evm_setAutomine", json!([false])).await;
    let first_claim = claim(CLAIMER_KEY).await;
    anvil("anvil_mine", json!([2])).await;
    succeeded(first_claim).await;
    crate::interactions::wait_for_blocked_insert_into(&app, "chain_events").await;
    anvil("evm_revert", json!([snapshot])).await;
    anvil("evm_setAutomine", json!([true])).await;
    // The new branch: an empty block, then the other claim in the second range.
    anvil("anvil_mine", json!([1])).await;
    succeeded(claim(OTHER_CLAIMER_KEY).await).await;
    blocker.commit().await.unwrap();

    // Only the new branch's claim stays.
    eventually(WAIT, "the other claim indexed", || {
        balance(second.address(), "0".into(), five.clone())
    })
    .await;
    eventually(WAIT, "the first claim rolled back", || {
        balance(first.address(), five.clone(), "0".into())
    })
    .await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_ranges_the_node_refuses_are_asked_for_in_parts() {
    use crate::rpc_proxy::RpcProxy;
    let chain = TestChain::start().await;
    let proxy = RpcProxy::start(chain.rpc_url()).await;
    proxy.refuse_log_ranges_over(Some(3));
    let app = TestApp::spawn_with(|s| {
        chain.configure(s);
        s.chain.rpc_url = proxy.url.clone();
        s.chain.indexer_max_block_range = 1000;
    })
    .await;
    let (product, _) = product_and_campaign(&app, &chain, json!({})).await;
    let user = user(70);
    purchase(&app, &product, user, "ranges-1").await;
    let five = (U256::from(5u64) * U256::from(10u64).pow(U256::from(18))).to_string();
    let path = format!("/v1/wallets/{user:#x}/rewards");
    eventually(WAIT, "the reward indexed", || async {
        let (_, body) = app.get(&path, None).await;
        (body["tokens"][0]["claimable"] == five.as_str()).then_some(())
    })
    .await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_pages_through_rewards_and_claims() {
    let chain = TestChain::start().await;
    let app = TestApp::spawn_with(|s| chain.configure(s)).await;
    // Two campaigns: each purchase gives the buyer two rewards created at the
    // same instant, which only their ids order.
    let (product, _) = product_and_campaign(&app, &chain, json!({})).await;
    active_campaign(&app, &chain, &product, json!({})).await;
    let claimer: alloy::signers::local::PrivateKeySigner = CLAIMER_KEY.parse().unwrap();
    let wallet = claimer.address();
    let rewards_path = format!("/v1/wallets/{wallet:#x}/rewards");
    let push_pull = MultiTokenPushPull::new(
        chain.push_pull,
        wallet_provider(&chain.rpc_url(), CLAIMER_KEY),
    );
    let per_purchase = U256::from(10u64).pow(U256::from(19));
    // Three purchases claimed one by one (three claims), two more left unclaimed.
    for n in 1..=3u64 {
        purchase(&app, &product, wallet, &format!("paged-{n}")).await;
        eventually(WAIT, "the rewards claimable", || async {
            let (_, body) = app.get(&rewards_path, None).await;
            (body["tokens"][0]["claimable"] == per_purchase.to_string().as_str()).then_some(())
        })
        .await;
        succeeded(push_pull.pullReward(chain.token).send().await.unwrap()).await;
        let claimed = (per_purchase * U256::from(n)).to_string();
        eventually(WAIT, "the claim indexed", || async {
            let (_, body) = app.get(&rewards_path, None).await;
            (body["tokens"][0]["claimed"] == claimed.as_str()).then_some(())
        })
        .await;
    }
    purchase(&app, &product, wallet, "paged-4").await;
    purchase(&app, &product, wallet, "paged-5").await;

    let history = format!("/v1/wallets/{wallet:#x}/history");
    let (status, whole) = app.get(&history, None).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["next_cursor"], json!(null), "{whole}");
    let ids = |list: &serde_json::Value, field: &str| -> Vec<String> {
        let entries = list.as_array().unwrap().iter();
        entries
            .map(|e| e[field].as_str().unwrap().to_owned())
            .collect()
    };
    let (all_rewards, all_claims) = (
        ids(&whole["rewards"], "id"),
        ids(&whole["claims"], "tx_hash"),
    );
    assert_eq!((all_rewards.len(), all_claims.len()), (10, 3), "{whole}");

    // Three of each per page: 3 + 3, then the rewards alone, then no cursor.
    let (mut rewards, mut claims, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    let mut path = format!("{history}?limit=3");
    loop {
        let (status, page) = app.get(&path, None).await;
        assert_eq!(status, 200, "{page}");
        sizes.push((
            page["rewards"].as_array().unwrap().len(),
            page["claims"].as_array().unwrap().len(),
        ));
        rewards.extend(page["rewards"].as_array().unwrap().iter().cloned());
        claims.extend(ids(&page["claims"], "tx_hash"));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{history}?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [(3, 3), (3, 0), (3, 0), (1, 0)]);
    assert_eq!(ids(&json!(rewards), "id"), all_rewards, "every reward once");
    assert_eq!(claims, all_claims, "every claim once");
    // Newest first, strictly; the first page ends inside a purchase's pair.
    let key = |r: &serde_json::Value| {
        let at: chrono::DateTime<chrono::Utc> = r["created_at"].as_str().unwrap().parse().unwrap();
        (at, r["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap())
    };
    assert!(
        rewards.windows(2).all(|w| key(&w[0]) > key(&w[1])),
        "{rewards:?}"
    );
    assert_eq!(key(&rewards[2]).0, key(&rewards[3]).0, "{rewards:?}");
    let blocks: Vec<i64> = whole["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["block_number"].as_i64().unwrap())
        .collect();
    assert!(blocks.windows(2).all(|w| w[0] > w[1]), "{whole}");

    let (status, body) = app
        .get(&format!("{history}?cursor=bm90LWEtY3Vyc29y"), None)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "cursor", "{body}");
    app.stop().await.unwrap();
}
