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

use crate::actors::maintenance::{self, Maintenance, MaintenanceArgs};
use crate::actors::supervisor::{
    ChildSpec, RestartPolicy, Supervisor, SupervisorArgs, SupervisorMsg,
};
use crate::config::{ConfigError, Secret, Settings, resolve_jwt_secret};
use crate::db::{self, DbError};
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
}

impl AppContext {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.server.request_timeout_ms)
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

        let maintenance_args = MaintenanceArgs {
            pool: pool.clone(),
            readiness: readiness.clone(),
            interval: Duration::from_millis(settings.supervisor.maintenance_interval_ms),
        };
        let children = vec![ChildSpec::new(maintenance::KIND, Maintenance, move || {
            maintenance_args.clone()
        })];
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
        let server = warp::serve(http::routes(ctx.clone()))
            .incoming(listener)
            .graceful(async move {
                let _ = stop_rx.await;
            })
            .run();
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

/// Builds and serves: what `rewardflow serve` does.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    App::build(settings).await?.serve(listener, shutdown).await
}
