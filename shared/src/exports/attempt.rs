//! The writes of the job attempt that produces an export. Each is fenced by the attempt's
//! token ([`crate::queue`]'s fencing predicate): a write of an attempt that lost its job (rescued,
//! released, cancelled) changes nothing.

use std::sync::LazyLock;

use crate::db::Sql;
use deadpool_postgres::Object;
use uuid::Uuid;

use super::{COLUMNS, Export, ExportStatus};
use crate::{db::DbError, failure::FailureCode, metrics::Metrics, queue, uploads};

/// A job attempt that holds an export: every write below checks it still holds the job.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The export it produces.
    pub export_id: Uuid,
    /// Its job.
    pub job_id: i64,
    /// Its fencing token.
    pub token: Uuid,
}

/// Condition shared by every fenced write (`$2` job id, `$3` attempt token): the job still runs
/// under this attempt's token.
static FENCE: LazyLock<String> = LazyLock::new(|| queue::attempt_holds("$2", "$3"));

/// Marks the export PROCESSING with the snapshot time. `None` when fenced out or when the
/// export is no longer waiting to run (cancelled, superseded ones still run).
pub async fn start(db: &impl Sql, attempt: Attempt) -> Result<Option<Export>, DbError> {
    let row = db
        .query_opt(
            &format!(
                "UPDATE exports SET status = 'PROCESSING', started_at = now(), snapshot_at = now(),
                     rows_exported = 0, error = NULL, error_code = NULL, error_detail = NULL
                 WHERE id = $1 AND status IN ('PENDING', 'PROCESSING') AND {fence}
                 RETURNING {COLUMNS}",
                fence = *FENCE
            ),
            &[&attempt.export_id, &attempt.job_id, &attempt.token],
        )
        .await?;
    Export::from_opt(row.as_ref())
}

/// Records progress. `false` when fenced out.
pub async fn record_progress(db: &impl Sql, attempt: Attempt, rows: i64) -> Result<bool, DbError> {
    let sql = format!(
        "UPDATE exports SET rows_exported = $4 WHERE id = $1 AND status = 'PROCESSING' AND {fence}",
        fence = *FENCE
    );
    Ok(db.execute_cached(&sql, &[&attempt.export_id, &attempt.job_id, &attempt.token, &rows]).await? == 1)
}

/// Records a client-safe sentence about the data behind the failure the attempt is about to
/// report (see [`Export::error_detail`]). `false` when fenced out.
pub async fn record_failure_detail(db: &impl Sql, attempt: Attempt, detail: &str) -> Result<bool, DbError> {
    let sql = format!(
        "UPDATE exports SET error_detail = $4 WHERE id = $1 AND status = 'PROCESSING' AND {fence}",
        fence = *FENCE
    );
    Ok(db.execute(&sql, &[&attempt.export_id, &attempt.job_id, &attempt.token, &detail]).await? == 1)
}

/// The export's statement number: the one it already has (a retry, a reused export), else the
/// one its statement (table, account, period, time zone) was given by an earlier export, else
/// the account's next. Numbers are given under a lock on the account's sequence row, so two
/// exports of one account never take the same one. `None` when fenced out.
pub async fn assign_statement_number(
    db: &mut Object,
    attempt: Attempt,
    export: &Export,
) -> Result<Option<i64>, DbError> {
    if let Some(number) = export.statement_number {
        return Ok(Some(number));
    }
    let tx = db.transaction().await?;
    let account = [&export.table_name as &(dyn tokio_postgres::types::ToSql + Sync), &export.account_id];
    tx.execute(
        "INSERT INTO statement_sequences (table_name, account_id, last_number) VALUES ($1, $2, 0)
         ON CONFLICT DO NOTHING",
        &account,
    )
    .await?;
    tx.execute(
        "SELECT 1 FROM statement_sequences WHERE table_name = $1 AND account_id = $2 FOR UPDATE",
        &account,
    )
    .await?;
    let statement = [
        &export.table_name as &(dyn tokio_postgres::types::ToSql + Sync),
        &export.account_id,
        &export.date_from,
        &export.date_to,
        &export.time_zone,
    ];
    let given = tx
        .query_opt(
            "SELECT number FROM statement_numbers
             WHERE table_name = $1 AND account_id = $2 AND date_from = $3 AND date_to = $4 AND time_zone = $5",
            &statement,
        )
        .await?;
    let number: i64 = match given {
        Some(row) => row.get(0),
        None => {
            let number = tx
                .query_one(
                    "UPDATE statement_sequences SET last_number = last_number + 1
                     WHERE table_name = $1 AND account_id = $2 RETURNING last_number",
                    &account,
                )
                .await?
                .get(0);
            tx.execute(
                "INSERT INTO statement_numbers (table_name, account_id, date_from, date_to, time_zone, number)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&export.table_name, &export.account_id, &export.date_from, &export.date_to, &export.time_zone, &number],
            )
            .await?;
            number
        }
    };
    let sql = format!(
        "UPDATE exports SET statement_number = $4 WHERE id = $1 AND status = 'PROCESSING' AND {fence}",
        fence = *FENCE
    );
    if tx.execute(&sql, &[&attempt.export_id, &attempt.job_id, &attempt.token, &number]).await? != 1 {
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(number))
}

/// What a snapshot was taken against: the replica's lag behind its primary (`None`: not
/// checked) and the source's replication position (`None`: the source has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotBasis {
    /// Seconds the replica lagged its primary.
    pub lag_seconds: Option<i64>,
    /// The source's executed GTID set.
    pub position: Option<String>,
}

/// Records what the snapshot was taken against. `false` when fenced out.
pub async fn record_snapshot_basis(
    db: &impl Sql,
    attempt: Attempt,
    basis: &SnapshotBasis,
) -> Result<bool, DbError> {
    let updated = db
        .execute(
            &format!(
                "UPDATE exports SET snapshot_lag_seconds = $4, snapshot_position = $5
                 WHERE id = $1 AND status = 'PROCESSING' AND {fence}",
                fence = *FENCE
            ),
            &[&attempt.export_id, &attempt.job_id, &attempt.token, &basis.lag_seconds, &basis.position],
        )
        .await?;
    Ok(updated == 1)
}

/// The finished file.
#[derive(Debug, Clone)]
pub struct ExportResult {
    /// Its key in storage.
    pub file_key: String,
    /// Its size in bytes.
    pub file_size: i64,
    /// Data rows in it.
    pub row_count: i64,
    /// Its hex SHA-256.
    pub sha256: String,
    /// What a bank statement file states (balances, totals per currency); `None` for rows.
    pub statement: Option<super::StatementFacts>,
}

/// Marks the export COMPLETED and its job completed, and takes the file out of the upload
/// journal, atomically; the file is kept for `retention`, and the completion is counted in
/// `metrics`. `false` when fenced out: nothing was written and the caller must discard its
/// object.
pub async fn complete(
    db: &mut Object,
    attempt: Attempt,
    result: &ExportResult,
    retention: std::time::Duration,
    metrics: &Metrics,
) -> Result<bool, DbError> {
    let tx = db.transaction().await?;
    let updated = tx
        .execute(
            &format!(
                "UPDATE exports SET status = 'COMPLETED', completed_at = now(), file_key = $4, file_size = $5,
                     row_count = $6, rows_exported = $6, sha256 = $7, error = NULL, error_code = NULL,
                     error_detail = NULL, statement = $9, expires_at = now() + make_interval(secs => $8)
                 WHERE id = $1 AND status = 'PROCESSING' AND {fence}",
                fence = *FENCE
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
                &result.statement.as_ref().map(tokio_postgres::types::Json),
            ],
        )
        .await?;
    if updated != 1 || !queue::complete(&tx, attempt.job_id, attempt.token).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    uploads::forget(&tx, &result.file_key).await?;
    tx.commit().await?;
    ExportStatus::Completed.count_finished(metrics);
    Ok(true)
}

/// Marks the export FAILED with the failure's code (the cause is logged, never stored); nothing
/// of the failed attempt's progress is kept, and the failure is counted in `metrics`. Call it in
/// the transaction that fails its job.
pub async fn fail(
    db: &impl Sql,
    export_id: Uuid,
    code: FailureCode,
    metrics: &Metrics,
) -> Result<(), DbError> {
    let failed = db
        .execute(
            "UPDATE exports SET status = 'FAILED', error_code = $2, error = NULL, completed_at = now(),
                 rows_exported = 0
             WHERE id = $1 AND status IN ('PENDING', 'PROCESSING')",
            &[&export_id, &code],
        )
        .await?;
    if failed == 1 {
        ExportStatus::Failed.count_finished(metrics);
    }
    Ok(())
}

/// Back to PENDING while its job waits for a retry; the code says why. Call it in the
/// transaction that gives its job back to the queue.
pub async fn retry_later(db: &impl Sql, export_id: Uuid, code: FailureCode) -> Result<(), DbError> {
    db.execute(
        "UPDATE exports SET status = 'PENDING', error_code = $2, error = NULL, rows_exported = 0
         WHERE id = $1 AND status = 'PROCESSING'",
        &[&export_id, &code],
    )
    .await?;
    Ok(())
}
