//! Export records (table `exports`): creation with deduplication, status, results.
//!
//! Deduplication is a partial unique index on `request_hash` over the live exports
//! (pending, processing, completed and not superseded): concurrent identical requests race on
//! the index, never on a check-then-insert. Worker writes are fenced by the job's attempt token.

use deadpool_postgres::{GenericClient, Object};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::{db::DbError, failure::FailureCode, queue, requesters, statement::StatementRequest, uploads};

/// Job kind that runs one export. Persisted in `jobs.kind`: never rename.
pub const EXPORT_JOB_KIND: &str = "export_statement";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl ExportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "PENDING" => Self::Pending,
            "PROCESSING" => Self::Processing,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            "CANCELLED" => Self::Cancelled,
            "EXPIRED" => Self::Expired,
            _ => return None,
        })
    }
}

/// One export as stored.
#[derive(Debug, Clone)]
pub struct Export {
    pub id: Uuid,
    pub api_key_id: Option<Uuid>,
    pub account_id: String,
    pub table_name: String,
    pub date_from: Date,
    pub date_to: Date,
    pub format: String,
    pub status: ExportStatus,
    pub file_key: Option<String>,
    pub file_size: Option<i64>,
    pub row_count: Option<i64>,
    pub rows_exported: i64,
    pub sha256: Option<String>,
    /// Why the export failed (FAILED), was cancelled, or why its last attempt failed (PENDING);
    /// see [`FailureCode`]. The cause is in the worker's log only.
    pub failure: Option<FailureCode>,
    pub created_at: OffsetDateTime,
    pub snapshot_at: Option<OffsetDateTime>,
    pub started_at: Option<OffsetDateTime>,
    pub completed_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    /// When the API found the COMPLETED export's file missing from storage (the export is
    /// EXPIRED since then).
    pub file_lost_at: Option<OffsetDateTime>,
    /// The source replica's lag behind its primary when the snapshot was taken, in seconds
    /// (`None`: not checked).
    pub snapshot_lag_seconds: Option<i64>,
    /// The source's replication position read inside the snapshot (a GTID set), if it has one.
    pub snapshot_position: Option<String>,
}

const COLUMNS: &str = "id, api_key_id, account_id, table_name, date_from, date_to, format, status, \
    file_key, file_size, row_count, rows_exported, sha256, error, error_code, created_at, snapshot_at, started_at, \
    completed_at, expires_at, file_lost_at, snapshot_lag_seconds, snapshot_position";

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
    fn from_row(row: &tokio_postgres::Row) -> Self {
        let status = ExportStatus::parse(row.get("status")).unwrap_or(ExportStatus::Failed);
        Self {
            id: row.get("id"),
            api_key_id: row.get("api_key_id"),
            account_id: row.get("account_id"),
            table_name: row.get("table_name"),
            date_from: row.get("date_from"),
            date_to: row.get("date_to"),
            format: row.get("format"),
            status,
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
        }
    }
}

/// The outcome of asking for a statement.
#[derive(Debug, Clone)]
pub struct Requested {
    pub export: Export,
    /// An identical live export already existed and is returned instead of a new one.
    pub reused: bool,
    /// The requester's row was written by this call (a new or re-attached requester). When
    /// `false` on a reused export, the key had asked before: the caller adds the repeat to its
    /// batch ([`requesters::record_repeats`]).
    pub recorded: bool,
}

/// The key asking for an export, and how many outstanding exports it may have.
#[derive(Debug, Clone, Copy)]
pub struct RequestedBy {
    pub api_key_id: Uuid,
    /// Most exports created by this key that may be pending or processing at once; a request
    /// that would create one more is refused (a dedup hit is not: it creates no work).
    pub max_outstanding: i64,
}

/// Why an export was not requested.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the key already has {limit} exports pending or processing")]
    TooManyOutstanding { limit: i64 },
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

/// When a completed export may be handed out again instead of a new one.
#[derive(Debug, Clone, Copy)]
pub struct ReusePolicy {
    /// A completed export of a period whose books were not yet closed at its snapshot is
    /// reused only this long after the snapshot.
    pub freshness: std::time::Duration,
    /// A period's books are closed once its last day is at least this many days before the
    /// snapshot's UTC day; such an export is reused for as long as it lives.
    pub books_closed_after_days: i32,
}

/// A completed export that may no longer be reused: its period's books were not closed at its
/// snapshot (`date_to` fewer than `$3` days before the snapshot's UTC day) and the snapshot is
/// older than the freshness window (`$2` seconds). The one statement of this rule: the reuse
/// read and the supersede write both use it.
const STALE_COMPLETED: &str = "status = 'COMPLETED'
    AND (snapshot_at AT TIME ZONE 'UTC')::date - date_to < $3::int
    AND snapshot_at < now() - make_interval(secs => $2)";

/// The live export for request hash `$1` that may be reused: pending, processing, or
/// completed and not [`STALE_COMPLETED`].
fn reusable() -> String {
    format!(
        "request_hash = $1 AND superseded_at IS NULL
         AND status IN ('PENDING', 'PROCESSING', 'COMPLETED') AND NOT ({STALE_COMPLETED})"
    )
}

/// Arguments of an export job, as stored in `jobs.args`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExportJobArgs {
    pub export_id: Uuid,
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
    let api_key_id = by.map(|b| b.api_key_id);
    if !force_refresh {
        // Fast path for the common repeat request: one read, no transaction and no write when
        // this key already holds the export. It only spares work; the unique index below is
        // what guarantees one live export per request. (Recording the requester inside the
        // read, as data-modifying CTEs, measured 7,120 → 4,692 post_dedup_rps in bench-api.)
        let statement = db
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, {} AS held FROM exports WHERE {}",
                requesters::HELD_BY_KEY,
                reusable()
            ))
            .await?;
        if let Some(row) =
            db.query_opt(&statement, &[&hash.as_slice(), &freshness, &horizon, &api_key_id]).await?
        {
            let export = Export::from_row(&row);
            let held: bool = row.get("held");
            let recorded = match api_key_id {
                Some(key) if !held => {
                    requesters::record(&*db, export.id, key).await?;
                    true
                }
                _ => false,
            };
            return Ok(Requested { export, reused: true, recorded });
        }
    }
    // A live export can leave the dedup slot (fail, expire) between our insert and our select;
    // then the next round inserts. Three rounds cover any realistic interleaving.
    for _ in 0..3 {
        let tx = db.transaction().await?;
        if let Some(by) = by {
            // Creates by one key take turns (on every API process), so two of them cannot
            // both pass the outstanding cap. A dedup hit below takes this lock too, briefly:
            // this path runs only when the fast path found nothing.
            tx.execute("SELECT 1 FROM api_keys WHERE id = $1 FOR NO KEY UPDATE", &[&by.api_key_id]).await?;
        }
        if force_refresh {
            tx.execute(
                "UPDATE exports SET superseded_at = now()
                 WHERE request_hash = $1 AND superseded_at IS NULL
                   AND status IN ('PENDING', 'PROCESSING', 'COMPLETED')",
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
                    "INSERT INTO exports (id, request_hash, api_key_id, account_id, table_name, date_from, date_to, format)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (request_hash)
                         WHERE superseded_at IS NULL AND status IN ('PENDING', 'PROCESSING', 'COMPLETED')
                         DO NOTHING
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
                ],
            )
            .await?;
        if let Some(row) = inserted {
            let export = Export::from_row(&row);
            if let Some(by) = by {
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
            }
            let args = serde_json::to_value(ExportJobArgs { export_id: export.id }).expect("serializable");
            let job_id = queue::enqueue(&tx, EXPORT_JOB_KIND, &args, max_attempts).await?;
            tx.execute("UPDATE exports SET job_id = $2 WHERE id = $1", &[&export.id, &job_id]).await?;
            tx.commit().await?;
            return Ok(Requested { export, reused: false, recorded: true });
        }
        let existing = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM exports
                     WHERE request_hash = $1 AND superseded_at IS NULL
                       AND status IN ('PENDING', 'PROCESSING', 'COMPLETED')"
                ),
                &[&hash.as_slice()],
            )
            .await?;
        let existing = existing.as_ref().map(Export::from_row);
        if let (Some(export), Some(by)) = (&existing, by) {
            requesters::record(&tx, export.id, by.api_key_id).await?;
        }
        tx.commit().await?;
        if let Some(export) = existing {
            return Ok(Requested { export, reused: true, recorded: true });
        }
    }
    Err(DbError::Contention("deduplication did not settle after 3 rounds").into())
}

/// One export by id.
pub async fn get(db: &impl GenericClient, id: Uuid) -> Result<Option<Export>, DbError> {
    let statement = db.prepare_cached(&format!("SELECT {COLUMNS} FROM exports WHERE id = $1")).await?;
    Ok(db.query_opt(&statement, &[&id]).await?.as_ref().map(Export::from_row))
}

/// A job attempt that holds an export: every write below checks it still holds the job.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub export_id: Uuid,
    pub job_id: i64,
    pub token: Uuid,
}

/// Condition shared by every fenced write: the job still runs under this attempt's token.
const FENCE: &str =
    "EXISTS (SELECT 1 FROM jobs WHERE jobs.id = $2 AND jobs.attempt_token = $3 AND jobs.state = 'running')";

/// Marks the export PROCESSING with the snapshot time. `None` when fenced out or when the
/// export is no longer waiting to run (cancelled, superseded ones still run).
pub async fn start(db: &impl GenericClient, attempt: Attempt) -> Result<Option<Export>, DbError> {
    let row = db
        .query_opt(
            &format!(
                "UPDATE exports SET status = 'PROCESSING', started_at = now(), snapshot_at = now(),
                     rows_exported = 0, error = NULL, error_code = NULL
                 WHERE id = $1 AND status IN ('PENDING', 'PROCESSING') AND {FENCE}
                 RETURNING {COLUMNS}"
            ),
            &[&attempt.export_id, &attempt.job_id, &attempt.token],
        )
        .await?;
    Ok(row.as_ref().map(Export::from_row))
}

/// Records progress. `false` when fenced out.
pub async fn record_progress(db: &impl GenericClient, attempt: Attempt, rows: i64) -> Result<bool, DbError> {
    let statement = db
        .prepare_cached(&format!(
            "UPDATE exports SET rows_exported = $4 WHERE id = $1 AND status = 'PROCESSING' AND {FENCE}"
        ))
        .await?;
    Ok(db.execute(&statement, &[&attempt.export_id, &attempt.job_id, &attempt.token, &rows]).await? == 1)
}

/// What a snapshot was taken against: the replica's lag behind its primary (`None`: not
/// checked) and the source's replication position (`None`: the source has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotBasis {
    pub lag_seconds: Option<i64>,
    pub position: Option<String>,
}

/// Records what the snapshot was taken against. `false` when fenced out.
pub async fn record_snapshot_basis(
    db: &impl GenericClient,
    attempt: Attempt,
    basis: &SnapshotBasis,
) -> Result<bool, DbError> {
    let updated = db
        .execute(
            &format!(
                "UPDATE exports SET snapshot_lag_seconds = $4, snapshot_position = $5
                 WHERE id = $1 AND status = 'PROCESSING' AND {FENCE}"
            ),
            &[&attempt.export_id, &attempt.job_id, &attempt.token, &basis.lag_seconds, &basis.position],
        )
        .await?;
    Ok(updated == 1)
}

/// The finished file.
#[derive(Debug, Clone)]
pub struct ExportResult {
    pub file_key: String,
    pub file_size: i64,
    pub row_count: i64,
    pub sha256: String,
}

/// Marks the export COMPLETED and its job completed, and takes the file out of the upload
/// journal, atomically; the file is kept for `retention`. `false` when fenced out: nothing was written and the caller must discard its
/// object.
pub async fn complete(
    db: &mut Object,
    attempt: Attempt,
    result: &ExportResult,
    retention: std::time::Duration,
) -> Result<bool, DbError> {
    let tx = db.transaction().await?;
    let updated = tx
        .execute(
            &format!(
                "UPDATE exports SET status = 'COMPLETED', completed_at = now(), file_key = $4, file_size = $5,
                     row_count = $6, rows_exported = $6, sha256 = $7, error = NULL, error_code = NULL,
                     expires_at = now() + make_interval(secs => $8)
                 WHERE id = $1 AND status = 'PROCESSING' AND {FENCE}"
            ),
            &[
                &attempt.export_id,
                &attempt.job_id,
                &attempt.token,
                &result.file_key,
                &result.file_size,
                &result.row_count,
                &result.sha256,
                &retention.as_secs_f64(),
            ],
        )
        .await?;
    if updated != 1 || !queue::complete(&tx, attempt.job_id, attempt.token).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    uploads::forget(&tx, &result.file_key).await?;
    tx.commit().await?;
    Ok(true)
}

/// Marks the export FAILED with the failure's code (the cause is logged, never stored); nothing
/// of the failed attempt's progress is kept. Call it in the transaction that fails its job.
pub async fn fail(db: &impl GenericClient, export_id: Uuid, code: FailureCode) -> Result<(), DbError> {
    db.execute(
        "UPDATE exports SET status = 'FAILED', error_code = $2, error = NULL, completed_at = now(),
             rows_exported = 0
         WHERE id = $1 AND status IN ('PENDING', 'PROCESSING')",
        &[&export_id, &code.as_str()],
    )
    .await?;
    Ok(())
}

/// Back to PENDING while its job waits for a retry; the code says why. Call it in the
/// transaction that gives its job back to the queue.
pub async fn retry_later(db: &impl GenericClient, export_id: Uuid, code: FailureCode) -> Result<(), DbError> {
    db.execute(
        "UPDATE exports SET status = 'PENDING', error_code = $2, error = NULL, rows_exported = 0
         WHERE id = $1 AND status = 'PROCESSING'",
        &[&export_id, &code.as_str()],
    )
    .await?;
    Ok(())
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
/// cancels by its requesters take turns: the last one to leave cancels it.
pub async fn cancel(
    db: &mut Object,
    id: Uuid,
    by: Canceller,
    reason: FailureCode,
) -> Result<Cancelled, DbError> {
    let tx = db.transaction().await?;
    let Some(row) = tx
        .query_opt(&format!("SELECT {COLUMNS}, job_id FROM exports WHERE id = $1 FOR UPDATE"), &[&id])
        .await?
    else {
        return Ok(Cancelled::NotFound);
    };
    let export = Export::from_row(&row);
    let job_id: Option<i64> = row.get("job_id");
    let mut detached = false;
    if let Canceller::Key(key) = by {
        match requesters::role(&tx, id, key).await? {
            requesters::Role::None => return Ok(Cancelled::NotRequester),
            requesters::Role::Detached => detached = true,
            requesters::Role::Attached => {}
        }
    }
    if !matches!(export.status, ExportStatus::Pending | ExportStatus::Processing) {
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
            &[&id, &reason.as_str()],
        )
        .await?;
    if let Some(job_id) = job_id {
        queue::cancel(&tx, job_id, reason).await?;
    }
    tx.commit().await?;
    Ok(Cancelled::Now(Export::from_row(&row)))
}

/// Completed exports whose retention has run out, oldest first, at most `batch`.
pub async fn due_to_expire(
    db: &impl GenericClient,
    batch: i64,
) -> Result<Vec<(Uuid, Option<String>)>, DbError> {
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
pub async fn mark_expired(db: &impl GenericClient, id: Uuid) -> Result<(), DbError> {
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
pub async fn mark_file_lost(
    db: &impl GenericClient,
    id: Uuid,
    file_key: &str,
) -> Result<Option<Export>, DbError> {
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
    Ok(row.as_ref().map(Export::from_row))
}

/// Filters of an export listing; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<ExportStatus>,
    pub account_id: Option<String>,
    pub table_name: Option<String>,
    pub created_from: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    /// Only these accounts (the caller's key scope).
    pub accounts: Option<Vec<String>>,
    /// Continue after this export (the previous page's last one).
    pub after: Option<Uuid>,
}

/// Why a listing could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("the cursor does not name an export")]
    UnknownCursor,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Exports newest first, at most `limit`, after the cursor.
pub async fn list(
    db: &impl GenericClient,
    filter: &ListFilter,
    limit: i64,
) -> Result<Vec<Export>, ListError> {
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
    let statement =
        db.prepare_cached(&LIST_SQL.replace("{COLUMNS}", COLUMNS)).await.map_err(DbError::from)?;
    let rows = db
        .query(
            &statement,
            &[
                &filter.status.map(ExportStatus::as_str),
                &filter.account_id,
                &filter.table_name,
                &filter.created_from,
                &filter.created_before,
                &filter.accounts,
                &after.map(|(at, _)| at),
                &after.map(|(_, id)| id),
                &limit,
            ],
        )
        .await
        .map_err(DbError::from)?;
    Ok(rows.iter().map(Export::from_row).collect())
}

/// The listing; filters are optional (`NULL` matches all), keyset pagination on
/// `(created_at, id)`.
const LIST_SQL: &str = "SELECT {COLUMNS} FROM exports
     WHERE ($1::text IS NULL OR status = $1)
       AND ($2::text IS NULL OR account_id = $2)
       AND ($3::text IS NULL OR table_name = $3)
       AND ($4::timestamptz IS NULL OR created_at >= $4)
       AND ($5::timestamptz IS NULL OR created_at < $5)
       AND ($6::text[] IS NULL OR account_id = ANY($6))
       AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8::uuid))
     ORDER BY created_at DESC, id DESC
     LIMIT $9";
