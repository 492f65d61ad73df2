//! `export_statement`: stream one account's rows from the source into a CSV object.
//!
//! Stages overlap through a bounded channel: the source reader encodes rows into CSV chunks and
//! hashes them, while the uploader writes earlier chunks to storage. Memory is bounded by the
//! channel depth, the chunk size and the upload part size, whatever the row count.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use deadpool_postgres::Transaction;
use futures::FutureExt as _;
use mysql_async::{Conn, prelude::Queryable as _};
use shared::{
    csv_out::{ColumnKind, CsvEncoder, FileBytes},
    db::DbError,
    exports::{self, Attempt, Export, ExportResult, ExportStatement},
    failure::{Cause, FailureCode},
    jsonl_out::{JsonKind, JsonlEncoder, json_kinds},
    ledger::StatementError,
    queue::{ClaimedJob, JobKind as _},
    source::{self, Source, SourceError, Statements},
    statement::{AccountId, DateRange, ExportFormat, Layout, StatementZone},
    storage::{StorageError, Upload},
    tables::{Bounds, TableSpec},
    uploads,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Job, JobContext, JobError, Setback};
use crate::holds::HoldPoint;

/// Bytes of the file handed to the uploader at a time.
pub(super) const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks in flight between the reader and the uploader.
const CHANNEL_DEPTH: usize = 4;
/// Longest an attempt spends removing its own upload; maintenance finishes what it could not.
const CLEAN_UP_TIMEOUT: Duration = Duration::from_secs(10);

impl Job for ExportStatement {
    async fn run(
        &self,
        ctx: &JobContext,
        job: &ClaimedJob,
        cancel: CancellationToken,
    ) -> Result<(), JobError> {
        run(ctx, self.export_id, job, cancel).await
    }

    /// Keeps the export row in step with its job: PENDING with the failure's code while a
    /// retry waits or after a release or rescue, FAILED for good.
    async fn on_setback(
        &self,
        ctx: &JobContext,
        tx: &Transaction<'_>,
        setback: Setback,
        code: FailureCode,
    ) -> Result<(), DbError> {
        match setback {
            Setback::Retrying | Setback::Released => exports::retry_later(tx, self.export_id, code).await,
            Setback::Failed => exports::fail(tx, self.export_id, code, &ctx.metrics).await,
        }
    }

    fn span(&self, job: &ClaimedJob) -> tracing::Span {
        tracing::info_span!(
            "job",
            job.id = job.id,
            job.kind = Self::KIND,
            attempt = job.attempt,
            export.id = %self.export_id
        )
    }
}

async fn run(
    ctx: &JobContext,
    export_id: uuid::Uuid,
    job: &ClaimedJob,
    cancel: CancellationToken,
) -> Result<(), JobError> {
    let attempt = Attempt { export_id, job_id: job.id, token: job.token };
    let export = {
        let db = ctx.pool.get().await?;
        exports::start(&db, attempt).await?.ok_or(JobError::Fenced)?
    };
    let mut statement = Statement {
        spec: ctx.tables.get(&export.table_name).ok_or_else(|| {
            let cause = anyhow!("table {:?} is not configured for export", export.table_name);
            JobError::fatal(FailureCode::TableNotConfigured, cause)
        })?,
        account: AccountId::parse(&export.account_id)
            .map_err(|e| JobError::fatal(FailureCode::Internal, e))?,
        range: DateRange::new(export.date_from, export.date_to, i64::MAX)
            .map_err(|e| JobError::fatal(FailureCode::Internal, e))?,
        format: ExportFormat::parse(&export.format).map_err(|e| JobError::fatal(FailureCode::Internal, e))?,
        time_zone: StatementZone::parse(&export.time_zone)
            .map_err(|e| JobError::fatal(FailureCode::Internal, e))?,
        export: &export,
        currencies_first: false,
    };
    // Each claim writes its own key: a claim that lost the job can never replace, or delete,
    // the file of the claim that replaced it.
    let key = format!(
        "exports/{id}/{claim}/statement_{account}_{from}_{to}.{ext}",
        id = export.id,
        claim = job.token.simple(),
        account = statement.account,
        from = statement.range.from(),
        to = statement.range.to(),
        ext = statement.format.extension(),
    );
    {
        // Journalled before the first byte, so whatever this attempt leaves behind is found.
        let db = ctx.pool.get().await?;
        uploads::begin(&db, &key, attempt).await?;
    }
    let watch = Watch { cancel: &cancel, stall: ctx.stall_timeout };
    let started = Instant::now();
    let mut upload_id = None;
    let uploaded = loop {
        let e = match upload(ctx, &statement, attempt, &key, &watch, &mut upload_id).await {
            Ok(result) => break result,
            Err(e) => e,
        };
        clean_up(ctx, &key, upload_id.take().as_deref()).await;
        if matches!(e, JobError::Replan) && !statement.currencies_first {
            // What was written is gone (and its journal entry); the file starts over.
            statement.currencies_first = true;
            let db = ctx.pool.get().await?;
            uploads::begin(&db, &key, attempt).await?;
            continue;
        }
        if let JobError::Fatal(super::Failure { detail: Some(detail), .. }) = &e {
            record_failure_detail(ctx, attempt, detail).await;
        }
        return Err(e);
    };

    ctx.holds.reach(HoldPoint::BeforeRecord).await;
    let mut db = ctx.pool.get().await?;
    // An error here may hide a commit whose answer was lost: the file is left for maintenance,
    // which removes it only if the journal says it was never recorded.
    if !exports::complete(&mut db, attempt, &uploaded, ctx.export_retention, &ctx.metrics).await? {
        // Another attempt owns the export now (or it was cancelled): our own object must go.
        warn!(export.id = %export.id, key, "attempt fenced out after upload; deleting its object");
        drop(db);
        clean_up(ctx, &key, upload_id.as_deref()).await;
        return Err(JobError::Fenced);
    }
    let (rows, size) = (uploaded.row_count, uploaded.file_size as u64);
    let elapsed = started.elapsed();
    let metrics = &ctx.metrics;
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

/// Streams the statement into a new object at `key`. `upload_id` is set as soon as storage
/// has one, so the caller can clean up whatever happens next.
async fn upload(
    ctx: &JobContext,
    statement: &Statement<'_>,
    attempt: Attempt,
    key: &str,
    watch: &Watch<'_>,
    upload_id: &mut Option<String>,
) -> Result<ExportResult, JobError> {
    let upload = ctx.storage.upload(key, statement.format.content_type()).await.map_err(storage_error)?;
    if let Some(id) = upload.upload_id() {
        *upload_id = Some(id.to_owned());
        let db = ctx.pool.get().await?;
        if !uploads::record_upload_id(&db, key, id).await? {
            return Err(JobError::Fenced); // maintenance cleaned up after this claim already
        }
    }
    let (chunks, receiver) = mpsc::channel(CHANNEL_DEPTH);
    let uploader = tokio::spawn(upload_chunks(upload, receiver));
    let produced = produce(ctx, statement, attempt, watch, &chunks).await;
    let finish = produced.is_ok() && {
        ctx.holds.reach(HoldPoint::BeforeUploadFinish).await;
        !watch.cancel.is_cancelled()
    };
    if finish {
        let _ = chunks.send(Chunk::Finish).await;
    }
    drop(chunks); // closed without Finish, the uploader aborts: no object appears
    let mut uploader = uploader;
    let uploaded = if finish {
        uploader.await
    } else {
        // Stopping: an uploader stuck in storage retries is not waited out; what it leaves is
        // journalled, and the caller's cleanup or maintenance removes it.
        match tokio::time::timeout(CLEAN_UP_TIMEOUT, &mut uploader).await {
            Ok(uploaded) => uploaded,
            Err(_) => {
                uploader.abort();
                return Err(produced.err().unwrap_or(JobError::Fenced));
            }
        }
    };
    let uploaded =
        uploaded.map_err(|e| JobError::retryable(FailureCode::Internal, anyhow!("upload task: {e}")))?;
    // When storage failed, that is the root cause (the reader only saw the uploader stop).
    if let Err(Uploader::Storage(e)) = uploaded {
        return Err(storage_error(e));
    }
    let (rows, size, digest, statement_facts) = produced?;
    if !finish {
        return Err(JobError::Fenced); // cancelled or released while the last bytes went up
    }
    if uploaded.is_err() {
        return Err(JobError::retryable(FailureCode::Internal, anyhow!("the upload was abandoned")));
    }
    Ok(ExportResult {
        file_key: key.to_owned(),
        file_size: size as i64,
        row_count: rows,
        sha256: digest,
        statement: statement_facts,
    })
}

/// Removes what an attempt that will not be recorded left in storage, then its journal entry.
/// Whatever fails here stays journalled, and maintenance retries it.
/// Bounded: with storage out, the attempt (a cancel, a shutdown) does not wait out the S3
/// retry budget here.
async fn clean_up(ctx: &JobContext, key: &str, upload_id: Option<&str>) {
    let discarded = tokio::time::timeout(CLEAN_UP_TIMEOUT, ctx.storage.discard(key, upload_id)).await;
    if let Err(e) = discarded.unwrap_or(Err(StorageError::Timeout(CLEAN_UP_TIMEOUT))) {
        warn!(key, error = %Cause(&e), "could not remove this attempt's upload; maintenance will retry");
        return;
    }
    let forgotten = match ctx.pool.get().await {
        Ok(db) => uploads::forget(&db, key).await.map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = forgotten {
        warn!(key, error = %e, "could not update the upload journal; maintenance will");
    }
}

/// Waits on the source for as long as it makes progress and the attempt holds its job.
pub(super) struct Watch<'a> {
    cancel: &'a CancellationToken,
    /// The longest the source may send nothing.
    stall: Duration,
}

impl Watch<'_> {
    /// Runs one source step: `Fenced` as soon as the attempt is cancelled (or released at
    /// shutdown), retryable when the source sends nothing for the stall timeout. A step that is
    /// ready at once (rows already buffered) costs one poll.
    pub(super) async fn source<T, E: Into<JobError>>(
        &self,
        step: impl Future<Output = Result<T, E>>,
    ) -> Result<T, JobError> {
        let mut step = std::pin::pin!(step);
        if let Some(done) = (&mut step).now_or_never() {
            return done.map_err(Into::into);
        }
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(JobError::Fenced),
            done = tokio::time::timeout(self.stall, step) => match done {
                Ok(done) => done.map_err(Into::into),
                Err(_) => Err(JobError::retryable(
                    FailureCode::SourceStalled,
                    anyhow!("the source database made no progress for {} s", self.stall.as_secs_f64()),
                )),
            },
        }
    }
}

/// What one export reads and writes.
pub(super) struct Statement<'a> {
    pub(super) export: &'a Export,
    pub(super) spec: &'a TableSpec,
    pub(super) account: AccountId,
    pub(super) range: DateRange,
    pub(super) format: ExportFormat,
    pub(super) time_zone: StatementZone,
    /// Read the period's currencies (and their totals) before the first entry, even where the
    /// format could start from the first entry's currency: set when such a start met a second
    /// currency ([`JobError::Replan`]).
    pub(super) currencies_first: bool,
}

pub(super) enum Chunk {
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
        warn!(error = %Cause(&e), "could not abort the multipart upload");
    }
}

/// Reads the statement as one consistent snapshot (one SELECT), on a connection of its own,
/// and sends the file's chunks. Returns rows, bytes and the file's SHA-256.
async fn produce(
    ctx: &JobContext,
    statement: &Statement<'_>,
    attempt: Attempt,
    watch: &Watch<'_>,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<(i64, u64, String, Option<exports::StatementFacts>), JobError> {
    let mut conn = watch.source(ctx.source.connect()).await?;
    let read = read(ctx, &mut conn, statement, attempt, watch, chunks).await;
    if read.is_err() {
        Source::discard(conn).await;
    }
    read
}

async fn read(
    ctx: &JobContext,
    conn: &mut Conn,
    statement: &Statement<'_>,
    attempt: Attempt,
    watch: &Watch<'_>,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<(i64, u64, String, Option<exports::StatementFacts>), JobError> {
    let mut sink = Sink::new(ctx, attempt, watch, chunks, statement.format.gzip);
    let (rows, facts) = match statement.format.layout {
        Layout::Bank(format) => super::bank_statement::read(ctx, conn, statement, format, &mut sink).await?,
        Layout::Csv | Layout::Jsonl => (read_rows(ctx, conn, statement, &mut sink).await?, None),
    };
    let (size, digest) = sink.finish().await?;
    Ok((rows, size, digest, facts))
}

/// Writes the table's rows (CSV or JSON Lines) from one SELECT.
async fn read_rows(
    ctx: &JobContext,
    conn: &mut Conn,
    statement: &Statement<'_>,
    sink: &mut Sink<'_>,
) -> Result<i64, JobError> {
    let watch = sink.watch;
    let names = statement.spec.columns.iter().map(String::as_str);
    let mut encoder = match statement.format.layout {
        Layout::Jsonl => {
            let mut encoder = JsonlEncoder::new(CHUNK_BYTES);
            encoder.set_columns(names);
            RowEncoder::Jsonl(encoder, Vec::new())
        }
        _ => {
            let mut encoder = CsvEncoder::new(CHUNK_BYTES, ctx.formula_guard);
            encoder.write_header(names);
            RowEncoder::Csv(Box::new(encoder), Vec::new())
        }
    };
    let mut rows: i64 = 0;
    let index = watch.source(source::export_index(conn, statement.spec)).await?;
    let date_column = [statement.spec.date_column.as_str()];
    let zones =
        watch.source(source::column_zones(conn, statement.spec, &date_column, &statement.time_zone)).await?;
    let bounds = Bounds::new(&statement.range, &statement.time_zone, zones[0].as_ref());
    let sql = statement.spec.select_sql(&statement.account, &bounds, index.as_deref());
    let snapshot =
        watch.source(ctx.source.snapshot_with_basis(conn, ctx.source_max_lag, Statements::One)).await?;
    {
        // The statement starts (and opens its read view) right after the position was read;
        // the basis is recorded once it runs, before its first row is taken.
        let mut result = watch.source(async { Ok::<_, SourceError>(conn.query_iter(sql).await?) }).await?;
        record_snapshot_basis(ctx, sink.attempt, &snapshot).await?;
        encoder.set_kinds(result.columns_ref());
        while let Some(row) = watch.source(async { Ok::<_, SourceError>(result.next().await?) }).await? {
            let mut not_text = false;
            encoder.write_record((0..row.len()).map(|i| match row.as_ref(i).map(source::text_value) {
                Some(Ok(value)) => value,
                None => None,
                Some(Err(_)) => {
                    not_text = true;
                    None
                }
            }));
            if not_text {
                return Err(JobError::fatal(FailureCode::SourceUnexpectedData, source::NotText));
            }
            rows += 1;
            if let Some(bytes) = encoder.take_full_chunk() {
                sink.send(bytes, rows).await?;
            }
        }
    }
    watch.source(snapshot.end(conn)).await?;
    sink.send(encoder.take(), rows).await?;
    Ok(rows)
}

/// The rows' encoder, with each column's kind once the result's columns are known.
enum RowEncoder {
    Csv(Box<CsvEncoder>, Vec<ColumnKind>),
    Jsonl(JsonlEncoder, Vec<JsonKind>),
}

impl RowEncoder {
    fn set_kinds(&mut self, columns: &[mysql_async::Column]) {
        match self {
            Self::Csv(_, kinds) => *kinds = source::column_kinds(columns),
            Self::Jsonl(_, kinds) => *kinds = json_kinds(columns),
        }
    }

    fn write_record<'a>(&mut self, fields: impl IntoIterator<Item = Option<&'a [u8]>>) {
        match self {
            Self::Csv(encoder, kinds) => encoder.write_record(kinds, fields),
            Self::Jsonl(encoder, kinds) => encoder.write_record(kinds, fields),
        }
    }

    fn take_full_chunk(&mut self) -> Option<Bytes> {
        match self {
            Self::Csv(encoder, _) => encoder.take_full_chunk(),
            Self::Jsonl(encoder, _) => encoder.take_full_chunk(),
        }
    }

    fn take(&mut self) -> Bytes {
        match self {
            Self::Csv(encoder, _) => encoder.take(),
            Self::Jsonl(encoder, _) => encoder.take(),
        }
    }
}

/// Where a reader's bytes go: gzipped when asked, hashed and counted as stored, handed to the
/// uploader; progress is recorded as they go.
pub(super) struct Sink<'a> {
    ctx: &'a JobContext,
    pub(super) attempt: Attempt,
    pub(super) watch: &'a Watch<'a>,
    chunks: &'a mpsc::Sender<Chunk>,
    file: FileBytes,
    last_progress: Instant,
    first_chunk_sent: bool,
}

impl<'a> Sink<'a> {
    fn new(
        ctx: &'a JobContext,
        attempt: Attempt,
        watch: &'a Watch<'a>,
        chunks: &'a mpsc::Sender<Chunk>,
        gzip: bool,
    ) -> Self {
        Self {
            ctx,
            attempt,
            watch,
            chunks,
            file: FileBytes::new(gzip),
            last_progress: Instant::now(),
            first_chunk_sent: false,
        }
    }

    /// Sends `bytes` (the file's content, before gzip), `rows` written so far.
    pub(super) async fn send(&mut self, bytes: Bytes, rows: i64) -> Result<(), JobError> {
        if self.watch.cancel.is_cancelled() {
            return Err(JobError::Fenced);
        }
        let stored = self.file.push(bytes);
        self.upload(stored).await?;
        if !self.first_chunk_sent {
            self.first_chunk_sent = true;
            self.ctx.holds.reach(HoldPoint::AfterFirstChunk).await;
        }
        if self.last_progress.elapsed() >= self.ctx.progress_interval {
            self.last_progress = Instant::now();
            let db = self.ctx.pool.get().await?;
            if !exports::record_progress(&db, self.attempt, rows).await? {
                return Err(JobError::Fenced);
            }
        }
        Ok(())
    }

    async fn upload(&self, bytes: Bytes) -> Result<(), JobError> {
        Sink::upload_to(self.watch, self.chunks, bytes).await
    }

    async fn upload_to(
        watch: &Watch<'_>,
        chunks: &mpsc::Sender<Chunk>,
        bytes: Bytes,
    ) -> Result<(), JobError> {
        if bytes.is_empty() {
            return Ok(());
        }
        // A cancel is noticed while storage is slow to take the bytes, too.
        tokio::select! {
            biased;
            () = watch.cancel.cancelled() => Err(JobError::Fenced),
            sent = chunks.send(Chunk::Data(bytes)) => {
                sent.map_err(|_| JobError::retryable(FailureCode::Internal, anyhow!("uploader stopped")))
            }
        }
    }

    /// Sends the file's last bytes: its size and hex SHA-256.
    async fn finish(self) -> Result<(u64, String), JobError> {
        let Self { ctx: _, attempt: _, watch, chunks, file, last_progress: _, first_chunk_sent: _ } = self;
        let (last, size, digest) = file.finish();
        Sink::upload_to(watch, chunks, last).await?;
        Ok((size, digest))
    }
}

/// Records the client-safe detail of a data failure before the failure itself is recorded; a
/// detail that cannot be written is logged (the failure's code still reaches the client).
async fn record_failure_detail(ctx: &JobContext, attempt: Attempt, detail: &str) {
    let recorded = match ctx.pool.get().await {
        Ok(db) => exports::record_failure_detail(&db, attempt, detail).await.map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = recorded {
        warn!(export.id = %attempt.export_id, error = %e, "could not record the failure's detail");
    }
}

/// Records in the export what its snapshot was taken against (replica lag, GTID position).
pub(super) async fn record_snapshot_basis(
    ctx: &JobContext,
    attempt: Attempt,
    snapshot: &source::Snapshot,
) -> Result<(), JobError> {
    let basis = exports::SnapshotBasis {
        lag_seconds: snapshot.lag_seconds.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        position: snapshot.position.clone(),
    };
    let db = ctx.pool.get().await?;
    if exports::record_snapshot_basis(&db, attempt, &basis).await? { Ok(()) } else { Err(JobError::Fenced) }
}

impl From<SourceError> for JobError {
    fn from(e: SourceError) -> Self {
        let code = e.failure_code();
        if e.is_retryable() { JobError::retryable(code, e) } else { JobError::fatal(code, e) }
    }
}

impl From<StatementError> for JobError {
    /// A data problem is fatal, with its client-safe detail.
    fn from(e: StatementError) -> Self {
        match e {
            StatementError::Source(e) => e.into(),
            StatementError::Data { code, detail } => JobError::fatal_with_detail(code, detail),
        }
    }
}

/// Storage failures are retried, whatever their class: a full disk or a revoked permission is
/// fixed by an operator while the export waits.
fn storage_error(e: StorageError) -> JobError {
    JobError::retryable(e.failure_code(), e)
}
