//! The upload journal (table `uploads`): every upload a worker starts, until it is recorded or
//! cleaned up.
//!
//! A worker journals its upload before the first byte and removes the row when the export's
//! COMPLETED record is written (same transaction) or when its own cleanup succeeded. A row whose
//! claim no longer runs belongs to an attempt that was killed, fenced out or could not clean up
//! (storage or Postgres down at that moment): maintenance removes what it left in storage and
//! then the row. Keys are per claim, so removing them never touches another attempt's file.

use std::time::Duration;

use crate::db::Sql;

use crate::{db::DbError, exports::Attempt, queue};

/// Journals an upload to `file_key` by `attempt`, before it starts.
pub async fn begin(db: &impl Sql, file_key: &str, attempt: Attempt) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO uploads (file_key, export_id, job_id, attempt_token) VALUES ($1, $2, $3, $4)",
        &[&file_key, &attempt.export_id, &attempt.job_id, &attempt.token],
    )
    .await?;
    Ok(())
}

/// Records the S3 multipart upload id of a journalled upload. `false` when the row is gone
/// (maintenance already cleaned up after this claim): the caller must abort the upload.
pub async fn record_upload_id(db: &impl Sql, file_key: &str, upload_id: &str) -> Result<bool, DbError> {
    Ok(db.execute("UPDATE uploads SET upload_id = $2 WHERE file_key = $1", &[&file_key, &upload_id]).await?
        == 1)
}

/// Removes an upload from the journal: it was recorded, or everything it left is gone.
pub async fn forget(db: &impl Sql, file_key: &str) -> Result<(), DbError> {
    db.execute("DELETE FROM uploads WHERE file_key = $1", &[&file_key]).await?;
    Ok(())
}

/// An upload nobody will finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// Its object key.
    pub file_key: String,
    /// Its S3 multipart upload id (none on local disk, or not started).
    pub upload_id: Option<String>,
}

/// Journalled uploads whose claim no longer runs (completed, failed, released, rescued or
/// cancelled), started at least `safety_age` ago, oldest first, at most `batch`. A claim's token
/// is never issued again, so such an upload can never be recorded as an export's file.
pub async fn abandoned(db: &impl Sql, safety_age: Duration, batch: i64) -> Result<Vec<Abandoned>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT file_key, upload_id FROM uploads u
                 WHERE started_at < now() - make_interval(secs => $1)
                   AND NOT {claim_runs}
                 ORDER BY started_at
                 LIMIT $2",
                claim_runs = queue::attempt_holds("u.job_id", "u.attempt_token")
            ),
            &[&safety_age.as_secs_f64(), &batch],
        )
        .await?;
    Ok(rows.iter().map(|r| Abandoned { file_key: r.get(0), upload_id: r.get(1) }).collect())
}
