//! `rewardflow-load`: drives a running rewardflow with realistic interactions and
//! checks afterwards that every acknowledged interaction is stored exactly once;
//! also measures the machine's own limits (PostgreSQL COPY, a bare warp echo) so
//! results can be read against them; recomputes every stored reward independently
//! after a run with campaigns. Every loop is bounded in count and time.
#![forbid(unsafe_code)]

mod client;
mod limits;
mod push;
mod recompute;
mod report;
mod run;
mod scenario;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rewardflow-load",
    about = "Load generator and checker for rewardflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Registers the scenario's products (idempotent).
    Setup(Target),
    /// Sends the scenario and reports throughput and latency; with
    /// --database-url, verifies exactly-once storage afterwards.
    Run(run::RunArgs),
    /// Measures the machine's limits: COPY rows/s of interaction rows, and a bare
    /// warp JSON POST echo under the same client.
    Limits(limits::LimitArgs),
    /// Purchases over HTTP to `rewardflow dev`'s demo product until every reward is
    /// pushed on-chain: rewards/min, batches, gas per reward; on-chain = PostgreSQL;
    /// then the same calls sent directly (the machine's limit).
    Push(push::PushArgs),
    /// Recomputes every stored reward from the stored campaigns, referral edges
    /// and interactions, independently of the service, and compares (SPEC §12).
    Recompute {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

#[derive(Args, Clone)]
pub struct Target {
    /// Address of the service.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// File holding the service's session-token secret (its dev default location).
    #[arg(long, default_value = ".rewardflow/jwt-secret")]
    pub jwt_secret_file: PathBuf,
    /// Products in the scenario.
    #[arg(long, default_value_t = 1_000)]
    pub products: u32,
    /// `setup` only: a bank and this many active campaigns per product (unlimited
    /// budgets, fixed rewards, triggers spread over the interaction types).
    #[arg(long, default_value_t = 0)]
    pub campaigns_per_product: u32,
}

impl Target {
    pub fn secret(&self) -> anyhow::Result<Vec<u8>> {
        if let Ok(secret) = std::env::var("REWARDFLOW_AUTH__JWT_SECRET") {
            return Ok(secret.into_bytes());
        }
        Ok(std::fs::read_to_string(&self.jwt_secret_file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.jwt_secret_file.display()))?
            .trim()
            .as_bytes()
            .to_vec())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup(target) => run::setup(&target).await,
        Command::Run(args) => run::run(args).await,
        Command::Limits(args) => limits::run(args).await,
        Command::Push(args) => push::run(args).await,
        Command::Recompute { database_url } => {
            let started = std::time::Instant::now();
            let report = recompute::check(&database_url).await?;
            println!("{report} seconds={:.1}", started.elapsed().as_secs_f64());
            anyhow::ensure!(
                report.ok(),
                "the stored rewards differ from the recomputation"
            );
            Ok(())
        }
    }
}
