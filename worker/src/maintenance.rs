//! Periodic maintenance.
//!
//! Every worker rescues expired leases at every tick: the rescue skips rows another worker is
//! rescuing, so any number may run it, and a leader that hangs (SIGSTOP, a stalled VM) cannot
//! stop it. The rest runs on one worker at a time. Leadership is a Postgres session advisory
//! lock held on a dedicated connection: if its worker dies, the connection closes, the lock is
//! released and another worker takes over at its next tick. The leader runs the scheduler
//! (recurring statements, [`crate::scheduling`]) at every tick, cleans up after uploads
//! nobody will finish (the upload journal), deletes the files of exports past retention
//! (marking them EXPIRED so deduplication stops returning them) and prunes old finished jobs and
//! expired idempotency keys in bounded batches.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use secrecy::SecretString;
use shared::{
    config::Retention,
    db::{AdvisoryLock, DbError},
    exports,
    failure::FailureCode,
    idempotency, queue, uploads, workers,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::jobs::{JobContext, Setback};
/// Rows handled per statement, so no maintenance step becomes one long transaction.
const BATCH: i64 = 500;
/// Batches per step per pass: a backlog is worked off over several passes.
const MAX_BATCHES: usize = 20;
/// Lease rescue runs every tick; retention and pruning every this many ticks (they have
/// nothing urgent to do, and an idle leader should cost Postgres next to nothing).
const HOUSEKEEPING_EVERY: u64 = 6;

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Expired leases rescued (back to the queue, or failed when no attempts remained).
    pub rescued: usize,
    pub rescued_failed: usize,
    /// Abandoned uploads (journalled, their claim gone) whose leftovers were removed.
    pub cleaned_uploads: usize,
    pub expired: usize,
    pub pruned: u64,
    /// Export rows pruned (`EXPORT_ROW_RETENTION_DAYS`).
    pub pruned_exports: u64,
    /// Idempotency keys past their expiry deleted (`IDEMPOTENCY_KEY_TTL_SECS`).
    pub pruned_idempotency_keys: u64,
    /// Rows of `export_hourly_changes` folded into the hourly analytics.
    pub folded_changes: i64,
    /// Local staging files from before the upload journal, untouched for a day.
    pub abandoned_uploads: u64,
    /// What the scheduler did (recurring statements).
    pub schedules: shared::schedules::scheduler::Report,
}

/// A local upload's staging file untouched this long belongs to a killed worker.
const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(86_400);

pub struct Maintenance {
    ctx: JobContext,
    database_url: SecretString,
    retention: Retention,
    /// The dedicated session that holds (or tries for) the lock.
    session: Option<tokio_postgres::Client>,
    leader: bool,
    ticks: u64,
    /// Mirrors `leader` for the registry heartbeat.
    flag: Arc<AtomicBool>,
    /// The audit chain's head as last logged.
    anchored: Option<i64>,
}

impl Maintenance {
    pub fn new(ctx: JobContext, database_url: SecretString, retention: Retention) -> Self {
        Self {
            ctx,
            database_url,
            retention,
            session: None,
            leader: false,
            ticks: 0,
            flag: Arc::default(),
            anchored: None,
        }
    }

    pub(crate) fn with_leader_flag(self, flag: Arc<AtomicBool>) -> Self {
        Self { flag, ..self }
    }

    fn set_leader(&mut self, leader: bool) {
        self.leader = leader;
        self.flag.store(leader, Ordering::Relaxed);
    }

    /// Takes leadership if nobody holds it. Returns whether this process leads.
    pub async fn try_lead(&mut self) -> bool {
        if self.session.as_ref().is_some_and(|s| s.is_closed()) {
            self.session = None;
            self.set_leader(false);
        }
        if self.leader {
            return true;
        }
        if self.session.is_none() {
            match shared::db::connect(&self.database_url).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    self.session = Some(client);
                }
                Err(e) => {
                    warn!(error = %e, "maintenance: cannot connect to Postgres");
                    return false;
                }
            }
        }
        let session = self.session.as_ref().expect("connected above");
        match AdvisoryLock::MaintenanceLeader.try_lock(session).await {
            Ok(leads) => {
                self.set_leader(leads);
                if self.leader {
                    info!("this worker now leads maintenance");
                }
            }
            Err(e) => {
                warn!(error = %e, "maintenance: lock attempt failed");
                self.session = None;
            }
        }
        self.leader
    }

    /// Gives leadership up (graceful shutdown) so another worker takes over at once.
    pub async fn resign(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = AdvisoryLock::MaintenanceLeader.unlock(&session).await;
        }
        self.set_leader(false);
    }

    /// One maintenance pass: lease rescue on every worker; if this process leads, upload
    /// cleanup, and housekeeping (retention, pruning) on every `HOUSEKEEPING_EVERY`th pass,
    /// starting with the first. `None` when it does not lead.
    pub async fn tick(&mut self) -> Option<Report> {
        let (rescued, rescued_failed) = rescue(&self.ctx).await;
        let leads = self.try_lead().await;
        let report = if leads {
            let housekeeping = self.ticks.is_multiple_of(HOUSEKEEPING_EVERY);
            self.ticks += 1;
            let report = run_pass(&self.ctx, self.retention, housekeeping).await;
            if housekeeping {
                self.anchor_audit_chain().await;
            }
            Report { rescued, rescued_failed, ..report }
        } else {
            Report { rescued, rescued_failed, ..Report::default() }
        };
        if report != Report::default() {
            info!(?report, "maintenance pass");
        }
        leads.then_some(report)
    }

    /// Logs the audit chain's head when it has moved since the last time: the log, shipped
    /// away from the database, keeps a record against which `statement-api audit verify
    /// --expect SEQ:HEX` shows a chain cut back or rewritten since.
    async fn anchor_audit_chain(&mut self) {
        let head = async { shared::audit::head(&self.ctx.pool.get().await?).await }.await;
        match head {
            Ok(Some((seq, hash))) if self.anchored != Some(seq) => {
                info!(audit.head = %format!("{seq}:{}", hex::encode(&hash)), "audit chain head");
                self.anchored = Some(seq);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "maintenance: reading the audit chain's head failed"),
        }
    }

    pub(crate) async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.tick().await;
        }
        self.resign().await;
    }
}

/// Every maintenance step once, regardless of leadership (the caller ensures it).
pub async fn run_once(ctx: &JobContext, retention: Retention) -> Report {
    let (rescued, rescued_failed) = rescue(ctx).await;
    Report { rescued, rescued_failed, ..run_pass(ctx, retention, true).await }
}

/// Rescues expired leases, recording each setback in its kind's tables in the same
/// transaction. Returns how many were rescued and how many of them failed for good.
async fn rescue(ctx: &JobContext) -> (usize, usize) {
    let rescued = async {
        let mut db = ctx.pool.get().await?;
        let tx = db.transaction().await?;
        let rescued = queue::rescue_expired(&tx).await?;
        for job in &rescued {
            let (setback, code) = if job.retrying {
                (Setback::Retrying, FailureCode::WorkerLost)
            } else {
                warn!(job.id = job.id, "job failed for good after its last lease expired");
                (Setback::Failed, FailureCode::AttemptsExhausted)
            };
            ctx.kinds.on_setback(ctx, &tx, &job.kind, &job.args, setback, code).await?;
        }
        tx.commit().await?;
        Ok::<_, DbError>(rescued)
    };
    match rescued.await {
        Ok(rescued) => (rescued.len(), rescued.iter().filter(|j| !j.retrying).count()),
        Err(e) => {
            warn!(error = %e, "maintenance: lease rescue failed");
            (0, 0)
        }
    }
}

async fn run_pass(ctx: &JobContext, retention: Retention, housekeeping: bool) -> Report {
    let mut report = Report::default();
    let db = match ctx.pool.get().await {
        Ok(db) => db,
        Err(e) => {
            warn!(error = %e, "maintenance: Postgres unavailable");
            return report;
        }
    };

    match uploads::abandoned(&db, ctx.abandoned_upload_age, BATCH).await {
        Ok(abandoned) => {
            for upload in abandoned {
                let cleaned = match ctx.storage.discard(&upload.file_key, upload.upload_id.as_deref()).await {
                    Ok(()) => uploads::forget(&db, &upload.file_key).await.map_err(anyhow::Error::from),
                    Err(e) => Err(e.into()),
                };
                match cleaned {
                    Ok(()) => report.cleaned_uploads += 1,
                    Err(e) => {
                        // Storage is most likely out: the next pass retries, instead of this one
                        // waiting out the retry budget once per upload.
                        warn!(key = upload.file_key, error = %e, "maintenance: cleaning up an abandoned upload failed; will retry");
                        break;
                    }
                }
            }
        }
        Err(e) => warn!(error = %e, "maintenance: listing abandoned uploads failed"),
    }
    report.schedules = crate::scheduling::run(ctx).await;
    match exports::stats::fold_changes(&db).await {
        Ok(n) => report.folded_changes = n,
        Err(e) => warn!(error = %e, "maintenance: folding export analytics failed"),
    }
    if !housekeeping {
        return report;
    }

    'expiry: for _ in 0..MAX_BATCHES {
        let due = match exports::due_to_expire(&db, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "maintenance: listing expired exports failed");
                break;
            }
        };
        let n = due.len();
        for (id, file_key) in due {
            if let Some(key) = file_key {
                // Delete first: a file without a COMPLETED row is never handed out, while a
                // COMPLETED row without its file would be.
                if let Err(e) = ctx.storage.delete(&key).await {
                    warn!(export.id = %id, error = %e, "maintenance: deleting an expired file failed; will retry");
                    break 'expiry;
                }
            }
            match exports::mark_expired(&db, id).await {
                Ok(()) => report.expired += 1,
                Err(e) => warn!(export.id = %id, error = %e, "maintenance: marking an export expired failed"),
            }
        }
        if n < BATCH as usize {
            break;
        }
    }

    report.pruned = in_batches("finished jobs", || queue::prune_finished(&db, retention.jobs, BATCH)).await;
    if let Some(older_than) = retention.export_rows {
        report.pruned_exports =
            in_batches("export rows", || exports::prune_rows(&db, older_than, BATCH)).await;
    }
    report.pruned_idempotency_keys =
        in_batches("idempotency keys", || idempotency::prune_expired(&db, BATCH)).await;

    if let Err(e) = workers::prune_silent(&db, Duration::from_secs(600)).await {
        debug!(error = %e, "maintenance: pruning silent workers failed");
    }
    match ctx.storage.sweep_abandoned_uploads(ABANDONED_UPLOAD_AGE).await {
        Ok(n) => report.abandoned_uploads = n,
        Err(e) => warn!(error = %e, "maintenance: sweeping abandoned uploads failed"),
    }
    report
}

/// Calls `prune` (each call deletes up to `BATCH` rows) until a call deletes fewer, at most
/// `MAX_BATCHES` times; returns how many rows went. A failure is logged and ends the run (the
/// next pass tries again).
async fn in_batches<F, Fut>(what: &str, mut prune: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, DbError>>,
{
    let mut pruned = 0;
    for _ in 0..MAX_BATCHES {
        match prune().await {
            Ok(n) => {
                pruned += n;
                if n < BATCH as u64 {
                    break;
                }
            }
            Err(e) => {
                warn!(error = %e, "maintenance: pruning {what} failed");
                break;
            }
        }
    }
    pruned
}
