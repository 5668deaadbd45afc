//! `rewardflow dev`'s chain: a local anvil node (state kept under `dev.data_dir`),
//! the contracts deployed by the deploy script (once; reused while the node still
//! has them), and a demo product, bank and campaign registered in the database.

use std::collections::HashMap;
use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;

use crate::chain::local_node::{LocalNode, NodeError, NodeOptions};
use crate::chain::{Chain, ChainError};
use crate::config::{Secret, Settings};
use crate::db::{self, DbError};
use crate::domain::campaign::CampaignStatus;
use crate::domain::campaign_input::{CampaignInput, RewardInput};
use crate::domain::ids;

/// anvil's first development account: deployer, bank owner and manager, distributor.
pub const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub const DEMO_DOMAIN: &str = "demo.rewardflow.local";
const DEMO_CAMPAIGN: &str = "Demo: 10 RFD per purchase";

#[derive(Debug, thiserror::Error)]
pub enum DevChainError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("deploying the contracts failed: {0}")]
    Deploy(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("the demo campaign is invalid: {0}")]
    Demo(String),
}

/// What the deploy script set up.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub multi_token_push_pull: Address,
    pub token: Address,
    pub bank: Address,
}

/// Starts anvil when no RPC is configured, deploys (or finds) the contracts, and
/// points the settings at them with the dev keys and the dev push interval.
/// Returns the node (stopped when dropped) and the deployment.
pub async fn start_chain(
    settings: &mut Settings,
) -> Result<Option<(LocalNode, Deployment)>, DevChainError> {
    if settings.chain.enabled() {
        return Ok(None);
    }
    let dev = &settings.dev;
    std::fs::create_dir_all(&dev.data_dir).map_err(|source| NodeError::Io {
        step: "creating dev.data_dir",
        source,
    })?;
    let node = LocalNode::start(
        &dev.anvil_bin,
        &NodeOptions {
            port: dev.anvil_port,
            block_time_secs: Some(dev.anvil_block_time_secs),
            state_file: Some(absolute(&dev.data_dir.join("anvil-state.json"))),
        },
    )?;
    settings.chain.rpc_url = node.rpc_url();
    if settings.chain.distributor_key.is_empty()
        && settings.chain.distributor_key_file.as_os_str().is_empty()
    {
        settings.chain.distributor_key = Secret::new(DEV_KEY);
    }
    if settings.chain.manager_key.is_empty()
        && settings.chain.manager_key_file.as_os_str().is_empty()
    {
        settings.chain.manager_key = Secret::new(DEV_KEY);
    }
    settings.chain.push_interval_ms = settings.dev.push_interval_ms;
    let chain = Chain::new(&settings.chain)?;
    let record = settings.dev.data_dir.join("chain.env");
    let deployment = match read_deployment(&record) {
        Some(d)
            if has_code(&chain, d.multi_token_push_pull).await?
                && has_code(&chain, d.bank).await? =>
        {
            d
        }
        _ => {
            let d = deploy(settings, &node.rpc_url()).await?;
            let text = format!(
                "MULTI_TOKEN_PUSH_PULL={}\nDEMO_TOKEN={}\nPRODUCT_BANK={}\n",
                d.multi_token_push_pull, d.token, d.bank
            );
            std::fs::write(&record, text).map_err(|source| NodeError::Io {
                step: "recording the deployment",
                source,
            })?;
            d
        }
    };
    settings.chain.multi_token_push_pull = deployment.multi_token_push_pull.to_string();
    Ok(Some((node, deployment)))
}

fn absolute(path: &Path) -> std::path::PathBuf {
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_owned())
}

async fn has_code(chain: &Chain, address: Address) -> Result<bool, ChainError> {
    let code = chain
        .provider
        .get_code_at(address)
        .await
        .map_err(|e| ChainError::Rpc(e.to_string()))?;
    Ok(!code.is_empty())
}

fn read_deployment(path: &Path) -> Option<Deployment> {
    Deployment::parse(&std::fs::read_to_string(path).ok()?).ok()
}

impl Deployment {
    /// From `NAME=0x…` lines, as the deploy script prints them.
    fn parse(text: &str) -> Result<Self, String> {
        let values: HashMap<&str, Address> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k.trim(), ids::parse_address(v.trim()).ok()?)))
            .collect();
        let get = |key: &str| values.get(key).copied().ok_or(format!("no {key}"));
        Ok(Self {
            multi_token_push_pull: get("MULTI_TOKEN_PUSH_PULL")?,
            token: get("DEMO_TOKEN")?,
            bank: get("PRODUCT_BANK")?,
        })
    }
}

/// Runs the deploy script (its stdout is exactly the address lines).
async fn deploy(settings: &Settings, rpc_url: &str) -> Result<Deployment, DevChainError> {
    tracing::info!(script = %settings.dev.deploy_script.display(), "deploying the contracts");
    let output = tokio::process::Command::new("bash")
        .arg(&settings.dev.deploy_script)
        .arg(rpc_url)
        .env("DEPLOYER_PRIVATE_KEY", DEV_KEY)
        .env(
            "PRODUCT_ID",
            ids::product_id_for_domain(DEMO_DOMAIN).to_string(),
        )
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| DevChainError::Deploy(e.to_string()))?;
    if !output.status.success() {
        return Err(DevChainError::Deploy(format!(
            "{} exited with {}",
            settings.dev.deploy_script.display(),
            output.status
        )));
    }
    Deployment::parse(&String::from_utf8_lossy(&output.stdout)).map_err(DevChainError::Deploy)
}

/// The demo product, its bank and an active campaign (created once).
pub struct Demo {
    pub product: B256,
    pub campaign_id: i64,
    pub owner: Address,
}

pub async fn register_demo(
    pool: &sqlx::PgPool,
    chain_id: u64,
    deployment: &Deployment,
) -> Result<Demo, DevChainError> {
    let owner: Address = alloy::signers::local::PrivateKeySigner::from_bytes(
        &DEV_KEY.parse::<B256>().expect("a valid key"),
    )
    .expect("a valid key")
    .address();
    let product = ids::product_id_for_domain(DEMO_DOMAIN);
    if db::products::load_config(pool, product).await?.is_none() {
        db::products::insert(
            pool,
            &db::products::NewProduct {
                id: product,
                domain: DEMO_DOMAIN.into(),
                name: "rewardflow demo shop".into(),
                owner,
                product_types: 0,
                metadata: serde_json::json!({}),
                allowed_origins: vec![],
            },
        )
        .await?;
    }
    let bank = match db::banks::for_token(pool, product, deployment.token).await? {
        Some(bank) => bank,
        None => {
            db::banks::insert(
                pool,
                &db::banks::NewBank {
                    product,
                    chain_id: chain_id as i64,
                    bank: deployment.bank,
                    token: deployment.token,
                    symbol: "RFD".into(),
                    decimals: 18,
                },
            )
            .await?
        }
    };
    let existing = db::campaigns::list(pool, product)
        .await?
        .into_iter()
        .find(|c| c.name == DEMO_CAMPAIGN);
    let campaign_id = match existing {
        Some(c) => c.id,
        None => {
            let input = CampaignInput {
                name: DEMO_CAMPAIGN.into(),
                description:
                    "10 RFD per completed purchase: 5 to the buyer, the rest up the referral chain."
                        .into(),
                trigger: "purchase.completed".into(),
                requires_referral: false,
                token: deployment.token.to_string(),
                reward: RewardInput::Fixed {
                    amount: "10000000000000000000".into(),
                },
                user_bps: 5_000,
                deperdition_bps: 8_000,
                max_depth: 5,
                max_rewards_per_user: None,
                budget_cap: "100000000000000000000000".into(),
                lockup_seconds: 0,
                starts_at: None,
                ends_at: None,
                metadata: Default::default(),
            };
            let spec = input
                .validate()
                .map_err(|e| DevChainError::Demo(format!("{e:?}")))?;
            let row = db::campaigns::insert(pool, product, bank.id, &spec, owner).await?;
            db::campaigns::set_status(pool, row.id, CampaignStatus::Draft, CampaignStatus::Active)
                .await?;
            row.id
        }
    };
    Ok(Demo {
        product,
        campaign_id,
        owner,
    })
}
