//! What each CLI command does, given the loaded settings. `main.rs` only parses.
//! The lines printed on stdout (`listening on …`, `DATABASE_URL=…`, the token) are
//! an interface scripts rely on; logs go to stderr.

use std::io::Write;

use tokio::net::TcpListener;

use crate::app::{App, AppError};
use crate::config::{ConfigError, Secret, Settings, resolve_jwt_secret};
use crate::db::local_cluster::{ClusterError, LocalCluster};
use crate::db::{self, DbError};
use crate::domain::{ids, session_token};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("local PostgreSQL: {0}")]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("dev chain: {0}")]
    DevChain(#[from] crate::dev::DevChainError),
    #[error("--wallet {0}")]
    Wallet(ids::IdError),
    #[error(
        "another `rewardflow dev` runs on {0} (it owns its PostgreSQL cluster and node); stop it first, or set dev.data_dir"
    )]
    DevBusy(std::path::PathBuf),
    #[error("dev data directory {path}: {source}")]
    DevDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl CommandError {
    /// Whether the configuration is what is wrong (the process exits with 2).
    pub fn is_config(&self) -> bool {
        use crate::chain::ChainSetupError;
        matches!(
            self,
            CommandError::Config(_)
                | CommandError::Wallet(_)
                | CommandError::App(
                    AppError::Config(_)
                        | AppError::NoDatabaseUrl
                        | AppError::Chain(
                            ChainSetupError::Config(_)
                                | ChainSetupError::NoDistributorKey
                                | ChainSetupError::Key { .. }
                        )
                )
        )
    }
}

/// `rewardflow serve`: the service against `database.url`.
pub async fn serve(settings: Settings) -> Result<(), CommandError> {
    let listener = bind(&settings).await?;
    let app = App::build(settings).await?;
    announce(&listener);
    app.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// `rewardflow dev`: like `serve`, but starts (and afterwards stops) a durable local
/// PostgreSQL cluster under `dev.data_dir` unless `database.url` is set.
pub async fn dev(mut settings: Settings) -> Result<(), CommandError> {
    let _only_dev = lock_data_dir(&settings.dev.data_dir)?;
    let cluster = if settings.database.url.is_empty() {
        let cluster = LocalCluster::start_durable(
            &settings.dev.data_dir,
            settings.dev.postgres_port,
            &settings.dev.postgres_bin_dir,
            &settings.dev.postgres_settings,
        )
        .await?;
        settings.database.url = Secret::new(cluster.dev_url());
        Some(cluster)
    } else {
        None
    };
    // Locally, every request comes from the same address.
    settings.rate_limit.per_ip_per_hour = 0;
    println!("DATABASE_URL={}", settings.database.url.expose());
    let result = dev_serve(settings).await;
    if let Some(cluster) = cluster
        && let Err(err) = cluster.stop().await
    {
        tracing::warn!(error = %err, "stopping the dev PostgreSQL cluster failed");
    }
    result
}

/// Held while `dev` runs (the lock goes with the process, however it ends): a
/// second `dev` on the same data directory would reuse the first one's PostgreSQL
/// cluster and stop it when it exits.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, CommandError> {
    let failed = |source| CommandError::DevDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("dev.lock"))
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(CommandError::DevBusy(dir.to_owned())),
        Err(std::fs::TryLockError::Error(err)) => Err(failed(err)),
    }
}

/// The chain part of `dev` (anvil, contracts, demo data), then the service.
async fn dev_serve(mut settings: Settings) -> Result<(), CommandError> {
    let node = crate::dev::start_chain(&mut settings).await?;
    let listener = bind(&settings).await?;
    let app = App::build(settings).await?;
    if let Some((node, deployment)) = &node {
        let ctx = app.context();
        let chain_id = match &ctx.chain {
            Some(c) => c
                .chain
                .chain_id()
                .await
                .map_err(crate::dev::DevChainError::from)?,
            None => 0,
        };
        let demo = crate::dev::register_demo(&ctx.pool, chain_id, deployment).await?;
        // The demo product is written directly, not through the API: let browsers
        // on its origin in (CORS) like any product's.
        ctx.origins.refresh(&ctx.pool).await?;
        println!("RPC_URL={}", node.rpc_url());
        println!("MULTI_TOKEN_PUSH_PULL={}", deployment.multi_token_push_pull);
        println!("DEMO_PRODUCT_ID={}", demo.product);
        println!("DEMO_CAMPAIGN_ID={}", demo.campaign_id);
        println!("DEMO_TOKEN={}", deployment.token);
        if let Ok(addr) = listener.local_addr() {
            println!(
                "# send a purchase (rewards reach the chain within seconds; see GET /v1/wallets/{{wallet}}/rewards):\n\
                 #   T=$(rewardflow token --wallet {owner}); curl -s -H \"Authorization: Bearer $T\" \\\n\
                 #     -d '{{\"product_id\":\"{product}\",\"type\":\"purchase.completed\",\"data\":{{\"order_id\":\"o1\"}}}}' http://{addr}/v1/interactions",
                owner = demo.owner,
                product = demo.product,
            );
        }
    }
    announce(&listener);
    let result = app.serve(listener, shutdown_signal()).await;
    if let Some((node, _)) = node {
        tokio::task::spawn_blocking(move || node.stop()).await.ok();
    }
    Ok(result?)
}

/// `rewardflow migrate`: applies pending migrations and says how many there were.
pub async fn migrate(settings: Settings) -> Result<usize, CommandError> {
    if settings.database.url.is_empty() {
        return Err(AppError::NoDatabaseUrl.into());
    }
    let pool = db::connect(&settings.database).await?;
    let pending = db::pending_migrations(&pool).await?;
    db::migrate(&pool).await?;
    pool.close().await;
    Ok(pending)
}

/// `rewardflow token --wallet 0x…`: a session token the server with the same
/// configuration accepts.
pub fn token(
    settings: &Settings,
    wallet: &str,
    ttl_secs: Option<u64>,
) -> Result<String, CommandError> {
    let wallet = ids::parse_address(wallet).map_err(CommandError::Wallet)?;
    let secret = resolve_jwt_secret(settings)?;
    let ttl = ttl_secs.unwrap_or(settings.auth.token_ttl_secs) as i64;
    Ok(session_token::mint(
        secret.expose().as_bytes(),
        wallet,
        chrono::Utc::now().timestamp(),
        ttl,
    ))
}

async fn bind(settings: &Settings) -> Result<TcpListener, CommandError> {
    let addr = settings.server.listen;
    TcpListener::bind(addr)
        .await
        .map_err(|source| CommandError::Bind { addr, source })
}

fn announce(listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
