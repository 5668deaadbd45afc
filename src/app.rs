//! Wiring: the pool and migrations, the actor tree, the HTTP server, and the
//! shutdown order (stop accepting → drain in-flight requests → stop actors →
//! close the pool).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorRef};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::actors::indexer::{self, Indexer, IndexerArgs};
use crate::actors::maintenance::{self, Maintenance, MaintenanceArgs};
use crate::actors::product::DedupCache;
use crate::actors::product_directory::{
    self, DirectoryArgs, DirectoryMsg, OpenError, ProductDirectory, ProductHandle, ProductRegistry,
    ProductTemplate,
};
use crate::actors::push_directory::{self, PushDirectory, PushDirectoryArgs};
use crate::actors::referral::{self, Referral, ReferralArgs};
use crate::actors::supervisor::{
    ActorSlot, ChildSpec, RestartPolicy, Supervisor, SupervisorArgs, SupervisorMsg,
};
use crate::actors::writer::{self, Writer, WriterArgs, WriterGate, WriterMsg};
use crate::chain::push::Pushing;
use crate::chain::{Chain, ChainContext, ChainSetupError};
use crate::config::{ConfigError, Secret, Settings, resolve_jwt_secret};
use crate::db::{self, DbError};
use crate::http::cors::AllowedOrigins;
use crate::limits::RateLimiter;
use crate::readiness::Readiness;
use crate::{http, telemetry};

/// What every handler and actor may share.
pub struct AppContext {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub readiness: Arc<Readiness>,
    pub metrics: PrometheusHandle,
    pub jwt_secret: Secret,
    pub root: ActorRef<SupervisorMsg>,
    pub ingest: Ingest,
    /// The node and keys; `None` when `chain.rpc_url` is empty.
    pub chain: Option<Arc<ChainContext>>,
    /// Browser origins allowed by CORS.
    pub origins: Arc<AllowedOrigins>,
}

impl AppContext {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.server.request_timeout_ms)
    }
}

/// The front door's handles on the ingestion actors.
pub struct Ingest {
    pub products: Arc<ProductRegistry>,
    pub directory: ActorSlot<DirectoryMsg>,
    pub writer: ActorSlot<WriterMsg>,
    pub limiter: Arc<RateLimiter>,
    pub gate: Arc<WriterGate>,
    /// Idempotency and natural keys recently stored, per product (the product
    /// actors' dedup; the front door reads it so that repeats take nothing from the
    /// rate limits).
    pub dedup: DedupCache,
}

impl Ingest {
    /// The running actor of a product, started on first use.
    pub async fn open(&self, product: alloy::primitives::B256) -> Result<ProductHandle, OpenError> {
        let directory = self
            .directory
            .get()
            .ok_or_else(|| OpenError::Unavailable("the product directory is restarting".into()))?;
        self.products.open(&directory, product).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "database.url is not set (use --database-url, REWARDFLOW_DATABASE__URL or `rewardflow dev`)"
    )]
    NoDatabaseUrl,
    #[error("cannot connect to the database: {0}")]
    Database(#[from] DbError),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database has {0} unapplied migration(s) and database.migrate_on_start is false; run `rewardflow migrate`"
    )]
    PendingMigrations(usize),
    #[error("chain: {0}")]
    Chain(#[from] ChainSetupError),
    #[error("the actor system failed to start: {0}")]
    Actors(String),
    #[error("the actor system stopped unexpectedly (restart meltdown); see the logs")]
    ActorSystemFailed,
}

/// A built service: database ready, actors running, not yet serving HTTP.
pub struct App {
    ctx: Arc<AppContext>,
    root_join: tokio::task::JoinHandle<()>,
}

impl App {
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let metrics = telemetry::metrics_handle();
        let jwt_secret = resolve_jwt_secret(&settings)?;
        if settings.database.url.is_empty() {
            return Err(AppError::NoDatabaseUrl);
        }
        let readiness = Arc::new(Readiness::default());
        let pool = db::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            db::migrate(&pool).await?;
        } else {
            let pending = db::pending_migrations(&pool).await?;
            if pending > 0 {
                return Err(AppError::PendingMigrations(pending));
            }
        }
        readiness.set_migrations_applied();
        let chain = ChainContext::new(&settings.chain)?.map(Arc::new);
        if let Some(chain) = &chain {
            tokio::spawn(greet_node(chain.chain.clone()));
        }
        let origins = Arc::new(AllowedOrigins::new(&settings.server.cors_origins));
        origins.refresh(&pool).await?;

        let ingest = Ingest {
            products: Arc::new(ProductRegistry::default()),
            directory: ActorSlot::default(),
            writer: ActorSlot::default(),
            limiter: Arc::new(RateLimiter::new(&settings.rate_limit)),
            gate: Arc::new(WriterGate::new(settings.ingest.writer_max_pending_rows)),
            dedup: DedupCache::new(settings.ingest.dedup_cache_entries),
        };
        let children = children(&settings, &pool, &readiness, &ingest, chain.as_deref());
        let (root, root_join) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                policy: RestartPolicy::from(&settings.supervisor),
                children,
            },
        )
        .await
        .map_err(|err| AppError::Actors(err.to_string()))?;
        // Every child loads its state in pre_start, which has returned by now.
        readiness.set_state_loaded();

        let ctx = Arc::new(AppContext {
            settings: Arc::new(settings),
            pool,
            readiness,
            metrics,
            jwt_secret,
            root,
            ingest,
            chain,
            origins,
        });
        Ok(Self { ctx, root_join })
    }

    pub fn context(&self) -> Arc<AppContext> {
        self.ctx.clone()
    }

    /// Serves until `shutdown` resolves (or the actor system dies), then shuts
    /// down in order.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Self { ctx, mut root_join } = self;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = http::serve(ctx.clone(), listener, async move {
            let _ = stop_rx.await;
        });
        let mut server = std::pin::pin!(server);
        let mut shutdown = std::pin::pin!(shutdown);

        let (actors_died, server_done) = tokio::select! {
            _ = &mut shutdown => (false, false),
            _ = &mut root_join => (true, false),
            _ = &mut server => (false, true),
        };
        tracing::info!("shutting down: draining in-flight requests");
        ctx.readiness.start_draining();
        let _ = stop_tx.send(());
        let grace = Duration::from_millis(ctx.settings.server.shutdown_grace_ms);
        if !server_done && tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "in-flight requests did not finish in time"
            );
        }
        if !actors_died {
            ctx.root.stop(Some("shutdown".into()));
            let _ = root_join.await;
        }
        ctx.pool.close().await;
        tracing::info!("stopped");
        if actors_died {
            Err(AppError::ActorSystemFailed)
        } else {
            Ok(())
        }
    }
}

/// The root supervisor's children, in start order (they stop in reverse: product
/// actors first, then the referral actor, then the writer, which flushes last).
fn children(
    settings: &Settings,
    pool: &PgPool,
    readiness: &Arc<Readiness>,
    ingest: &Ingest,
    chain: Option<&ChainContext>,
) -> Vec<ChildSpec> {
    let s = &settings.ingest;
    let maintenance_args = MaintenanceArgs {
        pool: pool.clone(),
        readiness: readiness.clone(),
        interval: Duration::from_millis(settings.supervisor.maintenance_interval_ms),
        products: ingest.products.clone(),
        limiter: ingest.limiter.clone(),
    };
    let push_slot = ActorSlot::default();
    let writer_args = WriterArgs {
        pool: pool.clone(),
        gate: ingest.gate.clone(),
        max_batch_rows: s.writer_max_batch_rows as usize,
        flush_concurrency: s.writer_flush_concurrency as usize,
        retry_interval: Duration::from_millis(s.writer_retry_interval_ms),
        pushers: push_slot.clone(),
    };
    let referral_args = ReferralArgs {
        pool: pool.clone(),
        max_edges: s.referral_cache_edges,
    };
    let referral_slot = ActorSlot::default();
    let directory_args = DirectoryArgs {
        registry: ingest.products.clone(),
        policy: RestartPolicy::from(&settings.supervisor),
        template: ProductTemplate {
            pool: pool.clone(),
            writer: ingest.writer.clone(),
            gate: ingest.gate.clone(),
            referral: referral_slot.clone(),
            dedup: ingest.dedup.clone(),
            window: Duration::from_secs(s.dedup_window_secs),
            stale_after: Duration::from_millis(settings.server.request_timeout_ms)
                + Duration::from_secs(5),
            loads: Arc::new(Semaphore::new(s.product_loads_at_once as usize)),
        },
    };
    let mut children = vec![
        ChildSpec::new(maintenance::KIND, Maintenance, move || {
            maintenance_args.clone()
        }),
        ChildSpec::published(
            writer::KIND,
            Writer,
            move || writer_args.clone(),
            ingest.writer.clone(),
        ),
        ChildSpec::published(
            referral::KIND,
            Referral,
            move || referral_args.clone(),
            referral_slot,
        ),
        ChildSpec::published(
            product_directory::KIND,
            ProductDirectory,
            move || directory_args.clone(),
            ingest.directory.clone(),
        ),
    ];
    if let Some(chain) = chain {
        let push_args = PushDirectoryArgs {
            template: Pushing {
                pool: pool.clone(),
                chain: chain.chain.clone(),
                distributor: chain.distributor.clone(),
                manager: chain.manager.clone(),
                token: alloy::primitives::Address::ZERO,
                settings: Arc::new(settings.chain.clone()),
            },
            policy: RestartPolicy::from(&settings.supervisor),
        };
        children.push(ChildSpec::published(
            push_directory::KIND,
            PushDirectory,
            move || push_args.clone(),
            push_slot,
        ));
        if let Some(contract) = chain.push_pull {
            let c = &settings.chain;
            let indexer_args = IndexerArgs {
                pool: pool.clone(),
                chain: chain.chain.clone(),
                contract,
                confirmations: c.confirmations,
                from_block: c.indexer_from_block,
                max_block_range: c.indexer_max_block_range,
                poll_interval: Duration::from_millis(c.indexer_poll_interval_ms),
            };
            children.push(ChildSpec::new(indexer::KIND, Indexer, move || {
                indexer_args.clone()
            }));
        }
    }
    children
}

/// Says at start whether the node answers; pushing and indexing wait for it
/// either way (their actors retry).
async fn greet_node(chain: Chain) {
    match chain.chain_id().await {
        Ok(id) => tracing::info!(chain_id = id, "chain node answers"),
        Err(err) => tracing::warn!(
            error = %err,
            "the chain node does not answer; interactions are taken, pushing and indexing wait for it"
        ),
    }
}

/// Builds and serves: what `rewardflow serve` does.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    App::build(settings).await?.serve(listener, shutdown).await
}
