//! Export records (table `exports`): creation with deduplication, status, results, and the
//! job kind that produces them ([`ExportStatement`]). All SQL on `exports` lives here and in the
//! submodules: [`attempt`] (the worker's fenced writes) and [`stats`] (analytics).
//!
//! Deduplication is a partial unique index on `request_hash` over the live exports
//! (`LIVE_SLOT`): concurrent identical requests race on the index, never on a
//! check-then-insert. Worker writes are fenced by the job's attempt token.

pub mod attempt;
mod facts;
pub mod stats;

use std::time::Duration;

use crate::db::{Begin, Sql};
use deadpool_postgres::Object;
use time::{Date, OffsetDateTime};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

pub use self::attempt::{
    Attempt, ExportResult, SnapshotBasis, assign_statement_number, complete, fail, record_failure_detail,
    record_progress, record_snapshot_basis, retry_later, start,
};
pub use self::facts::{CurrencyStatement, EntryTotals, StatementFacts};
use crate::{
    db::{DbError, decode, text_enum},
    failure::FailureCode,
    metrics::Metrics,
    queue::{self, JobKind},
    requesters,
    schedules::store::{self as schedules, ScheduledRun},
    statement::StatementRequest,
};

text_enum! {
    /// Export states: `PENDING` (queued, or waiting to retry after a failed attempt: `error` says
    /// why) → `PROCESSING` → `COMPLETED` (`file_url` and the file's facts) or `FAILED` (`error`).
    /// `CANCELLED`: cancelled while pending or processing (`error_code` `cancelled`, or
    /// `cancelled_by_operator` from the dashboard, with its `error`). `EXPIRED`: a completed
    /// export whose file was deleted at the end of its retention, or found missing from storage.
    #[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
    #[cfg_attr(feature = "openapi", oai(rename = "Status", rename_all = "SCREAMING_SNAKE_CASE"))]
    pub enum ExportStatus {
        /// Waiting for a worker (also while a failed attempt waits for its retry).
        Pending = "PENDING",
        /// A worker is producing the file.
        Processing = "PROCESSING",
        /// The file is ready.
        Completed = "COMPLETED",
        /// No attempt can (or may any more) produce it.
        Failed = "FAILED",
        /// Cancelled by its last requester or an operator.
        Cancelled = "CANCELLED",
        /// Its file is gone: past retention, or lost from storage.
        Expired = "EXPIRED",
    }
}

impl ExportStatus {
    /// Still to finish: pending or processing.
    pub fn is_outstanding(self) -> bool {
        matches!(self, Self::Pending | Self::Processing)
    }

    /// The `status` label of the finished-exports counter (`completed`, `failed`, `cancelled`).
    fn metric_label(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Counts an export that just reached this (finished) status. Called once, by the write that
    /// made the transition.
    fn count_finished(self, metrics: &Metrics) {
        metrics.exports_finished.add(1, &[opentelemetry::KeyValue::new("status", self.metric_label())]);
    }
}

/// The job that produces an export: stream its rows into a file. Enqueued with the export, in
/// the same transaction; run by the worker.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExportStatement {
    /// The export to produce.
    pub export_id: Uuid,
}

impl JobKind for ExportStatement {
    const KIND: &'static str = "export_statement";
}

/// One export as stored.
#[derive(Debug, Clone)]
pub struct Export {
    /// Its reference id.
    pub id: Uuid,
    /// The key that created it (`None`: deleted since, or created without a key).
    pub api_key_id: Option<Uuid>,
    /// The account whose statement it is.
    pub account_id: String,
    /// The configured table it reads.
    pub table_name: String,
    /// First day, inclusive.
    pub date_from: Date,
    /// Last day, inclusive.
    pub date_to: Date,
    /// `csv` or `csv.gz`.
    pub format: String,
    /// Where it is in its life.
    pub status: ExportStatus,
    /// The job that produces it.
    pub job_id: Option<i64>,
    /// Its file in storage (COMPLETED).
    pub file_key: Option<String>,
    /// File size in bytes.
    pub file_size: Option<i64>,
    /// Data rows in the file.
    pub row_count: Option<i64>,
    /// Rows written so far (progress).
    pub rows_exported: i64,
    /// Hex SHA-256 of the file.
    pub sha256: Option<String>,
    /// Why the export failed (FAILED), was cancelled, or why its last attempt failed (PENDING);
    /// see [`FailureCode`]. The cause is in the worker's log only.
    pub failure: Option<FailureCode>,
    /// When it was requested.
    pub created_at: OffsetDateTime,
    /// When its source snapshot was taken.
    pub snapshot_at: Option<OffsetDateTime>,
    /// When its latest attempt started.
    pub started_at: Option<OffsetDateTime>,
    /// When it completed, failed or was cancelled.
    pub completed_at: Option<OffsetDateTime>,
    /// When its file is deleted (retention).
    pub expires_at: Option<OffsetDateTime>,
    /// When the API found the COMPLETED export's file missing from storage (the export is
    /// EXPIRED since then).
    pub file_lost_at: Option<OffsetDateTime>,
    /// The source replica's lag behind its primary when the snapshot was taken, in seconds
    /// (`None`: not checked).
    pub snapshot_lag_seconds: Option<i64>,
    /// The source's replication position read inside the snapshot (a GTID set), if it has one.
    pub snapshot_position: Option<String>,
    /// Download links handed out so far (advanced in batches: see [`crate::downloads`]).
    pub download_links_issued: i64,
    /// Responses of the file endpoint that sent file bytes (200 and 206), likewise.
    pub downloads: i64,
    /// The statement's time zone (IANA name): its days are days there.
    pub time_zone: String,
    /// The statement's number in its account's sequence (bank formats, once started).
    pub statement_number: Option<i64>,
    /// What the completed statement file states: its number, where its balances come from,
    /// and each currency's balances and totals.
    pub statement: Option<StatementFacts>,
    /// A client-safe sentence about the data behind a failure (the currencies found, the
    /// balances that do not add up).
    pub error_detail: Option<String>,
}

const COLUMNS: &str = "id, api_key_id, account_id, table_name, date_from, date_to, format, status, job_id, \
    file_key, file_size, row_count, rows_exported, sha256, error, error_code, created_at, snapshot_at, started_at, \
    completed_at, expires_at, file_lost_at, snapshot_lag_seconds, snapshot_position, download_links_issued, downloads, \
    time_zone, statement_number, statement, error_detail";

/// The failure an export row records, for the states that have one (FAILED, CANCELLED, and
/// PENDING after a failed attempt): its code, or [`FailureCode::Unclassified`] when `error`
/// holds text, which only a release from before codes writes (V7 cleared the column; this one
/// never writes it), and which is newer than any code beside it during a rolling upgrade.
fn stored_failure(
    status: ExportStatus,
    code: Option<&str>,
    legacy_text: Option<&str>,
) -> Option<FailureCode> {
    if !matches!(status, ExportStatus::Pending | ExportStatus::Failed | ExportStatus::Cancelled) {
        return None;
    }
    match (code, legacy_text) {
        (_, Some(_)) => Some(FailureCode::Unclassified),
        (Some(code), None) => Some(FailureCode::from_stored(code)),
        (None, None) => None,
    }
}

impl Export {
    /// An export row; a status this build does not know is an error ([`DbError::Decode`]).
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, DbError> {
        let status = decode(row, "status")?;
        Ok(Self {
            id: row.get("id"),
            api_key_id: row.get("api_key_id"),
            account_id: row.get("account_id"),
            table_name: row.get("table_name"),
            date_from: row.get("date_from"),
            date_to: row.get("date_to"),
            format: row.get("format"),
            status,
            job_id: row.get("job_id"),
            file_key: row.get("file_key"),
            file_size: row.get("file_size"),
            row_count: row.get("row_count"),
            rows_exported: row.get("rows_exported"),
            sha256: row.get("sha256"),
            failure: stored_failure(status, row.get("error_code"), row.get("error")),
            created_at: row.get("created_at"),
            snapshot_at: row.get("snapshot_at"),
            started_at: row.get("started_at"),
            completed_at: row.get("completed_at"),
            expires_at: row.get("expires_at"),
            file_lost_at: row.get("file_lost_at"),
            snapshot_lag_seconds: row.get("snapshot_lag_seconds"),
            snapshot_position: row.get("snapshot_position"),
            download_links_issued: row.get("download_links_issued"),
            downloads: row.get("downloads"),
            time_zone: row.get("time_zone"),
            statement_number: row.get("statement_number"),
            statement: row
                .try_get::<_, Option<tokio_postgres::types::Json<StatementFacts>>>("statement")?
                .map(|facts| facts.0),
            error_detail: row.get("error_detail"),
        })
    }

    /// Several export rows (see [`Export::from_row`]).
    fn from_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<Self>, DbError> {
        rows.iter().map(Self::from_row).collect()
    }

    /// An optional export row (see [`Export::from_row`]).
    fn from_opt(row: Option<&tokio_postgres::Row>) -> Result<Option<Self>, DbError> {
        row.map(Self::from_row).transpose()
    }
}

/// The outcome of asking for a statement.
#[derive(Debug, Clone)]
pub struct Requested {
    /// The export the request gets.
    pub export: Export,
    /// An identical live export already existed and is returned instead of a new one.
    pub reused: bool,
    /// The requester's row was written by this call (a new or re-attached requester). When
    /// `false` on a reused export, the key had asked before: the caller adds the repeat to its
    /// batch ([`requesters::record_repeats`]).
    pub recorded: bool,
}

/// The key asking for an export, and how many outstanding exports it may have.
#[derive(Debug, Clone)]
pub struct RequestedBy {
    /// The asking key.
    pub api_key_id: Uuid,
    /// Most exports created by this key that may be pending or processing at once; a request
    /// that would create one more is refused (a dedup hit is not: it creates no work).
    pub max_outstanding: i64,
    /// The schedule's run the key asks for, linked to the export in the transaction that
    /// creates or attaches it.
    pub schedule: Option<ScheduledRun>,
}

/// Why an export was not requested.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A new export would pass the key's cap on outstanding exports.
    #[error("the key already has {limit} exports pending or processing")]
    TooManyOutstanding {
        /// The cap.
        limit: i64,
    },
    /// The schedule's run is linked to another export already: nothing was created.
    #[error("the scheduled run has its export already")]
    RunTaken,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for RequestError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// An export that is still to finish, on `exports`: the predicate of the
/// `exports_outstanding_by_key` index (V8).
const OUTSTANDING: &str = "status IN ('PENDING', 'PROCESSING')";

/// An export that holds its request's deduplication slot: the predicate of the
/// `exports_dedup_slot` unique index (V1), written once. `ON CONFLICT … WHERE` must repeat it
/// for Postgres to infer the index; every read of "the live export" uses it too.
const LIVE_SLOT: &str = "superseded_at IS NULL AND status IN ('PENDING', 'PROCESSING', 'COMPLETED')";

/// When a completed export may be handed out again instead of a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReusePolicy {
    /// A completed export of a period whose books were not yet closed at its snapshot is
    /// reused only this long after the snapshot.
    pub freshness: std::time::Duration,
    /// A period's books are closed once its last day is at least this many days before the
    /// snapshot's day in the statement's time zone; such an export is reused for as long as it lives.
    pub books_closed_after_days: i32,
}

/// A completed export that may no longer be reused: its period's books were not closed at its
/// snapshot (`date_to` fewer than `$3` days before the snapshot's UTC day) and the snapshot is
/// older than the freshness window (`$2` seconds). The snapshot's day is its day in the
/// statement's time zone. The one statement of this rule: the reuse
/// read and the supersede write both use it.
const STALE_COMPLETED: &str = "status = 'COMPLETED'
    AND (snapshot_at AT TIME ZONE time_zone)::date - date_to < $3::int
    AND snapshot_at < now() - make_interval(secs => $2)";

/// The live export for request hash `$1` that may be reused: pending, processing, or
/// completed and not [`STALE_COMPLETED`].
fn reusable() -> String {
    format!("request_hash = $1 AND {LIVE_SLOT} AND NOT ({STALE_COMPLETED})")
}

/// Returns the live export for this request, or creates one and enqueues its job in the same
/// transaction. `force_refresh` retires the live export from deduplication (it stays readable)
/// and creates a new one. The asking key is recorded as a requester of the export returned; a
/// new export is refused when the key already has `max_outstanding` of its own to finish.
pub async fn request(
    db: &mut Object,
    request: &StatementRequest,
    by: Option<RequestedBy>,
    force_refresh: bool,
    max_attempts: i32,
    reuse: ReusePolicy,
) -> Result<Requested, RequestError> {
    let hash = request.request_hash();
    let (freshness, horizon) = (reuse.freshness.as_secs_f64(), reuse.books_closed_after_days);
    let api_key_id = by.as_ref().map(|b| b.api_key_id);
    if !force_refresh {
        // Fast path for the common repeat request: one read, no transaction and no write when
        // this key already holds the export. It only spares work; the unique index below is
        // what guarantees one live export per request. (Recording the requester inside the
        // read, as data-modifying CTEs, measured 7,120 → 4,692 post_dedup_rps in bench-api.)
        let sql = format!(
            "SELECT {COLUMNS}, {} AS held FROM exports WHERE {}",
            requesters::HELD_BY_KEY,
            reusable()
        );
        let rows = db.query_cached(&sql, &[&hash.as_slice(), &freshness, &horizon, &api_key_id]).await?;
        if let Some(row) = rows.into_iter().next() {
            let export = Export::from_row(&row)?;
            let held: bool = row.get("held");
            let recorded = match api_key_id {
                // A new requester of an export still under way attaches under a share lock on
                // it: the transaction that finishes it (and whose trigger writes the completion
                // webhooks of its requesters) then either waits for this one, or has committed
                // before it and this answer shows its final state.
                Some(key) if !held && export.status.is_outstanding() => {
                    let tx = db.transaction().await?;
                    let row = tx
                        .query_one(
                            &format!("SELECT {COLUMNS} FROM exports WHERE id = $1 FOR SHARE"),
                            &[&export.id],
                        )
                        .await?;
                    requesters::record(&tx, export.id, key).await?;
                    if !link_run(&tx, by.as_ref(), export.id).await? {
                        return Err(RequestError::RunTaken);
                    }
                    tx.commit().await?;
                    return Ok(Requested { export: Export::from_row(&row)?, reused: true, recorded: true });
                }
                Some(key) if !held => {
                    requesters::record(&*db, export.id, key).await?;
                    true
                }
                _ => false,
            };
            // Nothing was created: a run linked to another export meanwhile keeps it.
            if !link_run(&*db, by.as_ref(), export.id).await? {
                return Err(RequestError::RunTaken);
            }
            return Ok(Requested { export, reused: true, recorded });
        }
    }
    // A live export can leave the dedup slot (fail, expire) between our insert and our select;
    // then the next round inserts. Three rounds cover any realistic interleaving.
    for _ in 0..3 {
        let tx = db.transaction().await?;
        if let Some(by) = &by {
            // Creates by one key take turns (on every API process), so two of them cannot
            // both pass the outstanding cap. A dedup hit below takes this lock too, briefly:
            // this path runs only when the fast path found nothing.
            tx.execute("SELECT 1 FROM api_keys WHERE id = $1 FOR NO KEY UPDATE", &[&by.api_key_id]).await?;
        }
        if force_refresh {
            tx.execute(
                &format!("UPDATE exports SET superseded_at = now() WHERE request_hash = $1 AND {LIVE_SLOT}"),
                &[&hash.as_slice()],
            )
            .await?;
        } else {
            // Fresh statements only: a completed export of a period whose books were not closed
            // when its snapshot was taken is reused only within the freshness window; a closed
            // period's export is reused for as long as it lives.
            tx.execute(
                &format!(
                    "UPDATE exports SET superseded_at = now()
                     WHERE request_hash = $1 AND superseded_at IS NULL AND {STALE_COMPLETED}"
                ),
                &[&hash.as_slice(), &freshness, &horizon],
            )
            .await?;
        }
        let inserted = tx
            .query_opt(
                &format!(
                    "INSERT INTO exports (id, request_hash, api_key_id, account_id, table_name, date_from, date_to, format,
                                          time_zone)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (request_hash) WHERE {LIVE_SLOT} DO NOTHING
                     RETURNING {COLUMNS}"
                ),
                &[
                    &Uuid::new_v4(),
                    &hash.as_slice(),
                    &api_key_id,
                    &request.account.as_str(),
                    &request.table,
                    &request.range.from(),
                    &request.range.to(),
                    &request.format.as_str(),
                    &request.time_zone.name(),
                ],
            )
            .await?;
        if let Some(row) = inserted {
            let export = Export::from_row(&row)?;
            if let Some(by) = &by {
                let outstanding: i64 = tx
                    .query_one(
                        &format!("SELECT count(*) FROM exports WHERE api_key_id = $1 AND {OUTSTANDING}"),
                        &[&by.api_key_id],
                    )
                    .await?
                    .get(0);
                if outstanding > by.max_outstanding {
                    tx.rollback().await?;
                    return Err(RequestError::TooManyOutstanding { limit: by.max_outstanding });
                }
                requesters::record(&tx, export.id, by.api_key_id).await?;
                if !link_run(&tx, Some(by), export.id).await? {
                    tx.rollback().await?;
                    return Err(RequestError::RunTaken);
                }
            }
            let job_id =
                ExportStatement { export_id: export.id }.enqueue_with_attempts(&tx, max_attempts).await?;
            tx.execute("UPDATE exports SET job_id = $2 WHERE id = $1", &[&export.id, &job_id]).await?;
            tx.commit().await?;
            let export = Export { job_id: Some(job_id), ..export };
            return Ok(Requested { export, reused: false, recorded: true });
        }
        // Under a share lock, as on the fast path: a requester attached here is one the
        // transaction finishing the export sees (its webhooks).
        let existing = tx
            .query_opt(
                &format!("SELECT {COLUMNS} FROM exports WHERE request_hash = $1 AND {LIVE_SLOT} FOR SHARE"),
                &[&hash.as_slice()],
            )
            .await?;
        let existing = Export::from_opt(existing.as_ref())?;
        if let (Some(export), Some(by)) = (&existing, &by) {
            requesters::record(&tx, export.id, by.api_key_id).await?;
            if !link_run(&tx, Some(by), export.id).await? {
                tx.rollback().await?;
                return Err(RequestError::RunTaken);
            }
        }
        tx.commit().await?;
        if let Some(export) = existing {
            return Ok(Requested { export, reused: true, recorded: true });
        }
    }
    Err(DbError::Contention("deduplication did not settle after 3 rounds").into())
}

/// Links the schedule's run the request is for (if any) to `export`; `false` when the run has
/// another export already.
async fn link_run(db: &impl Sql, by: Option<&RequestedBy>, export: Uuid) -> Result<bool, DbError> {
    match by {
        Some(RequestedBy { api_key_id, schedule: Some(run), .. }) => {
            schedules::link(db, run, *api_key_id, export).await
        }
        _ => Ok(true),
    }
}

/// One export by id.
pub async fn get(db: &impl Sql, id: Uuid) -> Result<Option<Export>, DbError> {
    let rows = db.query_cached(&format!("SELECT {COLUMNS} FROM exports WHERE id = $1"), &[&id]).await?;
    Export::from_opt(rows.first())
}

/// The export a job produces (`None`: the job produces none, or does not exist).
pub(crate) async fn of_job(db: &impl Sql, job_id: i64) -> Result<Option<Uuid>, DbError> {
    let row = db.query_opt("SELECT id FROM exports WHERE job_id = $1", &[&job_id]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// What the exports of some jobs have done so far: `(job id, export id, rows exported)`.
pub(crate) async fn progress_of_jobs(
    db: &impl Sql,
    job_ids: &[i64],
) -> Result<Vec<(i64, Uuid, i64)>, DbError> {
    let rows =
        db.query("SELECT job_id, id, rows_exported FROM exports WHERE job_id = ANY($1)", &[&job_ids]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// The outcome of a cancel request.
#[derive(Debug, Clone)]
pub enum Cancelled {
    /// Cancelled now; a running attempt stops at its next heartbeat.
    Now(Export),
    /// Other keys also asked for this export and still hold it: only the caller was detached
    /// (it no longer holds the export); the export goes on for them. Also the answer when the
    /// caller had already been detached.
    Detached(Export),
    /// Already finished (completed, failed, cancelled or expired): nothing changed.
    AlreadyFinished(Export),
    /// The calling key never asked for this export: nothing changed.
    NotRequester,
    /// No such export.
    NotFound,
}

/// Who cancels an export.
#[derive(Debug, Clone, Copy)]
pub enum Canceller {
    /// An operator (dashboard): the export is cancelled for every requester.
    Operator,
    /// An API key: it may cancel only what it asked for, and only for itself while other keys
    /// still hold the export.
    Key(Uuid),
}

/// Cancels a pending or processing export and its job, in one transaction. `reason` is
/// recorded as the export's failure ([`FailureCode::Cancelled`] or
/// [`FailureCode::CancelledByOperator`]). The export's row is locked first, so concurrent
/// cancels by its requesters take turns: the last one to leave cancels it. A cancel is counted
/// in `metrics` (finished exports). Given a transaction, the cancel is a savepoint in it.
pub async fn cancel(
    db: &mut impl Begin,
    id: Uuid,
    by: Canceller,
    reason: FailureCode,
    metrics: &Metrics,
) -> Result<Cancelled, DbError> {
    let tx = db.begin().await?;
    let Some(row) =
        tx.query_opt(&format!("SELECT {COLUMNS} FROM exports WHERE id = $1 FOR UPDATE"), &[&id]).await?
    else {
        return Ok(Cancelled::NotFound);
    };
    let export = Export::from_row(&row)?;
    let mut detached = false;
    if let Canceller::Key(key) = by {
        match requesters::role(&tx, id, key).await? {
            requesters::Role::None => return Ok(Cancelled::NotRequester),
            requesters::Role::Detached => detached = true,
            requesters::Role::Attached => {}
        }
    }
    if !export.status.is_outstanding() {
        return Ok(Cancelled::AlreadyFinished(export));
    }
    if detached {
        return Ok(Cancelled::Detached(export));
    }
    if let Canceller::Key(key) = by
        && requesters::others_attached(&tx, id, key).await? > 0
    {
        requesters::detach(&tx, id, key).await?;
        tx.commit().await?;
        return Ok(Cancelled::Detached(export));
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE exports SET status = 'CANCELLED', completed_at = now(), error_code = $2, error = NULL
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &reason],
        )
        .await?;
    if let Some(job_id) = export.job_id {
        queue::cancel(&tx, job_id, reason).await?;
    }
    tx.commit().await?;
    ExportStatus::Cancelled.count_finished(metrics);
    Ok(Cancelled::Now(Export::from_row(&row)?))
}

/// Why an export could not be revived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revived {
    /// Back to PENDING, its failure cleared: its job may run again.
    Now,
    /// Not failed nor pending (cancelled, completed or expired meanwhile): nothing to retry.
    NotRevivable,
    /// An identical export holds the deduplication slot ([`LIVE_SLOT`]) now: retry that one.
    SlotTaken,
}

/// Puts a FAILED (or retry-waiting PENDING) export back to PENDING, its failure cleared, for a
/// retry by hand. Call it in the transaction that retries its job, before that (an export is
/// locked before its job, as a cancel does, so the two cannot deadlock).
pub(crate) async fn revive(db: &impl Sql, id: Uuid) -> Result<Revived, DbError> {
    let revived = db
        .execute(
            "UPDATE exports SET status = 'PENDING', error = NULL, error_code = NULL, error_detail = NULL,
                 completed_at = NULL
             WHERE id = $1 AND status IN ('FAILED', 'PENDING')",
            &[&id],
        )
        .await
        .map_err(DbError::from);
    match revived {
        Ok(0) => Ok(Revived::NotRevivable),
        Ok(_) => Ok(Revived::Now),
        // Reviving into the live slot another export holds (V1's `exports_dedup_slot`).
        Err(e) if e.is_unique_violation() => Ok(Revived::SlotTaken),
        Err(e) => Err(e),
    }
}

/// Completed exports whose retention has run out, oldest first, at most `batch`.
pub async fn due_to_expire(db: &impl Sql, batch: i64) -> Result<Vec<(Uuid, Option<String>)>, DbError> {
    let rows = db
        .query(
            "SELECT id, file_key FROM exports
             WHERE status = 'COMPLETED' AND expires_at < now()
             ORDER BY expires_at LIMIT $1",
            &[&batch],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Marks an export EXPIRED (its file is gone): deduplication no longer returns it.
pub async fn mark_expired(db: &impl Sql, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE exports SET status = 'EXPIRED', file_key = NULL WHERE id = $1 AND status = 'COMPLETED'",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Marks a COMPLETED export as having lost its file (`file_key`: the object storage no longer
/// has): EXPIRED, so it leaves the deduplication slot and the next identical request makes a
/// new export, with `file_lost_at` set so reads answer that the file is gone. Returns the
/// export as it now is; `None` when it was no longer COMPLETED with that file (another request
/// got there first, or maintenance expired it).
pub async fn mark_file_lost(db: &impl Sql, id: Uuid, file_key: &str) -> Result<Option<Export>, DbError> {
    let row = db
        .query_opt(
            &format!(
                "UPDATE exports SET status = 'EXPIRED', file_key = NULL, file_lost_at = now()
                 WHERE id = $1 AND status = 'COMPLETED' AND file_key = $2
                 RETURNING {COLUMNS}"
            ),
            &[&id, &file_key],
        )
        .await?;
    Export::from_opt(row.as_ref())
}

/// Deletes up to `batch` export rows that can no longer be downloaded (expired, failed or
/// cancelled) and finished longer than `older_than` ago (`EXPORT_ROW_RETENTION_DAYS`). Their
/// hourly analytics stay (`export_hourly` is kept by inserts and status changes, never by
/// deletes); their requesters, download links and downloads go with them. Returns how many
/// were deleted.
pub async fn prune_rows(db: &impl Sql, older_than: Duration, batch: i64) -> Result<u64, DbError> {
    let row = db
        .query_one(
            "WITH pruned AS (
                 DELETE FROM exports WHERE id IN (
                     SELECT id FROM exports
                     WHERE status IN ('EXPIRED', 'FAILED', 'CANCELLED')
                       -- created_at first: the (status, created_at) index finds them.
                       AND created_at < now() - make_interval(secs => $1)
                       AND coalesce(completed_at, created_at) < now() - make_interval(secs => $1)
                     LIMIT $2)
                 RETURNING id
             ), links AS (
                 -- No foreign key to cascade (see V16__downloads.sql): deleted here.
                 DELETE FROM download_links WHERE export_id IN (SELECT id FROM pruned)
             )
             SELECT count(*) FROM pruned",
            &[&older_than.as_secs_f64(), &batch],
        )
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Filters of an export listing; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only exports in this status.
    pub status: Option<ExportStatus>,
    /// Only this account's exports.
    pub account_id: Option<String>,
    /// Only exports of this table.
    pub table_name: Option<String>,
    /// Only exports created at or after this time.
    pub created_from: Option<OffsetDateTime>,
    /// Only exports created before this time.
    pub created_before: Option<OffsetDateTime>,
    /// Only these accounts (the caller's key scope).
    pub accounts: Option<Vec<String>>,
    /// Only exports this key requested (`export_requesters`).
    pub requested_by: Option<Uuid>,
    /// Continue after this export (the previous page's last one).
    pub after: Option<Uuid>,
}

/// Why a listing could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The cursor names no export.
    #[error("the cursor does not name an export")]
    UnknownCursor,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Exports newest first, at most `limit`, after the cursor.
pub async fn list(db: &impl Sql, filter: &ListFilter, limit: i64) -> Result<Vec<Export>, ListError> {
    let after = match filter.after {
        None => None,
        Some(id) => {
            let row = db
                .query_opt("SELECT created_at FROM exports WHERE id = $1", &[&id])
                .await
                .map_err(DbError::from)?
                .ok_or(ListError::UnknownCursor)?;
            Some((row.get::<_, OffsetDateTime>(0), id))
        }
    };
    // Each combination of filters is its own statement, holding only the conditions it needs
    // (one statement with optional `$n IS NULL OR …` conditions gets one generic plan for every
    // combination: a scan of the whole table), and it is planned for its values on every call,
    // never cached: an account with most of the exports, or a status almost none are in, gets
    // the index that suits it.
    let mut query = Filtered::default();
    if let Some(status) = &filter.status {
        query.and("status = $?", &[status]);
    }
    if let Some(account) = &filter.account_id {
        query.and("account_id = $?", &[account]);
    }
    if let Some(table) = &filter.table_name {
        query.and("table_name = $?", &[table]);
    }
    if let Some(from) = &filter.created_from {
        query.and("created_at >= $?", &[from]);
    }
    if let Some(before) = &filter.created_before {
        query.and("created_at < $?", &[before]);
    }
    if let Some(accounts) = &filter.accounts {
        query.and("account_id = ANY($?)", &[accounts]);
    }
    if let Some(key) = &filter.requested_by {
        query.and("id IN (SELECT export_id FROM export_requesters WHERE api_key_id = $?)", &[key]);
    }
    if let Some((at, id)) = &after {
        // Keyset pagination: a row comparison the (created_at DESC, id DESC) indexes serve.
        query.and("(created_at, id) < ($?, $?)", &[at, id]);
    }
    let (sql, params) = query.finish(
        &format!("SELECT {COLUMNS} FROM exports"),
        "ORDER BY created_at DESC, id DESC LIMIT $?",
        &limit,
    );
    let rows = db.query(&sql, &params).await.map_err(DbError::from)?;
    Ok(Export::from_rows(&rows)?)
}

/// A statement written for the filters present: its conditions, each `$?` numbered in order
/// with its value.
#[derive(Default)]
struct Filtered<'a> {
    conditions: Vec<String>,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Filtered<'a> {
    /// Adds a condition with one value per `$?`.
    fn and(&mut self, condition: &str, values: &[&'a (dyn ToSql + Sync)]) {
        let numbered = self.number(condition, values);
        self.conditions.push(numbered);
    }

    fn number(&mut self, text: &str, values: &[&'a (dyn ToSql + Sync)]) -> String {
        let mut parts = text.split("$?");
        let mut numbered = parts.next().unwrap_or_default().to_owned();
        for (part, value) in parts.zip(values) {
            self.params.push(*value);
            numbered.push_str(&format!("${}{part}", self.params.len()));
        }
        numbered
    }

    /// `select`, the conditions, then `tail` with its one `$?` for `last`.
    fn finish(
        mut self,
        select: &str,
        tail: &str,
        last: &'a (dyn ToSql + Sync),
    ) -> (String, Vec<&'a (dyn ToSql + Sync)>) {
        let tail = self.number(tail, &[last]);
        let sql = match self.conditions.is_empty() {
            true => format!("{select} {tail}"),
            false => format!("{select} WHERE {} {tail}", self.conditions.join(" AND ")),
        };
        (sql, self.params)
    }
}
