//! The audit trail (table `audit_log`): every administrative action — dashboard sign-in and
//! sign-out, API keys created, deactivated, reactivated, revoked or deleted, jobs retried or
//! cancelled, exports requested or cancelled through the API — with its actor, time, client
//! address, target and outcome.
//!
//! Rows are appended, never changed (the table refuses UPDATE, DELETE and TRUNCATE), and
//! chained by hash: row `n` stores the hash of row `n − 1` and its own,
//! `SHA-256(prev_hash ‖ canonical JSON of its content)` (see [`Entry::content`]), so an edit, a
//! deletion or an insertion anywhere breaks the chain from there on. [`verify`] walks it.
//! Appends take a transaction-level advisory lock, so the chain follows commit order; a
//! dashboard action is recorded in the transaction that performs it.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, format_description::FormatItem, macros::format_description};
use tokio_postgres::Row;

use crate::db::{AdvisoryLock, DbError, Sql};

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// A person signed in to the dashboard through single sign-on.
    Person,
    /// An admin API key signed in to the dashboard (break-glass use).
    BreakGlass,
    /// A client's API key, through the API.
    ApiKey,
    /// The service itself, or its command line run by someone with the host's access.
    System,
}

impl ActorKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::BreakGlass => "break_glass",
            Self::ApiKey => "api_key",
            Self::System => "system",
        }
    }
}

/// An actor: kind, a stable id (operator id, key id) and a name as it was at the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorKind,
    /// The operator's or key's id.
    pub id: String,
    /// The person's name (and e-mail), or the key's name and prefix.
    pub name: String,
}

impl Actor {
    /// Someone running the service's command line on this machine (as the OS user `USER`).
    pub fn command_line(command: &str) -> Self {
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "unknown".into());
        Self {
            kind: ActorKind::System,
            id: command.to_owned(),
            name: format!("{user}@{}", crate::workers::host()),
        }
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Allowed, but there was nothing to change.
    Unchanged,
    /// Its target does not exist.
    NotFound,
    /// Refused: the actor may not do this (or failed to authenticate).
    Denied,
    /// Allowed, but it failed.
    Failed,
}

impl Outcome {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Unchanged => "unchanged",
            Self::NotFound => "not_found",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// An action to record.
#[derive(Debug, Clone)]
pub struct Event {
    /// Who acted.
    pub actor: Actor,
    /// What was done, e.g. `api_key.create` (dotted, lower case).
    pub action: &'static str,
    /// What it was done to, e.g. `api_key:<id>`, `job:<id>`, `export:<id>`.
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The client's address, as the service determined it.
    pub client_addr: Option<String>,
    /// More about it: a JSON object (never a secret).
    pub details: serde_json::Value,
    /// When it happened (this process's clock, to the microsecond).
    pub occurred_at: OffsetDateTime,
}

impl Event {
    /// An event without details or client address.
    pub fn new(actor: Actor, action: &'static str, target: Option<String>, outcome: Outcome) -> Self {
        let occurred_at = crate::db::to_micros(OffsetDateTime::now_utc());
        Self {
            actor,
            action,
            target,
            outcome,
            client_addr: None,
            details: serde_json::json!({}),
            occurred_at,
        }
    }

    /// This event, from `client`.
    pub fn from_client(mut self, client: impl std::fmt::Display) -> Self {
        self.client_addr = Some(client.to_string());
        self
    }

    /// This event, with `details` (a JSON object).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it was appended (the database's clock, microseconds).
    pub at: OffsetDateTime,
    /// When the action happened (the handling process's clock, microseconds).
    pub occurred_at: OffsetDateTime,
    /// `person`, `break_glass`, `api_key` or `system`.
    pub actor_kind: String,
    /// The operator's or key's id.
    pub actor_id: String,
    /// The actor's name at the time.
    pub actor_name: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: Option<String>,
    /// How it ended.
    pub outcome: String,
    /// The client's address.
    pub client_addr: Option<String>,
    /// A JSON object, as stored.
    pub details: String,
    /// The previous row's hash (32 zero bytes for the first row).
    pub prev_hash: Vec<u8>,
    /// This row's hash.
    pub hash: Vec<u8>,
}

/// The first row's `prev_hash`.
pub const GENESIS: [u8; 32] = [0; 32];

/// `at` and `occurred_at` in the hashed content: RFC 3339 in UTC with exactly six fractional
/// digits.
const AT_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// The hashed content of a row: its fields but the hashes, as a JSON object with its keys in
/// lexicographic order, no whitespace, non-ASCII characters as UTF-8 (what Python's
/// `json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes).
#[derive(Serialize)]
struct Content<'a> {
    action: &'a str,
    actor_id: &'a str,
    actor_kind: &'a str,
    actor_name: &'a str,
    at: String,
    client_addr: Option<&'a str>,
    details: &'a str,
    occurred_at: String,
    outcome: &'a str,
    seq: i64,
    target: Option<&'a str>,
}

impl Entry {
    /// The canonical JSON text this row's hash covers.
    pub fn content(&self) -> String {
        let format = |t: OffsetDateTime| {
            t.to_offset(time::UtcOffset::UTC).format(AT_FORMAT).expect("a formattable timestamp")
        };
        let content = Content {
            action: &self.action,
            actor_id: &self.actor_id,
            actor_kind: &self.actor_kind,
            actor_name: &self.actor_name,
            at: format(self.at),
            client_addr: self.client_addr.as_deref(),
            details: &self.details,
            occurred_at: format(self.occurred_at),
            outcome: &self.outcome,
            seq: self.seq,
            target: self.target.as_deref(),
        };
        serde_json::to_string(&content).expect("strings serialise")
    }

    /// The hash this row must hold: `SHA-256(prev_hash ‖ content)`.
    pub fn expected_hash(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        hasher.update(&self.prev_hash);
        hasher.update(self.content().as_bytes());
        hasher.finalize().to_vec()
    }

    fn from_row(row: &Row) -> Self {
        Self {
            seq: row.get("seq"),
            at: row.get("at"),
            occurred_at: row.get("occurred_at"),
            actor_kind: row.get("actor_kind"),
            actor_id: row.get("actor_id"),
            actor_name: row.get("actor_name"),
            action: row.get("action"),
            target: row.get("target"),
            outcome: row.get("outcome"),
            client_addr: row.get("client_addr"),
            details: row.get("details"),
            prev_hash: row.get("prev_hash"),
            hash: row.get("hash"),
        }
    }
}

const COLUMNS: &str = "seq, at, occurred_at, actor_kind, actor_id, actor_name, action, target, outcome, client_addr, details, prev_hash, hash";

/// Appends `events`, in order, to the chain. `db` must be in a transaction: the chain's lock is
/// held until it commits (so record last, just before committing). Nothing is appended for
/// no events.
pub async fn record(db: &impl Sql, events: &[Event]) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    db.execute("SELECT pg_advisory_xact_lock($1)", &[&AdvisoryLock::AuditChain.key()]).await?;
    // Read after the lock: this statement's snapshot sees every append committed before it.
    let head = db
        .query_one(
            "SELECT clock_timestamp() AS now, current_setting('transaction_isolation') AS isolation,
                    (SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1) AS seq,
                    (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS hash",
            &[],
        )
        .await?;
    // Under a stronger isolation the snapshot predates the lock: the head read could be stale.
    if head.get::<_, String>("isolation") != "read committed" {
        return Err(DbError::Contention(
            "the audit trail is appended only under READ COMMITTED (the database's default_transaction_isolation is stronger)",
        ));
    }
    // Timestamps are stored to the microsecond: hash what is stored.
    let now: OffsetDateTime = head.get("now");
    let at = crate::db::to_micros(now);
    let last: i64 = head.get::<_, Option<i64>>("seq").unwrap_or(0);
    let mut prev_hash: Vec<u8> = head.get::<_, Option<Vec<u8>>>("hash").unwrap_or_else(|| GENESIS.to_vec());
    let mut entries = Vec::with_capacity(events.len());
    for (seq, event) in (last + 1..).zip(events) {
        let mut entry = Entry {
            seq,
            at,
            occurred_at: event.occurred_at,
            actor_kind: event.actor.kind.as_str().to_owned(),
            actor_id: event.actor.id.clone(),
            actor_name: event.actor.name.clone(),
            action: event.action.to_owned(),
            target: event.target.clone(),
            outcome: event.outcome.as_str().to_owned(),
            client_addr: event.client_addr.clone(),
            details: event.details.to_string(),
            prev_hash,
            hash: Vec::new(),
        };
        entry.hash = entry.expected_hash();
        prev_hash = entry.hash.clone();
        entries.push(entry);
    }
    let column = |f: fn(&Entry) -> String| entries.iter().map(f).collect::<Vec<_>>();
    let optional = |f: fn(&Entry) -> Option<String>| entries.iter().map(f).collect::<Vec<_>>();
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    let prev: Vec<Vec<u8>> = entries.iter().map(|e| e.prev_hash.clone()).collect();
    let hashes: Vec<Vec<u8>> = entries.iter().map(|e| e.hash.clone()).collect();
    db.execute(
        &format!(
            "INSERT INTO audit_log ({COLUMNS})
             SELECT seq, $2, occurred_at, actor_kind, actor_id, actor_name, action, target, outcome,
                    client_addr, details, prev_hash, hash
             FROM unnest($1::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::bytea[], $13::bytea[])
                  AS e(seq, occurred_at, actor_kind, actor_id, actor_name, action, target, outcome,
                       client_addr, details, prev_hash, hash)"
        ),
        &[
            &seqs,
            &at,
            &entries.iter().map(|e| e.occurred_at).collect::<Vec<_>>(),
            &column(|e| e.actor_kind.clone()),
            &column(|e| e.actor_id.clone()),
            &column(|e| e.actor_name.clone()),
            &column(|e| e.action.clone()),
            &optional(|e| e.target.clone()),
            &column(|e| e.outcome.clone()),
            &optional(|e| e.client_addr.clone()),
            &column(|e| e.details.clone()),
            &prev,
            &hashes,
        ],
    )
    .await?;
    Ok(())
}

/// Appends `events` in a transaction of their own (for an action that changed nothing in the
/// database, or was refused).
pub async fn record_alone(db: &mut deadpool_postgres::Object, events: &[Event]) -> Result<(), DbError> {
    let tx = db.transaction().await?;
    record(&tx, events).await?;
    tx.commit().await?;
    Ok(())
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every row holds: `rows` rows, the last one `head` (`None` for an empty log).
    Intact {
        /// Rows checked.
        rows: u64,
        /// The last row's sequence number and hash: keep them elsewhere to detect a later
        /// truncation of the chain's end.
        head: Option<(i64, Vec<u8>)>,
    },
    /// The chain breaks at row `seq`.
    Broken {
        /// The first row that does not hold (or the missing row's number).
        seq: i64,
        /// What is wrong with it.
        reason: String,
    },
}

/// Rows read per round trip while verifying.
const VERIFY_PAGE: i64 = 1000;

/// Walks the whole chain in order, in bounded memory: every `seq` follows the one before it,
/// every row names its predecessor's hash, every hash matches its content.
pub async fn verify(db: &impl Sql) -> Result<Verdict, DbError> {
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS.to_vec();
    let mut rows = 0;
    loop {
        let page = db
            .query(
                &format!("SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2"),
                &[&expected_seq, &VERIFY_PAGE],
            )
            .await?;
        let last_page = (page.len() as i64) < VERIFY_PAGE;
        for row in &page {
            let entry = Entry::from_row(row);
            if entry.seq != expected_seq {
                return Ok(Verdict::Broken {
                    seq: expected_seq,
                    reason: format!("row {expected_seq} is missing (the next row is {})", entry.seq),
                });
            }
            if entry.prev_hash != prev_hash {
                return Ok(Verdict::Broken {
                    seq: entry.seq,
                    reason: "its prev_hash is not the previous row's hash".into(),
                });
            }
            if entry.hash != entry.expected_hash() {
                return Ok(Verdict::Broken {
                    seq: entry.seq,
                    reason: "its content does not match its hash (the row was altered)".into(),
                });
            }
            prev_hash = entry.hash;
            expected_seq += 1;
            rows += 1;
        }
        if last_page {
            let head = (rows > 0).then(|| (expected_seq - 1, prev_hash));
            return Ok(Verdict::Intact { rows, head });
        }
    }
}

/// The chain's last row: its sequence number and hash (`None` while the trail is empty).
pub async fn head(db: &impl Sql) -> Result<Option<(i64, Vec<u8>)>, DbError> {
    let row = db.query_opt("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", &[]).await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The hash row `seq` holds, if there is such a row.
pub async fn hash_of(db: &impl Sql, seq: i64) -> Result<Option<Vec<u8>>, DbError> {
    Ok(db.query_opt("SELECT hash FROM audit_log WHERE seq = $1", &[&seq]).await?.map(|r| r.get(0)))
}

/// Which rows the Audit page shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// An actor's id, or part of their name (case-insensitive).
    pub actor: Option<String>,
    /// An action, exactly.
    pub action: Option<String>,
    /// Appended at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Appended before this time.
    pub to: Option<OffsetDateTime>,
    /// Rows before this sequence number (the next page, newest first).
    pub before: Option<i64>,
}

/// Up to `limit` rows matching `filter`, newest first.
pub async fn page(db: &impl Sql, filter: &Filter, limit: i64) -> Result<Vec<Entry>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM audit_log
                 WHERE ($1::text IS NULL OR actor_id = $1
                        OR actor_name ILIKE '%' || replace(replace(replace($1, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%')
                   AND ($2::text IS NULL OR action = $2)
                   AND ($3::timestamptz IS NULL OR at >= $3)
                   AND ($4::timestamptz IS NULL OR at < $4)
                   AND ($5::bigint IS NULL OR seq < $5)
                 ORDER BY seq DESC LIMIT $6"
            ),
            &[&filter.actor, &filter.action, &filter.from, &filter.to, &filter.before, &limit],
        )
        .await?;
    Ok(rows.iter().map(Entry::from_row).collect())
}

/// The actions recorded so far (for the Audit page's filter).
pub async fn actions(db: &impl Sql) -> Result<Vec<String>, DbError> {
    // A loose index scan: one index probe per distinct action, however long the log.
    let rows = db
        .query(
            "WITH RECURSIVE a AS (
                 (SELECT action FROM audit_log ORDER BY action LIMIT 1)
                 UNION ALL
                 SELECT (SELECT action FROM audit_log WHERE action > a.action ORDER BY action LIMIT 1)
                 FROM a WHERE a.action IS NOT NULL
             )
             SELECT action FROM a WHERE action IS NOT NULL",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            seq: 7,
            at: time::macros::datetime!(2026-11-30 08:01:02.000345 UTC),
            occurred_at: time::macros::datetime!(2026-11-30 08:01:01.5 UTC),
            actor_kind: "person".into(),
            actor_id: "a1".into(),
            actor_name: "Zoë \"Z\" <z@example.com>".into(),
            action: "api_key.create".into(),
            target: Some("api_key:k1".into()),
            outcome: "success".into(),
            client_addr: None,
            details: r#"{"role":"admin"}"#.into(),
            prev_hash: GENESIS.to_vec(),
            hash: Vec::new(),
        }
    }

    #[test]
    fn content_is_sorted_compact_json_with_microseconds() {
        assert_eq!(
            entry().content(),
            r#"{"action":"api_key.create","actor_id":"a1","actor_kind":"person","actor_name":"Zoë \"Z\" <z@example.com>","at":"2026-11-30T08:01:02.000345Z","client_addr":null,"details":"{\"role\":\"admin\"}","occurred_at":"2026-11-30T08:01:01.500000Z","outcome":"success","seq":7,"target":"api_key:k1"}"#
        );
    }

    #[test]
    fn any_change_changes_the_hash() {
        let original = entry().expected_hash();
        let mut changed = entry();
        changed.outcome = "denied".into();
        assert_ne!(changed.expected_hash(), original);
        let mut moved = entry();
        moved.prev_hash = vec![1; 32];
        assert_ne!(moved.expected_hash(), original);
    }
}
