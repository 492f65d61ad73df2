//! The Postgres pool and the embedded migrations (`sql/`).

use std::{
    future::Future,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio_postgres::{
    Client, GenericClient as _, IsolationLevel, Row, Socket,
    error::SqlState,
    tls::MakeTlsConnect,
    types::{ToSql, Type, WrongType},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{
    config::Config,
    tls::postgres::{self as pg_tls, PgTls, SslMode},
};

mod embedded {
    refinery::embed_migrations!("../sql");
}

/// A Postgres failure, classified for the layers above.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection from the pool (Postgres down, pool exhausted).
    #[error("postgres pool: {0}")]
    Pool(#[from] PoolError),
    /// A statement failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// `DATABASE_URL` does not parse.
    #[error("invalid DATABASE_URL: {0}")]
    Url(String),
    /// Connecting failed: names the `sslmode` in force, since that is where a TLS failure
    /// (server without TLS, certificate refused) is fixed.
    #[error("postgres (sslmode={sslmode}): {}", with_causes(source))]
    Connect {
        /// The `sslmode` in force.
        sslmode: SslMode,
        /// Why connecting failed.
        source: tokio_postgres::Error,
    },
    /// A migration failed.
    #[error("migrations: {0}")]
    Migration(String),
    /// Concurrent writers did not settle in the rounds allowed.
    #[error("contention: {0}")]
    Contention(&'static str),
    /// A stored value this build cannot read (a state a newer release wrote, say): an error,
    /// never mapped to some other value.
    #[error("unreadable stored value: {0}")]
    Decode(tokio_postgres::Error),
    /// A stored value that reads but does not parse (a schedule's frequency, say).
    #[error("unreadable stored value: {0}")]
    Stored(String),
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
            Self::Url(_) | Self::Migration(_) | Self::Contention(_) | Self::Decode(_) | Self::Stored(_) => {
                false
            }
        }
    }

    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Postgres(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION))
    }
}

/// Session settings of every pooled connection.
///
/// The plan cache is left to Postgres (`plan_cache_mode=auto`): a statement whose generic plan
/// is right is written so that Postgres sees it (the claim: `queue/claim.sql`), and a statement
/// whose conditions vary is written once per combination (the export listing), never one
/// generic plan for every filter. JIT compilation is off: the service's statements are short
/// index lookups, and the cost estimates that trigger JIT (dashboard aggregates) cost more to
/// compile (140–190 ms each, measured) than to run.
pub const SESSION_OPTIONS: &str = "-c jit=off";

/// The service's pool on `config`'s database: [`pool`], or [`pool_behind_pooler`] when
/// `DATABASE_URL` is a transaction pooler.
pub fn service_pool(config: &Config, max_size: usize) -> Result<Pool, DbError> {
    match config.database_direct_url {
        None => pool(&config.database_url, max_size),
        Some(_) => pool_behind_pooler(&config.database_url, max_size),
    }
}

/// Builds the pool. Connections are made lazily; `wait_timeout`/`create_timeout` bound how long
/// a request waits when Postgres is down, so it gets a 503 quickly instead of hanging.
pub fn pool(url: &SecretString, max_size: usize) -> Result<Pool, DbError> {
    let (mut config, tls) = config(url)?;
    let options = match config.get_options() {
        Some(existing) => format!("{existing} {SESSION_OPTIONS}"),
        None => SESSION_OPTIONS.to_owned(),
    };
    config.options(options);
    build_pool(config, tls, max_size)
}

/// Builds the pool through a transaction pooler (PgBouncer or RDS Proxy in transaction mode):
/// each transaction may run on another server session, so the connections send no startup
/// options ([`SESSION_OPTIONS`] belong on the role: `ALTER ROLE … SET jit = off`), and from
/// now on this process reuses no named statement ([`Sql::query_cached`] runs unnamed).
pub fn pool_behind_pooler(url: &SecretString, max_size: usize) -> Result<Pool, DbError> {
    let (config, tls) = config(url)?;
    NAMED_STATEMENTS.store(false, Ordering::Relaxed);
    build_pool(config, tls, max_size)
}

fn build_pool(config: tokio_postgres::Config, tls: PgTls, max_size: usize) -> Result<Pool, DbError> {
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

/// Whether [`Sql::query_cached`] may keep a named statement on the connection and reuse it:
/// not once this process has built a pool behind a transaction pooler.
static NAMED_STATEMENTS: AtomicBool = AtomicBool::new(true);

/// What the service's SQL runs on: a pooled connection or a transaction on one.
///
/// Statements are sent unnamed, parsed, bound and run in one round trip
/// (`tokio_postgres::Client::query_typed`, each parameter declared as the type its Rust value
/// writes): nothing stays prepared on the server, so they work the same through a
/// transaction-pooling proxy, which may run each transaction on another server session, as on
/// Postgres itself, and take one round trip where a prepared statement takes two. Only
/// [`Sql::query_cached`] and [`Sql::execute_cached`] reuse a named statement and its plan
/// (the queue's hot statements), unless the process is behind a pooler.
pub trait Sql: Sync {
    /// The rows `sql` returns.
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send;

    /// The one row `sql` returns (an error unless exactly one).
    fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, tokio_postgres::Error>> + Send;

    /// The row `sql` returns, if any (an error for more than one).
    fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send;

    /// Runs `sql`; the number of rows it changed.
    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send;

    /// Runs statements without parameters (the simple query protocol).
    fn batch_execute(&self, sql: &str) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;

    /// Like [`Sql::query`], through a named statement kept on the connection, so that Postgres
    /// may reuse its plan; unnamed behind a pooler.
    fn query_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send;

    /// Like [`Sql::execute`], through a named statement as [`Sql::query_cached`].
    fn execute_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send;
}

/// A connection, or a transaction, that opens a transaction: a function whose changes must
/// commit together takes one. Given a transaction, it opens a savepoint, so a caller can make
/// those changes part of a larger transaction (an action and its audit row, say).
pub trait Begin: Sql + Send {
    /// A new transaction, or a savepoint in this one.
    fn begin(
        &mut self,
    ) -> impl Future<Output = Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error>> + Send;
}

impl Begin for Object {
    async fn begin(&mut self) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
        self.transaction().await
    }
}

impl Begin for deadpool_postgres::Transaction<'_> {
    async fn begin(&mut self) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
        self.transaction().await
    }
}

/// A pooled connection or a transaction: deadpool's statement cache on top of a tokio-postgres
/// client.
trait Pooled: deadpool_postgres::GenericClient + Send {
    type Client: tokio_postgres::GenericClient + Sync;
    fn client(&self) -> &Self::Client;
}

impl Pooled for Object {
    type Client = Client;
    fn client(&self) -> &Client {
        self
    }
}

impl<'a> Pooled for deadpool_postgres::Transaction<'a> {
    type Client = tokio_postgres::Transaction<'a>;
    fn client(&self) -> &tokio_postgres::Transaction<'a> {
        self
    }
}

impl<C: Pooled> Sql for C {
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.client().query_typed(sql, &typed(params)).await
    }

    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        self.client().query_typed_one(sql, &typed(params)).await
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        self.client().query_typed_opt(sql, &typed(params)).await
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error> {
        self.client().execute_typed(sql, &typed(params)).await
    }

    async fn batch_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client().batch_execute(sql).await
    }

    async fn query_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        if !NAMED_STATEMENTS.load(Ordering::Relaxed) {
            return Sql::query(self, sql, params).await;
        }
        let statement = self.prepare_cached(sql).await?;
        self.client().query(&statement, params).await
    }

    async fn execute_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        if !NAMED_STATEMENTS.load(Ordering::Relaxed) {
            return Sql::execute(self, sql, params).await;
        }
        let statement = self.prepare_cached(sql).await?;
        self.client().execute(&statement, params).await
    }
}

/// The types parameters are declared as: each the first of these its value writes (a string
/// as `text`, JSON as `jsonb`, an `i64` as `int8`, …); Postgres converts where a column is of
/// a neighbouring type (`varchar`, `name`).
const PARAMETER_TYPES: [Type; 30] = [
    Type::TEXT,
    Type::INT8,
    Type::INT4,
    Type::INT2,
    Type::BOOL,
    Type::FLOAT8,
    Type::FLOAT4,
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMP,
    Type::DATE,
    Type::TIME,
    Type::JSONB,
    Type::BYTEA,
    Type::INET,
    Type::OID,
    Type::CHAR,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::INT4_ARRAY,
    Type::INT2_ARRAY,
    Type::BOOL_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::UUID_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::TIMESTAMP_ARRAY,
    Type::DATE_ARRAY,
    Type::JSONB_ARRAY,
    Type::BYTEA_ARRAY,
    Type::INET_ARRAY,
];

/// Each parameter with the type it is declared as (see [`PARAMETER_TYPES`]); `unknown` (an
/// error when bound) for a value of none of them.
fn typed<'a>(params: &[&'a (dyn ToSql + Sync)]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    let mut scratch = bytes::BytesMut::new();
    params
        .iter()
        .map(|&param| {
            let declared = PARAMETER_TYPES.iter().find(|ty| {
                scratch.clear();
                // Any error but a refused type (a value out of range) is the bind's to report.
                param.to_sql_checked(ty, &mut scratch).map_or_else(|e| !e.is::<WrongType>(), |_| true)
            });
            (param, declared.cloned().unwrap_or(Type::UNKNOWN))
        })
        .collect()
}

/// `at` to the microsecond, as a `timestamptz` stores it (what is kept is what was stored).
pub fn to_micros(at: time::OffsetDateTime) -> time::OffsetDateTime {
    at.replace_nanosecond(at.microsecond() * 1000).expect("microseconds fit")
}

/// The session advisory locks the service takes: every key in one place, so two concerns can
/// never share one by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvisoryLock {
    /// Serialises migration runs (every binary migrates at start-up).
    Migrations,
    /// Elects the maintenance leader among the workers.
    MaintenanceLeader,
    /// Orders appends to the audit chain (held per transaction: `shared::audit`).
    AuditChain,
}

impl AdvisoryLock {
    /// The lock's key: eight ASCII letters read as a big-endian integer.
    pub fn key(self) -> i64 {
        match self {
            Self::Migrations => 0x5354_4d54_4d49_4752,        // "STMTMIGR"
            Self::MaintenanceLeader => 0x5354_4d54_4d41_494e, // "STMTMAIN"
            Self::AuditChain => 0x5354_4d54_4155_4454,        // "STMTAUDT"
        }
    }

    /// Takes the lock on this session if nobody holds it; `false` when another session does.
    pub async fn try_lock(self, session: &tokio_postgres::Client) -> Result<bool, DbError> {
        Ok(session.query_one("SELECT pg_try_advisory_lock($1)", &[&self.key()]).await?.get(0))
    }

    /// Gives the lock up.
    pub async fn unlock(self, session: &tokio_postgres::Client) -> Result<(), DbError> {
        session.execute("SELECT pg_advisory_unlock($1)", &[&self.key()]).await?;
        Ok(())
    }
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

/// Applies pending migrations over a dedicated connection, holding an advisory lock so the API
/// and any number of workers may all call this at start-up.
pub async fn migrate(url: &SecretString) -> Result<(), DbError> {
    let (mut client, connection) = connect(url).await?;
    let task = tokio::spawn(connection);
    client.execute("SELECT pg_advisory_lock($1)", &[&AdvisoryLock::Migrations.key()]).await?;
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

/// The newest migration applied to this database.
pub async fn schema_version(db: &impl Sql) -> Result<Option<i32>, DbError> {
    let row = db.query_one("SELECT max(version) FROM refinery_schema_history", &[]).await?;
    Ok(row.get(0))
}

/// When now is, by Postgres's clock (pages show ages relative to it).
pub async fn now(db: &impl Sql) -> Result<OffsetDateTime, DbError> {
    Ok(db.query_one("SELECT now()", &[]).await?.get(0))
}

/// A read-only transaction on one snapshot: reads composed from several modules (a dashboard
/// page) see the tables as they were at one instant.
pub async fn snapshot(db: &mut Object) -> Result<deadpool_postgres::Transaction<'_>, DbError> {
    Ok(db.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?)
}

/// A column read as its type, or [`DbError::Decode`] when the stored value is not one (an enum
/// state this build does not know).
pub(crate) fn decode<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    column: &str,
) -> Result<T, DbError> {
    row.try_get(column).map_err(DbError::Decode)
}

/// Declares an enum stored as text (a `text` column with a `CHECK` of its values): its `ALL`,
/// `as_str` and `parse`, `Display`, and `ToSql`/`FromSql`, so it round-trips the database and a
/// value this build does not know is an error when read, never some other value.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value of stored text; `None` for anything else.
            pub fn parse(raw: &str) -> Option<Self> {
                match raw {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::tokio_postgres::types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &::tokio_postgres::types::Type,
                out: &mut ::bytes::BytesMut,
            ) -> Result<::tokio_postgres::types::IsNull, Box<dyn ::std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &::tokio_postgres::types::Type) -> bool {
                <&str as ::tokio_postgres::types::ToSql>::accepts(ty)
            }

            ::tokio_postgres::types::to_sql_checked!();
        }

        impl<'a> ::tokio_postgres::types::FromSql<'a> for $name {
            fn from_sql(
                ty: &::tokio_postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn ::std::error::Error + Sync + Send>> {
                let text = <&str as ::tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
                Self::parse(text)
                    .ok_or_else(|| format!("{text:?} is not a known {}", stringify!($name)).into())
            }

            fn accepts(ty: &::tokio_postgres::types::Type) -> bool {
                <&str as ::tokio_postgres::types::FromSql>::accepts(ty)
            }
        }
    };
}
pub(crate) use text_enum;
