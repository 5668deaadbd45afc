//! PostgreSQL access: the pool, migrations, and one file of queries per table
//! family. Only this module writes SQL.

pub mod auth_nonces;
pub mod banks;
pub mod campaigns;
pub mod chain_events;
pub mod flush;
pub mod interactions;
pub mod local_cluster;
pub mod products;
pub mod push;
pub mod refunds;
pub mod rewards;
pub mod wallets;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::config::DatabaseSettings;

/// The migrations of `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A `NUMERIC(78,0)` read as text (the schema keeps it within U256).
pub(crate) fn parse_u256(text: &str) -> alloy::primitives::U256 {
    text.parse().unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or is overloaded; retrying later can help.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A unique constraint refused the row; retrying cannot help.
    #[error("conflict on {constraint}")]
    Conflict { constraint: String },
    /// Anything else: a bug or a schema mismatch.
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
}

impl DbError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DbError::Unavailable(err),
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                DbError::Conflict {
                    constraint: db.constraint().unwrap_or_default().to_owned(),
                }
            }
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_transient) => {
                DbError::Unavailable(err)
            }
            _ => DbError::Query(err),
        }
    }
}

/// SQLSTATEs of a database that cannot do the work now but may later, whatever
/// the statement: a lost connection (08), too few resources — disk full, out of
/// memory, too many connections (53), a shutdown or restart under way (57P01–
/// 57P03), a read-only server after a failover (25006), a transaction chosen to
/// fail by a deadlock or a serialization conflict (40001, 40P01), an I/O error (58030).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "25006" | "40001" | "40P01" | "58030"
        )
}

/// Opens the pool; fails fast when the database cannot be reached.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = settings
        .url
        .expose()
        .parse::<PgConnectOptions>()
        .map_err(DbError::Unavailable)?
        .application_name("rewardflow")
        .log_statements(tracing::log::LevelFilter::Trace);
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Applies pending migrations (idempotent; concurrent callers are serialized by
/// sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// A cheap round trip, for readiness.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// How many embedded migrations the database has not applied successfully.
pub async fn pending_migrations(pool: &PgPool) -> Result<usize, DbError> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    let applied: Vec<i64> = if table.is_some() {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count())
}
