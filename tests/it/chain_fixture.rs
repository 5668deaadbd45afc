//! A real anvil node with the contracts deployed from their build artifacts, and a
//! product wired to it through the service's own API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use rewardflow::chain::contracts::{MultiTokenPushPull, ProductBank, TestToken};
use rewardflow::chain::local_node::{LocalNode, NodeOptions};
use rewardflow::config::{Secret, Settings};
use serde_json::{Value, json};

use crate::common::TestApp;

/// anvil's first development account: deployer, manager, distributor.
pub const DEPLOYER_KEY: &str = rewardflow::dev::DEV_KEY;
/// anvil's second development account: a user who claims.
pub const CLAIMER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
pub const FUNDING: u128 = 1_000_000 * 10u128.pow(18);
pub const TEN_UNITS: &str = "10000000000000000000";

pub fn anvil_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

pub struct TestChain {
    pub node: Option<LocalNode>,
    pub port: u16,
    pub state_file: PathBuf,
    pub provider: DynProvider,
    pub push_pull: Address,
    pub token: Address,
    /// The bank of the first product (`shop-0.example`).
    pub bank: Address,
    /// Products made so far, the n-th for `shop-{n}.example`.
    products: std::sync::atomic::AtomicUsize,
}

/// The n-th product's domain on a test chain.
fn product_domain(n: usize) -> String {
    format!("shop-{n}.example")
}

fn product_of(n: usize) -> B256 {
    rewardflow::domain::ids::product_id_for_domain(&product_domain(n))
}

/// A funded ProductBank of `product`, allowed to push to MultiTokenPushPull, whose
/// distributor and manager are the deployer.
async fn deploy_bank(url: &str, push_pull: Address, token: Address, product: B256) -> Address {
    // A fresh provider: the service may have sent from this key meanwhile.
    let provider = wallet_provider(url, DEPLOYER_KEY);
    let owner = DEPLOYER_KEY.parse::<PrivateKeySigner>().unwrap().address();
    let bank = ProductBank::deploy(&provider, product, push_pull, owner)
        .await
        .unwrap();
    let push_pull = MultiTokenPushPull::new(push_pull, &provider);
    succeeded(
        push_pull
            .authorizePusher(*bank.address())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let role = bank.DISTRIBUTOR_ROLE().call().await.unwrap();
    succeeded(bank.grantRole(role, owner).send().await.unwrap()).await;
    let token = TestToken::new(token, &provider);
    succeeded(token.mint(owner, U256::from(FUNDING)).send().await.unwrap()).await;
    succeeded(
        token
            .approve(*bank.address(), U256::from(FUNDING))
            .send()
            .await
            .unwrap(),
    )
    .await;
    succeeded(
        bank.deposit(*token.address(), U256::from(FUNDING))
            .send()
            .await
            .unwrap(),
    )
    .await;
    *bank.address()
}

impl TestChain {
    /// anvil (a block per transaction) with MultiTokenPushPull, a token, and one
    /// funded bank whose distributor and manager are the deployer.
    pub async fn start() -> Self {
        let state_file = std::env::temp_dir().join(format!(
            "rewardflow-anvil-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        let node = LocalNode::start(
            &anvil_bin(),
            &NodeOptions {
                port: 0,
                block_time_secs: None,
                state_file: Some(state_file.clone()),
            },
        )
        .expect("anvil starts");
        let port = node.port;
        let provider = wallet_provider(&node.rpc_url(), DEPLOYER_KEY);
        let owner = DEPLOYER_KEY.parse::<PrivateKeySigner>().unwrap().address();
        let push_pull = MultiTokenPushPull::deploy(&provider, owner).await.unwrap();
        let token = TestToken::deploy(&provider, "Test".into(), "TST".into(), 18)
            .await
            .unwrap();
        let (push_pull, token) = (*push_pull.address(), *token.address());
        let bank = deploy_bank(&node.rpc_url(), push_pull, token, product_of(0)).await;
        Self {
            push_pull,
            token,
            bank,
            products: Default::default(),
            node: Some(node),
            port,
            state_file,
            provider,
        }
    }

    /// A new product's domain, id and bank: the first is `self.bank`, every
    /// other one gets a bank of its own (a bank pays only its own product).
    pub async fn next_product(&self) -> (String, B256, Address) {
        let n = self
            .products
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (domain, product) = (product_domain(n), product_of(n));
        let bank = match n {
            0 => self.bank,
            _ => deploy_bank(&self.rpc_url(), self.push_pull, self.token, product).await,
        };
        (domain, product, bank)
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Service settings pointing at this chain: fast pushes, no confirmations.
    pub fn configure(&self, settings: &mut Settings) {
        let chain = &mut settings.chain;
        chain.rpc_url = self.rpc_url();
        chain.multi_token_push_pull = self.push_pull.to_string();
        chain.distributor_key = Secret::new(DEPLOYER_KEY);
        chain.manager_key = Secret::new(DEPLOYER_KEY);
        chain.push_interval_ms = 200;
        chain.confirmations = 0;
        chain.failure_backoff_initial_ms = 100;
        chain.failure_backoff_max_ms = 1_000;
        chain.indexer_poll_interval_ms = 100;
        chain.rpc_timeout_ms = 2_000;
    }

    /// Stops anvil; its state is written to the state file.
    pub fn stop_node(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
        }
    }

    /// Starts anvil again on the same port from the state file.
    pub fn restart_node(&mut self) {
        let node = LocalNode::start(
            &anvil_bin(),
            &NodeOptions {
                port: self.port,
                block_time_secs: None,
                state_file: Some(self.state_file.clone()),
            },
        )
        .expect("anvil restarts");
        self.node = Some(node);
    }

    pub async fn pending_on_chain(&self, user: Address) -> U256 {
        MultiTokenPushPull::new(self.push_pull, &self.provider)
            .getPendingAmount(self.token, user)
            .call()
            .await
            .unwrap()
    }

    /// RewardsPushed events of the bank: one per batch paid.
    pub async fn pushes(&self) -> usize {
        use alloy::sol_types::SolEvent;
        let filter = alloy::rpc::types::Filter::new()
            .address(self.bank)
            .event_signature(ProductBank::RewardsPushed::SIGNATURE_HASH)
            .from_block(0);
        self.provider.get_logs(&filter).await.unwrap().len()
    }
}

impl Drop for TestChain {
    fn drop(&mut self) {
        self.stop_node();
        let _ = std::fs::remove_file(&self.state_file);
    }
}

/// Waits for a sent transaction's receipt; it must have succeeded.
pub async fn succeeded(
    sent: alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
) -> alloy::rpc::types::TransactionReceipt {
    let receipt = sent.get_receipt().await.unwrap();
    assert!(receipt.status(), "{receipt:?}");
    receipt
}

pub fn wallet_provider(url: &str, key: &str) -> DynProvider {
    let signer: PrivateKeySigner = key.parse().unwrap();
    ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url.parse().unwrap())
        .erased()
}

pub fn owner_token(app: &TestApp) -> String {
    app.token(Address::repeat_byte(0xee))
}

/// A product with its own funded bank on the test chain (the first product's is
/// `chain.bank`) and an active campaign on it (10 units per purchase, the design
/// split); returns (product, campaign id).
pub async fn product_and_campaign(app: &TestApp, chain: &TestChain, extra: Value) -> (String, i64) {
    let (product, _) = product_with_bank(app, chain).await;
    let id = active_campaign(app, chain, &product, extra).await;
    (product, id)
}

/// A product with its own funded bank on the test chain; returns (product, bank).
pub async fn product_with_bank(app: &TestApp, chain: &TestChain) -> (String, Address) {
    let (domain, id, bank) = chain.next_product().await;
    let product = crate::interactions::create_product(app, &domain).await;
    assert_eq!(product, id.to_string());
    let owner = owner_token(app);
    let (status, body) = app
        .post(
            &format!("/v1/products/{product}/banks"),
            &json!({"chain_id": 31337, "bank_address": bank.to_string(),
                    "token": chain.token.to_string(), "symbol": "TST", "decimals": 18}),
            Some(&owner),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (product, bank)
}

/// An active campaign of the product (10 units per purchase, the design split,
/// changed by `extra`); returns its id.
pub async fn active_campaign(app: &TestApp, chain: &TestChain, product: &str, extra: Value) -> i64 {
    let owner = owner_token(app);
    let mut body = json!({"name": "Purchases", "trigger": "purchase.completed",
        "token": chain.token.to_string(), "reward": {"type": "fixed", "amount": TEN_UNITS}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = app
        .post(
            &format!("/v1/products/{product}/campaigns"),
            &body,
            Some(&owner),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (status, active) = app
        .post(
            &format!("/v1/campaigns/{id}/activate"),
            &Value::Null,
            Some(&owner),
        )
        .await;
    assert_eq!(status, 200, "{active}");
    id
}

pub fn user(n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0x77;
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    Address::from(bytes)
}

/// A referral of `who` by `referrer`, then nothing else.
pub async fn refer(app: &TestApp, product: &str, who: Address, referrer: Address) {
    let (status, body) = app
        .post(
            "/v1/interactions",
            &json!({"product_id": product, "type": "referral.referred", "referrer": format!("{referrer:#x}")}),
            Some(&app.token(who)),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

pub async fn purchase(app: &TestApp, product: &str, who: Address, order: &str) {
    let (status, body) = app
        .post(
            "/v1/interactions",
            &json!({"product_id": product, "type": "purchase.completed", "data": {"order_id": order}}),
            Some(&app.token(who)),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// An anvil-specific JSON-RPC call (mining control, dropping a transaction…).
pub async fn anvil_rpc(node: &rewardflow::chain::Chain, method: &'static str, params: Value) {
    use alloy::providers::Provider;
    let _: Value = node
        .provider
        .raw_request(method.into(), params)
        .await
        .unwrap();
}

/// Polls `probe` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn scalar_i64(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.ctx.pool)
        .await
        .unwrap()
}

/// Σ of pushed rewards per wallet in PostgreSQL, as decimal strings.
pub async fn pushed_per_wallet(app: &TestApp) -> Vec<(Address, U256)> {
    let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
        "SELECT wallet, sum(amount)::text FROM rewards WHERE status = 'pushed' GROUP BY wallet ORDER BY wallet",
    )
    .fetch_all(&app.ctx.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(w, a)| (Address::from_slice(&w), a.parse().unwrap()))
        .collect()
}

/// The exactly-once invariant: every wallet's on-chain pending amount equals what
/// PostgreSQL says was pushed to it, and every RewardsPushed event is a confirmed batch.
pub async fn assert_exactly_once(app: &TestApp, chain: &TestChain) {
    let pushed = pushed_per_wallet(app).await;
    assert!(!pushed.is_empty(), "nothing was pushed");
    for (wallet, amount) in &pushed {
        assert_eq!(
            chain.pending_on_chain(*wallet).await,
            *amount,
            "wallet {wallet}"
        );
    }
    let confirmed = scalar_i64(
        app,
        "SELECT count(*) FROM reward_batches WHERE status = 'confirmed'",
    )
    .await;
    assert_eq!(
        chain.pushes().await as i64,
        confirmed,
        "RewardsPushed events vs confirmed batches"
    );
}
