//! `export_statement`: stream one account's rows from the source into a CSV object.
//!
//! Stages overlap through a bounded channel: the source reader encodes rows into CSV chunks and
//! hashes them, while the uploader writes earlier chunks to storage. Memory is bounded by the
//! channel depth, the chunk size and the upload part size, whatever the row count.

use std::time::Instant;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use opentelemetry::KeyValue;
use shared::{
    csv_out::{CsvEncoder, FileBytes},
    exports::{self, Attempt, ExportJobArgs, ExportResult},
    queue::ClaimedJob,
    source::{self, SourceError, Transaction},
    statement::{AccountId, DateRange, ExportFormat},
    storage::{StorageError, Upload},
    tables::TableSpec,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{JobContext, JobError, Setback};

/// Bytes of CSV handed to the uploader at a time.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks in flight between the reader and the uploader.
const CHANNEL_DEPTH: usize = 4;

pub async fn run(ctx: &JobContext, job: &ClaimedJob, cancel: CancellationToken) -> Result<(), JobError> {
    let args: ExportJobArgs = serde_json::from_value(job.args.clone())
        .map_err(|e| JobError::Fatal(anyhow!("malformed job arguments: {e}")))?;
    let attempt = Attempt { export_id: args.export_id, job_id: job.id, token: job.token };
    let export = {
        let db = ctx.pool.get().await.map_err(|e| JobError::Retryable(e.into()))?;
        exports::start(&db, attempt).await?.ok_or(JobError::Fenced)?
    };
    let statement = Statement {
        spec: ctx.tables.get(&export.table_name).ok_or_else(|| {
            JobError::Fatal(anyhow!("table {:?} is not configured for export", export.table_name))
        })?,
        account: AccountId::parse(&export.account_id).map_err(|e| JobError::Fatal(e.into()))?,
        range: DateRange::new(export.date_from, export.date_to, i64::MAX)
            .map_err(|e| JobError::Fatal(e.into()))?,
        format: ExportFormat::parse(&export.format).map_err(|e| JobError::Fatal(e.into()))?,
    };
    let key = format!(
        "exports/{id}/attempt-{n}/statement_{account}_{from}_{to}.{ext}",
        id = export.id,
        n = job.attempt,
        account = statement.account,
        from = statement.range.from(),
        to = statement.range.to(),
        ext = statement.format.extension(),
    );

    let started = Instant::now();
    let upload = ctx.storage.upload(&key, statement.format.content_type()).map_err(storage_error)?;
    let (chunks, receiver) = mpsc::channel(CHANNEL_DEPTH);
    let uploader = tokio::spawn(upload_chunks(upload, receiver));
    let produced = produce(ctx, &statement, attempt, &cancel, &chunks).await;
    if produced.is_ok() {
        let _ = chunks.send(Chunk::Finish).await;
    }
    drop(chunks); // closed without Finish, the uploader aborts: no object appears
    let uploaded = uploader.await.map_err(|e| JobError::Retryable(anyhow!("upload task: {e}")))?;
    // When storage failed, that is the root cause (the reader only saw the uploader stop).
    if let Err(Uploader::Storage(e)) = uploaded {
        return Err(storage_error(e));
    }
    let (rows, size, digest) = produced?;
    if uploaded.is_err() {
        return Err(JobError::Retryable(anyhow!("the upload was abandoned")));
    }

    let result =
        ExportResult { file_key: key.clone(), file_size: size as i64, row_count: rows, sha256: digest };
    let mut db = ctx.pool.get().await.map_err(|e| JobError::Retryable(e.into()))?;
    if !exports::complete(&mut db, attempt, &result, ctx.export_retention).await? {
        // Another attempt owns the export now (or it was cancelled); our object must not linger.
        warn!(export.id = %export.id, key, "attempt fenced out after upload; deleting its object");
        let _ = ctx.storage.delete(&key).await;
        return Err(JobError::Fenced);
    }
    let elapsed = started.elapsed();
    let metrics = &ctx.metrics;
    metrics.exports_finished.add(1, &[KeyValue::new("status", "completed")]);
    metrics.export_duration.record(elapsed.as_secs_f64(), &[]);
    metrics.export_rows.record(rows as u64, &[]);
    metrics.export_bytes.record(size, &[]);
    info!(
        export.id = %export.id,
        rows,
        size_bytes = size,
        duration_ms = elapsed.as_millis() as u64,
        rows_per_s = (rows as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
        "export {} completed",
        export.id
    );
    Ok(())
}

/// What one export reads and writes.
struct Statement<'a> {
    spec: &'a TableSpec,
    account: AccountId,
    range: DateRange,
    format: ExportFormat,
}

enum Chunk {
    Data(Bytes),
    Finish,
}

/// Why the uploader stopped without completing the object.
enum Uploader {
    /// Storage refused or could not be reached.
    Storage(StorageError),
    /// The reader stopped (its own error says why); the upload was aborted.
    Abandoned,
}

/// Writes chunks until `Finish`; a channel closed without it aborts the upload. An aborted
/// multipart upload never becomes an object.
async fn upload_chunks(mut upload: Upload, mut receiver: mpsc::Receiver<Chunk>) -> Result<(), Uploader> {
    loop {
        match receiver.recv().await {
            Some(Chunk::Data(bytes)) => {
                if let Err(e) = upload.write(bytes).await {
                    abort(upload).await;
                    return Err(Uploader::Storage(e));
                }
            }
            Some(Chunk::Finish) => return upload.finish().await.map_err(Uploader::Storage),
            None => {
                abort(upload).await;
                return Err(Uploader::Abandoned);
            }
        }
    }
}

async fn abort(upload: Upload) {
    if let Err(e) = upload.abort().await {
        // Storage is unreachable: the incomplete upload stays invisible (never an object) until
        // the bucket's lifecycle rule for incomplete multipart uploads removes it.
        warn!(error = %e, "could not abort the multipart upload");
    }
}

/// Reads the statement inside one snapshot and sends the file's chunks. Returns rows, bytes
/// and the file's SHA-256.
async fn produce(
    ctx: &JobContext,
    statement: &Statement<'_>,
    attempt: Attempt,
    cancel: &CancellationToken,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<(i64, u64, String), JobError> {
    let mut encoder = CsvEncoder::new(CHUNK_BYTES, ctx.formula_guard);
    encoder.write_header(statement.spec.columns.iter().map(String::as_str));
    let mut file = FileBytes::new(statement.format == ExportFormat::CsvGz);
    let mut rows: i64 = 0;
    let mut last_progress = Instant::now();
    let send = |bytes: Bytes| async move {
        if bytes.is_empty() {
            return Ok(());
        }
        chunks.send(Chunk::Data(bytes)).await.map_err(|_| JobError::Retryable(anyhow!("uploader stopped")))
    };

    let snapshot = ctx.source.snapshot_with_basis(ctx.source_max_lag).await.map_err(source_error)?;
    record_snapshot_basis(ctx, attempt, &snapshot).await?;
    let mut tx: Transaction<'static> = snapshot.tx;
    {
        let sql = statement.spec.select_sql(&statement.account, &statement.range);
        let mut result = mysql_async::prelude::Queryable::query_iter(&mut tx, sql)
            .await
            .map_err(|e| source_error(SourceError::from(e)))?;
        let kinds = source::column_kinds(result.columns_ref());
        while let Some(row) = result.next().await.map_err(|e| source_error(SourceError::from(e)))? {
            let mut not_text = false;
            encoder.write_record(
                &kinds,
                (0..row.len()).map(|i| match row.as_ref(i).map(source::text_value) {
                    Some(Ok(value)) => value,
                    None => None,
                    Some(Err(_)) => {
                        not_text = true;
                        None
                    }
                }),
            );
            if not_text {
                return Err(JobError::Fatal(anyhow!("a column did not arrive as text")));
            }
            rows += 1;
            let Some(csv) = encoder.take_full_chunk() else { continue };
            if cancel.is_cancelled() {
                return Err(JobError::Fenced);
            }
            send(file.push(csv)).await?;
            if last_progress.elapsed() >= ctx.progress_interval {
                last_progress = Instant::now();
                let db = ctx.pool.get().await.map_err(|e| JobError::Retryable(e.into()))?;
                if !exports::record_progress(&db, attempt, rows).await? {
                    return Err(JobError::Fenced);
                }
            }
        }
    }
    tx.commit().await.map_err(|e| source_error(SourceError::from(e)))?;
    send(file.push(encoder.take())).await?;
    let (last, size, digest) = file.finish();
    send(last).await?;
    Ok((rows, size, digest))
}

/// Records in the export what its snapshot was taken against (replica lag, GTID position).
async fn record_snapshot_basis(
    ctx: &JobContext,
    attempt: Attempt,
    snapshot: &source::Snapshot,
) -> Result<(), JobError> {
    let basis = exports::SnapshotBasis {
        lag_seconds: snapshot.lag_seconds.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        position: snapshot.position.clone(),
    };
    let db = ctx.pool.get().await.map_err(|e| JobError::Retryable(e.into()))?;
    if exports::record_snapshot_basis(&db, attempt, &basis).await? { Ok(()) } else { Err(JobError::Fenced) }
}

fn source_error(e: SourceError) -> JobError {
    if e.is_retryable() { JobError::Retryable(e.into()) } else { JobError::Fatal(e.into()) }
}

fn storage_error(e: StorageError) -> JobError {
    JobError::Retryable(anyhow::Error::from(e).context("storage"))
}

/// Keeps the export row in step with its job: PENDING while a retry waits or after a release,
/// FAILED for good.
pub async fn on_setback(ctx: &JobContext, args: &serde_json::Value, setback: Setback, message: &str) {
    let Ok(args) = serde_json::from_value::<ExportJobArgs>(args.clone()) else { return };
    let outcome = async {
        let db = ctx.pool.get().await.context("postgres")?;
        match setback {
            Setback::Retrying | Setback::Released => {
                exports::retry_later(&db, args.export_id, message).await?
            }
            Setback::Failed => {
                exports::fail(&db, args.export_id, message).await?;
                ctx.metrics.exports_finished.add(1, &[KeyValue::new("status", "failed")]);
            }
        }
        anyhow::Ok(())
    };
    if let Err(e) = outcome.await {
        warn!(export.id = %args.export_id, error = %e, "could not record the failed attempt");
    }
}
