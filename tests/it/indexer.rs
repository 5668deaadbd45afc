//! The indexer against a real anvil: a reorganisation (`evm_snapshot` /
//! `evm_revert`) that undoes a claim is undone in PostgreSQL too.

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
    assert!(
        app.metrics()
            .await
            .lines()
            .any(|l| l.starts_with("rewardflow_indexer_reorgs_total ") && !l.ends_with(" 0")),
        "a reorg is counted"
    );
    let (_, history) = app
        .get(
            &format!("/v1/wallets/{:#x}/history", claimer.address()),
            None,
        )
        .await;
    assert_eq!(history["claims"], json!([]), "{history}");
    app.stop().await.unwrap();
}
