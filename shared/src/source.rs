//! The read-only MySQL/MariaDB transactions database.
//!
//! The service connects as a user with SELECT only and streams rows with the text protocol,
//! which returns every value exactly as the server formats it (no float conversion). Each
//! export reads one consistent snapshot: a single statement is one on its own (InnoDB reads a
//! statement from one read view), several statements share a
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` ([`Statements`]). Either way the
//! session runs at REPEATABLE READ, whatever the server's default.

use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, prelude::Queryable};
use secrecy::{ExposeSecret, SecretString};

use mysql_async::consts::ColumnType;

use crate::{
    csv_out::ColumnKind,
    failure::FailureCode,
    tables::{TableRegistry, TableSpec},
    time_zones::StatementZone,
    tls::mysql::{self as mysql_tls, SslMode},
};

pub use mysql_async::{Column, Error as MysqlError, Row, Value};

/// TCP keepalive on source connections: a peer that vanished (host down, network cut) is noticed
/// by the kernel instead of leaving a read waiting for ever. A peer that is there but silent is
/// the caller's to time out.
const TCP_KEEPALIVE_MS: u32 = 15_000;

/// Why the source database could not serve an export.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `SOURCE_DATABASE_URL` does not parse.
    #[error("invalid SOURCE_DATABASE_URL: {0}")]
    Url(String),
    /// The server or the connection failed.
    #[error("source database: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// TLS to the source failed (no TLS on the server, certificate refused): names the
    /// `ssl-mode` in force, where it is fixed.
    #[error("source database (ssl-mode={ssl_mode}): {source}")]
    Tls {
        /// The `ssl-mode` in force.
        ssl_mode: SslMode,
        /// Why connecting failed.
        source: mysql_async::Error,
    },
    /// A configured table or column is not in the source's schema.
    #[error("table {table:?}: {problem}")]
    Schema {
        /// The configured table.
        table: String,
        /// What is missing.
        problem: String,
    },
    /// The replica lags its primary more than `SOURCE_MAX_LAG_SECS` (seconds).
    #[error("the source replica is {lag} s behind its primary (limit {limit} s)")]
    Lagging {
        /// Seconds behind.
        lag: u64,
        /// Seconds allowed.
        limit: u64,
    },
    #[error(
        "the source replica's replication is stopped or broken (it reports no lag); \
         exports wait until it replicates again"
    )]
    /// The replica does not replicate.
    ReplicationStopped,
    /// The replication status could not be read as expected.
    #[error("unexpected replication status from the source: {0}")]
    ReplicaStatus(&'static str),
}

/// Server errors that refuse a login: access denied for the user (1045), host not allowed
/// (1130), plugin-authenticated user refused (1698), password expired (1862), account locked
/// (3118 MySQL, 4151 MariaDB). Retrying does not help; fixing `SOURCE_DATABASE_URL` or the
/// account does.
const LOGIN_REFUSED_CODES: [u16; 6] = [1045, 1130, 1698, 1862, 3118, 4151];

impl SourceError {
    /// Configuration problems (a table or column that does not exist, a refused SELECT) cannot
    /// be fixed by retrying; connection problems can.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Mysql(mysql_async::Error::Server(e)) => {
                !(LOGIN_REFUSED_CODES.contains(&e.code)
                    // access denied, unknown database/column/table
                    || matches!(e.code, 1044 | 1049 | 1054 | 1142 | 1143 | 1146 | 1227))
            }
            Self::Mysql(_) | Self::Tls { .. } | Self::Lagging { .. } | Self::ReplicationStopped => true,
            Self::Url(_) | Self::Schema { .. } | Self::ReplicaStatus(_) => false,
        }
    }

    /// The failure class clients see ([`FailureCode`]); the error itself is for the log.
    pub fn failure_code(&self) -> FailureCode {
        match self {
            Self::Mysql(mysql_async::Error::Server(e)) => match e.code {
                code if LOGIN_REFUSED_CODES.contains(&code) => FailureCode::SourceAuthFailed,
                1044 | 1142 | 1143 | 1227 => FailureCode::SourceAccessDenied,
                1049 | 1054 | 1146 => FailureCode::SourceSchemaMismatch, // unknown database/column/table
                // too many connections, shutting down, max_user_connections, connection killed
                // or interrupted (1317, 1927, 4031: the server's idle or kill timeouts)
                1040 | 1053 | 1203 | 1317 | 1927 | 4031 => FailureCode::SourceUnavailable,
                _ => FailureCode::SourceQueryFailed,
            },
            Self::Mysql(mysql_async::Error::Url(_)) | Self::Url(_) => FailureCode::Internal,
            Self::Mysql(_) | Self::Tls { .. } => FailureCode::SourceUnavailable,
            Self::Schema { .. } => FailureCode::SourceSchemaMismatch,
            Self::Lagging { .. } => FailureCode::SourceLagging,
            Self::ReplicationStopped => FailureCode::SourceReplicationStopped,
            Self::ReplicaStatus(_) => FailureCode::SourceQueryFailed,
        }
    }

    /// The source user lacks a privilege (or the server refused it).
    pub fn is_access_denied(&self) -> bool {
        matches!(self, Self::Mysql(mysql_async::Error::Server(e)) if matches!(e.code, 1044 | 1045 | 1142 | 1227))
    }
}

/// The source's replication state, from `SHOW REPLICA STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// Not a replica (an empty status): nothing to lag behind.
    NotReplica,
    /// A replica this many seconds behind its primary (`Seconds_Behind_Master`/`_Source`).
    Behind(u64),
    /// A replica whose replication is stopped or broken: the lag is NULL.
    Stopped,
}

/// Read-only connections to the source: a small pool for checks, and a dedicated connection per
/// export.
#[derive(Debug, Clone)]
pub struct Source {
    pool: Pool,
    opts: Opts,
    ssl_mode: SslMode,
}

impl Source {
    /// A pool of at most `max_connections` to the source (made lazily).
    pub fn new(url: &SecretString, max_connections: usize) -> Result<Self, SourceError> {
        let (rest, tls) =
            mysql_tls::from_url(url.expose_secret()).map_err(|e| SourceError::Url(e.to_string()))?;
        let opts = Opts::from_url(&rest).map_err(|e| SourceError::Url(e.to_string()))?;
        let constraints = PoolConstraints::new(0, max_connections.max(1)).expect("0 <= max");
        // mysql_async switches a TCP connection to 127.0.0.1 over to the server's Unix socket by
        // default; streaming through it measured ~35 % slower than TCP here, so stay on what the
        // URL says (a `socket=` URL parameter still selects a socket explicitly).
        let opts: Opts = OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            .ssl_opts(tls.ssl_opts)
            .tcp_keepalive(Some(TCP_KEEPALIVE_MS))
            .pool_opts(PoolOpts::default().with_constraints(constraints))
            .into();
        Ok(Self { pool: Pool::new(opts.clone()), opts, ssl_mode: tls.mode })
    }

    /// A failed connection attempt. With TLS on, a failure of the connection itself names the
    /// `ssl-mode` in force (a refused certificate surfaces as an I/O error from mysql_async).
    fn connect_error(&self, e: mysql_async::Error) -> SourceError {
        use mysql_async::{DriverError, Error};
        match e {
            Error::Io(_) | Error::Driver(DriverError::NoClientSslFlagFromServer)
                if self.ssl_mode != SslMode::Disabled =>
            {
                SourceError::Tls { ssl_mode: self.ssl_mode, source: e }
            }
            e => SourceError::Mysql(e),
        }
    }

    /// A connection of its own for one export. Not pooled: an export that is cancelled or
    /// stalls mid-result closes it ([`Source::discard`]) instead of handing a connection with
    /// half a result set back to a pool, which would read the rest of it first.
    pub async fn connect(&self) -> Result<Conn, SourceError> {
        let mut conn = Conn::new(self.opts.clone()).await.map_err(|e| self.connect_error(e))?;
        // The server drops a client that takes no rows for net_write_timeout (60 s by default);
        // while storage is out, the export waits out the S3 retry budget (up to 5 minutes)
        // before it reads on. The export's own stall timeout guards the other direction.
        conn.query_drop("SET SESSION net_write_timeout = 600").await?;
        // Whatever the server's default: under READ UNCOMMITTED a statement reads rows as other
        // transactions write them, and `WITH CONSISTENT SNAPSHOT` holds statements to one
        // snapshot only under REPEATABLE READ (under READ COMMITTED each sees its own moment).
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
        // TIMESTAMP values are read in UTC, whatever the server's zone: files carry no zone, and
        // a statement's period bounds and dates are worked out from UTC (DATETIME values are in
        // the table's `source_time_zone`).
        conn.query_drop("SET SESSION time_zone = '+00:00'").await?;
        Ok(conn)
    }

    /// Closes a connection whose result was abandoned (cancelled, stalled, failed) without
    /// reading the rest of it: the server stops sending when the socket closes. mysql_async's
    /// `disconnect` would first drain the pending result (a whole export, or for ever from a
    /// silent peer); it marks the connection closed before its first read, so it gets a moment
    /// for whatever is already buffered and is then dropped, which closes the socket.
    pub async fn discard(conn: Conn) {
        let _ = tokio::time::timeout(Duration::from_millis(100), conn.disconnect()).await;
    }

    /// Prepares `conn` (from [`Source::connect`]) to read one consistent snapshot with
    /// `statements`, and reads the source's replication position: what the snapshot was taken
    /// against. With `max_lag` (seconds), first refuses, retryably, a replica that lags more
    /// than that or whose replication is stopped ([`SourceError::Lagging`],
    /// [`SourceError::ReplicationStopped`]). End the read with [`Snapshot::end`], or
    /// [`Source::discard`] the connection.
    pub async fn snapshot_with_basis(
        &self,
        conn: &mut Conn,
        max_lag: Option<u64>,
        statements: Statements,
    ) -> Result<Snapshot, SourceError> {
        let lag_seconds = match max_lag {
            None => None,
            // On the export's own connection: behind a load balancer, another connection may
            // reach another replica.
            Some(limit) => Some(match replication_on(conn).await? {
                Replication::NotReplica => 0,
                Replication::Behind(lag) if lag <= limit => lag,
                Replication::Behind(lag) => return Err(SourceError::Lagging { lag, limit }),
                Replication::Stopped => return Err(SourceError::ReplicationStopped),
            }),
        };
        let transaction = statements == Statements::Several;
        if transaction {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await?;
        }
        let position = replication_position(conn).await?;
        Ok(Snapshot { lag_seconds, position, transaction })
    }

    /// The source's replication state. Needs a monitoring privilege: `REPLICA MONITOR` (alias
    /// `SLAVE MONITOR`) on MariaDB, `REPLICATION CLIENT` on MySQL.
    pub async fn replication(&self) -> Result<Replication, SourceError> {
        replication_on(&mut self.pool.get_conn().await?).await
    }

    /// Whether the source answers.
    pub async fn ping(&self) -> Result<(), SourceError> {
        let mut conn = self.pool.get_conn().await?;
        conn.ping().await?;
        Ok(())
    }

    /// Checks every configured table and column exists and is readable.
    pub async fn validate(&self, tables: &TableRegistry) -> Result<(), SourceError> {
        let mut conn = self.pool.get_conn().await?;
        for spec in tables.iter() {
            let mut needed: Vec<&str> = spec.columns.iter().map(String::as_str).collect();
            needed.extend([spec.account_column.as_str(), spec.date_column.as_str(), spec.id_column.as_str()]);
            let mut reads = vec![(spec.source_table(), needed)];
            if let Some(mapping) = &spec.statement {
                reads.extend(mapping.source_reads(spec));
            }
            for (table, columns) in reads {
                let sql = format!(
                    "SELECT {} FROM `{table}` WHERE 1 = 0",
                    columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "),
                );
                conn.query_drop(sql).await.map_err(|e| match e {
                    mysql_async::Error::Server(server) => {
                        SourceError::Schema { table: spec.name.clone(), problem: server.message }
                    }
                    other => SourceError::Mysql(other),
                })?;
            }
            if export_index(&mut conn, spec).await?.is_none() {
                tracing::warn!(
                    table = spec.name,
                    "no usable index on the source table starts with ({}, {}): each export may scan \
                     more rows than it exports and sort them before its first row; add an index on \
                     ({0}, {1}, {2}) (to a view's base table, for a view)",
                    spec.account_column,
                    spec.date_column,
                    spec.id_column,
                );
            }
        }
        Ok(())
    }

    /// Closes the pool's connections.
    pub async fn disconnect(self) {
        let _ = self.pool.disconnect().await;
    }
}

/// The state of every replication channel: the worst one counts.
fn replication_of(rows: &[Row]) -> Result<Replication, SourceError> {
    let mut state = Replication::NotReplica;
    for row in rows {
        let lag = row
            .get_opt::<Option<u64>, _>("Seconds_Behind_Source")
            .or_else(|| row.get_opt::<Option<u64>, _>("Seconds_Behind_Master"))
            .ok_or(SourceError::ReplicaStatus("no Seconds_Behind_Master column"))?
            .map_err(|_| SourceError::ReplicaStatus("Seconds_Behind_Master is not a number"))?;
        state = match (state, lag) {
            (_, None) | (Replication::Stopped, _) => Replication::Stopped,
            (Replication::Behind(worst), Some(lag)) => Replication::Behind(worst.max(lag)),
            (Replication::NotReplica, Some(lag)) => Replication::Behind(lag),
        };
    }
    Ok(state)
}

/// The replication state of the server `conn` is connected to.
async fn replication_on(conn: &mut Conn) -> Result<Replication, SourceError> {
    let rows: Vec<Row> = match conn.query("SHOW REPLICA STATUS").await {
        Ok(rows) => rows,
        // A syntax error: a server older than MariaDB 10.5 or MySQL 8.0.22.
        Err(mysql_async::Error::Server(e)) if e.code == 1064 => conn.query("SHOW SLAVE STATUS").await?,
        Err(e) => return Err(e.into()),
    };
    replication_of(&rows)
}

/// How many statements one export reads its snapshot with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// One statement: consistent on its own, so no transaction is opened (at REPEATABLE READ
    /// and READ COMMITTED alike, InnoDB reads a statement from the read view it opens when the
    /// statement starts). A row committed after that is not in its result.
    One,
    /// Several statements (an aggregate before the rows, say): they share one
    /// `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`, opened before the first.
    Several,
}

/// A consistent read of the source, and what it was taken against.
pub struct Snapshot {
    /// The replica's lag behind its primary, checked just before the snapshot was opened
    /// (`None`: not checked).
    pub lag_seconds: Option<u64>,
    /// The source's GTID position (`None`: the source has none). For a single statement, read
    /// just before it is sent: its snapshot holds at least these transactions. For several,
    /// read just after their transaction opened: the snapshot holds at most these.
    pub position: Option<String>,
    /// Whether a transaction holds the snapshot ([`Statements::Several`]).
    transaction: bool,
}

impl Snapshot {
    /// Ends the read: commits the snapshot's transaction, if there is one.
    pub async fn end(&self, conn: &mut Conn) -> Result<(), SourceError> {
        if self.transaction {
            conn.query_drop("COMMIT").await?;
        }
        Ok(())
    }
}

/// The index an export of `spec` reads through, named in its statement (`FORCE INDEX`): a
/// usable B-tree index whose first columns are the account and the date column (whole columns,
/// not prefixes). Preferred, in order: one that goes on with the id column in the date's
/// direction (it orders ties without a sort), the primary key (no lookups), the narrowest.
/// Through it the server reads exactly the statement's range, already in the file's order.
///
/// Left to itself, the optimizer reads a large account through `ref` on the account alone: it
/// scans every entry of the account from its first date and filters the dates (three million
/// entries scanned for a million rows exported, measured), or it picks a full scan and sorts
/// the whole result before sending the first row. `None`: there is no such index (or the table
/// is a view, which has none).
pub async fn export_index(conn: &mut Conn, spec: &TableSpec) -> Result<Option<String>, SourceError> {
    let rows: Vec<Row> = conn.query(format!("SHOW INDEX FROM `{}`", spec.source_table())).await?;
    let columns = rows.iter().filter_map(IndexColumn::from_row).collect::<Vec<_>>();
    Ok(pick_export_index(&columns, spec))
}

/// One line of `SHOW INDEX`: a column of an index, at its position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexColumn {
    index: String,
    position: u32,
    /// `None`: an expression, not a column (MySQL functional key parts).
    column: Option<String>,
    /// Only a prefix of the column is indexed: the index neither bounds nor orders by it.
    prefix: bool,
    /// Descending (`Collation` `D`).
    descending: bool,
    /// A B-tree the optimizer may use: not ignored (MariaDB) nor invisible (MySQL), and not a
    /// hash (MariaDB makes a long UNIQUE key a HASH index, which cannot read a range in order).
    usable: bool,
}

impl IndexColumn {
    fn from_row(row: &Row) -> Option<Self> {
        let text = |name: &str| row.get_opt::<Option<String>, _>(name).and_then(Result::ok).flatten();
        let is = |name: &str, value: &str| text(name).is_some_and(|v| v.eq_ignore_ascii_case(value));
        Some(Self {
            index: text("Key_name")?,
            position: row.get_opt::<u32, _>("Seq_in_index")?.ok()?,
            column: text("Column_name"),
            prefix: text("Sub_part").is_some(),
            descending: is("Collation", "D"),
            usable: is("Index_type", "BTREE")
                && text("Ignored").is_none_or(|v| v.eq_ignore_ascii_case("NO"))
                && text("Visible").is_none_or(|v| v.eq_ignore_ascii_case("YES")),
        })
    }
}

fn pick_export_index(columns: &[IndexColumn], spec: &TableSpec) -> Option<String> {
    let at = |index: &str, position: u32| columns.iter().find(|c| c.index == index && c.position == position);
    let is = |column: Option<&IndexColumn>, name: &str| {
        column.is_some_and(|c| {
            c.usable && !c.prefix && c.column.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    };
    let mut names: Vec<&str> = columns.iter().map(|c| c.index.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter(|name| is(at(name, 1), &spec.account_column) && is(at(name, 2), &spec.date_column))
        .min_by_key(|name| {
            let date_descending = at(name, 2).is_some_and(|c| c.descending);
            let goes_on_with_id = is(at(name, 3), &spec.id_column)
                && at(name, 3).is_some_and(|c| c.descending == date_descending);
            let width = columns.iter().filter(|c| c.index == *name).count();
            (!goes_on_with_id, *name != "PRIMARY", width, *name)
        })
        .map(str::to_owned)
}

/// The zones `columns` of `spec`'s table hold wall-clock times in: `None` for a DATE column
/// (see [`crate::ledger::Dates::column_zone`]), from the metadata of a query that reads no row.
/// When a statement in `zone` could not tell them apart (it and the table's DATETIMEs are UTC,
/// as TIMESTAMPs are read), nothing is asked and every column is `None`: an export in the
/// default zones costs no round trip.
pub async fn column_zones(
    conn: &mut Conn,
    spec: &TableSpec,
    columns: &[&str],
    zone: &StatementZone,
) -> Result<Vec<Option<StatementZone>>, SourceError> {
    let table_zone = spec.source_zone();
    if zone.is_utc() && table_zone.is_utc() {
        return Ok(vec![None; columns.len()]);
    }
    let list: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
    let sql = format!("SELECT {} FROM `{}` WHERE 1 = 0", list.join(", "), spec.source_table());
    let result = conn.query_iter(sql).await?;
    let zones = result
        .columns_ref()
        .iter()
        .map(|c| crate::ledger::Dates::column_zone(c.column_type(), &table_zone))
        .collect();
    result.drop_result().await?;
    Ok(zones)
}

/// The executed GTID set: `@@gtid_current_pos` on MariaDB, `@@gtid_executed` on MySQL. `None`
/// when the server has neither or has executed no GTID transaction yet. Read on the export's
/// own connection, next to its snapshot ([`Snapshot::position`] says which side).
async fn replication_position(conn: &mut Conn) -> Result<Option<String>, SourceError> {
    for sql in ["SELECT @@gtid_current_pos", "SELECT @@gtid_executed"] {
        match conn.query_first::<Option<String>, _>(sql).await {
            Ok(value) => {
                return Ok(value.flatten().map(|v| v.trim().replace('\n', "")).filter(|v| !v.is_empty()));
            }
            // Unknown system variable (the other flavour), or not allowed: try the next one.
            Err(mysql_async::Error::Server(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// A value that did not arrive through the text protocol as bytes.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("value did not arrive as text")]
pub struct NotText;

/// A row value's bytes, `None` for NULL. The text protocol yields bytes for every non-NULL
/// value; anything else is a protocol surprise the caller must refuse rather than guess at.
pub fn text_value(value: &Value) -> Result<Option<&[u8]>, NotText> {
    match value {
        Value::NULL => Ok(None),
        Value::Bytes(bytes) => Ok(Some(bytes)),
        _ => Err(NotText),
    }
}

/// How each result column is written to CSV, from the result set's metadata. Every column of
/// the string family is text to the formula guard, whatever its character set: a BINARY,
/// VARBINARY or BLOB column (MySQL's `binary` character set) often holds text in older schemas,
/// and a spreadsheet runs `=cmd|…` from it just the same.
pub fn column_kinds(columns: &[Column]) -> Vec<ColumnKind> {
    columns
        .iter()
        .map(|c| match c.column_type() {
            ColumnType::MYSQL_TYPE_DATETIME
            | ColumnType::MYSQL_TYPE_DATETIME2
            | ColumnType::MYSQL_TYPE_TIMESTAMP
            | ColumnType::MYSQL_TYPE_TIMESTAMP2 => ColumnKind::DateTime,
            ColumnType::MYSQL_TYPE_VARCHAR
            | ColumnType::MYSQL_TYPE_VAR_STRING
            | ColumnType::MYSQL_TYPE_STRING
            | ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB
            | ColumnType::MYSQL_TYPE_BLOB
            | ColumnType::MYSQL_TYPE_ENUM
            | ColumnType::MYSQL_TYPE_SET
            | ColumnType::MYSQL_TYPE_JSON => ColumnKind::Text,
            _ => ColumnKind::Verbatim,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> TableSpec {
        TableSpec {
            name: "ledger".into(),
            source_table: None,
            account_column: "account".into(),
            date_column: "value_date".into(),
            id_column: "id".into(),
            columns: vec!["id".into()],
            source_time_zone: None,
            statement: None,
        }
    }

    /// `SHOW INDEX` lines: (index, columns in order); a column written `name(8)` is a prefix,
    /// `name DESC` descending; an index named `hash…` is a HASH index.
    fn indexes(spec: &[(&str, &[&str])]) -> Vec<IndexColumn> {
        spec.iter()
            .flat_map(|(index, columns)| {
                columns.iter().enumerate().map(|(i, column)| {
                    let name = column.trim_end_matches(" DESC").trim_end_matches("(8)");
                    IndexColumn {
                        index: (*index).into(),
                        position: i as u32 + 1,
                        column: Some(name.into()),
                        prefix: column.ends_with("(8)"),
                        descending: column.ends_with(" DESC"),
                        usable: !index.starts_with("hash"),
                    }
                })
            })
            .collect()
    }

    #[test]
    fn the_export_index_starts_with_the_account_and_the_date() {
        let pick = |spec: &[(&str, &[&str])]| pick_export_index(&indexes(spec), &ledger());
        assert_eq!(pick(&[("PRIMARY", &["id"]), ("by_account", &["account"])]), None);
        assert_eq!(pick(&[("by_date", &["value_date", "account"])]), None, "order matters");
        assert_eq!(
            pick(&[("wide", &["account", "value_date", "amount"]), ("narrow", &["account", "value_date"])])
                .as_deref(),
            Some("narrow")
        );
        assert_eq!(
            pick(&[("a", &["account", "value_date"]), ("b", &["account", "value_date", "id", "amount"])])
                .as_deref(),
            Some("b"),
            "one that goes on with the id orders ties without a sort"
        );
        assert_eq!(
            pick(&[
                ("a_key", &["account", "value_date", "id"]),
                ("PRIMARY", &["account", "value_date", "id"])
            ])
            .as_deref(),
            Some("PRIMARY"),
            "the primary key reads rows without lookups"
        );
        assert_eq!(
            pick(&[("PRIMARY", &["ACCOUNT", "Value_Date", "id"])]).as_deref(),
            Some("PRIMARY"),
            "names are case-blind"
        );
        assert_eq!(
            pick(&[("prefix", &["account(8)", "value_date"])]),
            None,
            "a prefix neither bounds nor orders"
        );
        assert_eq!(
            pick(&[
                ("hash_unique", &["account", "value_date", "id"]),
                ("by_day", &["account", "value_date", "booked_at"])
            ])
            .as_deref(),
            Some("by_day"),
            "a HASH index (MariaDB's long UNIQUE) reads no range"
        );
        assert_eq!(
            pick(&[
                ("a_mixed", &["account", "value_date", "id DESC"]),
                ("b_plain", &["account", "value_date"])
            ])
            .as_deref(),
            Some("b_plain"),
            "an id in the other direction than the date orders nothing"
        );
        assert_eq!(
            pick(&[
                ("a_desc", &["account", "value_date DESC", "id DESC"]),
                ("b_plain", &["account", "value_date"])
            ])
            .as_deref(),
            Some("a_desc"),
            "read backwards, an all-descending index orders ties"
        );
        let mut ignored = indexes(&[("ignored", &["account", "value_date"])]);
        ignored.iter_mut().for_each(|c| c.usable = false);
        assert_eq!(pick_export_index(&ignored, &ledger()), None);
    }
}
