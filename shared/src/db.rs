//! The Postgres pool and the embedded migrations (`sql/`).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::{Client, Socket, error::SqlState, tls::MakeTlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::postgres::{self as pg_tls, PgTls, SslMode};

mod embedded {
    refinery::embed_migrations!("../sql");
}

/// A Postgres failure, classified for the layers above.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("postgres pool: {0}")]
    Pool(#[from] PoolError),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("invalid DATABASE_URL: {0}")]
    Url(String),
    /// Connecting failed: names the `sslmode` in force, since that is where a TLS failure
    /// (server without TLS, certificate refused) is fixed.
    #[error("postgres (sslmode={sslmode}): {}", with_causes(source))]
    Connect { sslmode: SslMode, source: tokio_postgres::Error },
    #[error("migrations: {0}")]
    Migration(String),
    #[error("contention: {0}")]
    Contention(&'static str),
}

impl DbError {
    /// The database cannot be reached right now (down, restarting, pool exhausted): callers
    /// answer 503 and retry later rather than fail for good.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Postgres(e) | Self::Connect { source: e, .. } => {
                e.is_closed()
                    || e.code().is_none()
                    || e.code().is_some_and(|c| {
                        c.code().starts_with("08") // connection exception
                            || c.code().starts_with("40") // rolled back: deadlock, serialization
                            || *c == SqlState::ADMIN_SHUTDOWN
                            || *c == SqlState::CANNOT_CONNECT_NOW
                            || *c == SqlState::TOO_MANY_CONNECTIONS
                    })
            }
            Self::Url(_) | Self::Migration(_) | Self::Contention(_) => false,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Postgres(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION))
    }
}

/// Session settings of every pooled connection. Generic plans: our statements are point
/// lookups and queue operations whose generic plans are right (the claim is written so), and
/// without this Postgres re-plans the claim on every call because `LIMIT $1` looks expensive in
/// a generic plan — measured at ~30 % of queue throughput.
pub const SESSION_OPTIONS: &str = "-c plan_cache_mode=force_generic_plan";

/// Builds the pool. Connections are made lazily; `wait_timeout`/`create_timeout` bound how long
/// a request waits when Postgres is down, so it gets a 503 quickly instead of hanging.
pub fn pool(url: &SecretString, max_size: usize) -> Result<Pool, DbError> {
    let (mut config, tls) = config(url)?;
    let options = match config.get_options() {
        Some(existing) => format!("{existing} {SESSION_OPTIONS}"),
        None => SESSION_OPTIONS.to_owned(),
    };
    config.options(options);
    let manager = Manager::from_config(
        config,
        tls.connector,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Url(e.to_string()))
}

/// The URL parsed, its TLS settings (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`; see
/// [`crate::tls::postgres`]) applied.
fn config(url: &SecretString) -> Result<(tokio_postgres::Config, PgTls), DbError> {
    let (rest, tls) = pg_tls::from_url(url.expose_secret()).map_err(|e| DbError::Url(e.to_string()))?;
    let mut config: tokio_postgres::Config =
        rest.parse().map_err(|e: tokio_postgres::Error| DbError::Url(e.to_string()))?;
    tls.apply(&mut config);
    Ok((config, tls))
}

/// A connection of its own (not pooled), over TLS as the URL says: migrations, LISTEN, the
/// maintenance leader's session. The caller drives (spawns) the connection.
pub type Connection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// Opens a dedicated connection with the URL's TLS settings.
pub async fn connect(url: &SecretString) -> Result<(Client, Connection), DbError> {
    let (config, tls) = config(url)?;
    config.connect(tls.connector).await.map_err(|source| DbError::Connect { sslmode: tls.mode, source })
}

/// An error and its causes: tokio-postgres keeps what went wrong in a TLS handshake (the
/// certificate refused, no TLS on the server) in the cause, not in its message.
fn with_causes(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        cause = e.source();
    }
    text
}

/// Key of the session advisory lock that serialises migration runs.
const MIGRATION_LOCK: i64 = 0x5354_4d54_4d49_4752; // "STMTMIGR"

/// Applies pending migrations over a dedicated connection, holding an advisory lock so the API
/// and any number of workers may all call this at start-up.
pub async fn migrate(url: &SecretString) -> Result<(), DbError> {
    let (mut client, connection) = connect(url).await?;
    let task = tokio::spawn(connection);
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let report = embedded::migrations::runner()
        .set_grouped(true)
        // An older binary may start against a newer schema (rolling upgrades, rollback):
        // migrations are additive, so versions it does not know are not an error.
        .set_abort_missing(false)
        .run_async(&mut client)
        .await
        .map_err(|e| DbError::Migration(e.to_string()));
    drop(client);
    let _ = task.await;
    report.map(|_| ())
}

/// The newest migration version compiled into this binary.
pub fn latest_migration_version() -> Option<i32> {
    embedded::migrations::runner().get_migrations().iter().map(|m| m.version()).max()
}
