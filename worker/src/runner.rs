//! The worker loop: claim jobs up to the free slots, run them, heartbeat their leases in one
//! batched statement, retry with backoff, drain on shutdown.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use opentelemetry::KeyValue;
use secrecy::SecretString;
use shared::{
    config::WorkerConfig,
    db::DbError,
    failure::{Cause, FailureCode},
    queue::{self, ClaimCursor, ClaimedJob, FailOutcome},
    workers,
};
use time::OffsetDateTime;
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};
use uuid::Uuid;

use crate::{
    holds::HoldPoint,
    jobs::{Backoff, JobContext, JobError, Setback},
    maintenance::Maintenance,
    storage_check,
};

/// Backoff after failed attempt `attempt` (1-based): `base` doubling per attempt, capped at
/// `max`, with ±25 % jitter so a burst of failures does not retry in lockstep.
pub(crate) fn backoff(attempt: i32, base: Duration, max: Duration) -> Duration {
    let nominal = base.as_secs_f64() * 2f64.powi(attempt.clamp(1, 30) - 1);
    let capped = nominal.min(max.as_secs_f64());
    let jitter = 0.75 + 0.5 * unit_random();
    Duration::from_secs_f64(capped * jitter)
}

/// A number in [0, 1), for jitter.
pub(crate) fn unit_random() -> f64 {
    (Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Jobs this process holds: fencing token → cancellation of the running attempt.
type Running = Arc<Mutex<HashMap<Uuid, CancellationToken>>>;

pub struct Runner {
    ctx: JobContext,
    config: WorkerConfig,
    database_url: SecretString,
    worker_id: String,
    running: Running,
    /// Where the next claim starts (shared::queue::ClaimCursor): from the head of the queue
    /// once per poll interval.
    cursor: Mutex<ClaimCursor>,
    wake: Arc<Notify>,
    leader: Arc<AtomicBool>,
}

impl Runner {
    /// The instruments this runner records into.
    pub fn metrics(&self) -> Arc<shared::metrics::Metrics> {
        self.ctx.metrics.clone()
    }

    /// A runner whose sessions (LISTEN, the maintenance leader's lock) connect to `database_url`:
    /// [`shared::config::Config::session_database_url`].
    pub fn new(ctx: JobContext, config: WorkerConfig, database_url: SecretString) -> Self {
        let running: Running = Arc::default();
        let held = running.clone();
        ctx.metrics.register_gauge(
            "statement_worker_running_jobs",
            "Jobs this worker is running now.",
            move || held.lock().expect("not poisoned").len() as i64,
        );
        let slots = config.concurrency as i64;
        ctx.metrics.register_gauge(
            "statement_worker_concurrency",
            "Jobs this worker runs at most at once (WORKER_CONCURRENCY).",
            move || slots,
        );
        Self {
            cursor: Mutex::new(ClaimCursor::new(config.poll_interval)),
            ctx,
            config,
            database_url,
            worker_id: format!(
                "{}:{}:{}",
                workers::host(),
                std::process::id(),
                &Uuid::new_v4().simple().to_string()[..8]
            ),
            running,
            wake: Arc::new(Notify::new()),
            leader: Arc::default(),
        }
    }

    /// This runner's test holds.
    pub fn holds(&self) -> &crate::holds::Holds {
        &self.ctx.holds
    }

    /// Claims and runs jobs until `shutdown` resolves. Then it stops claiming, lets running jobs
    /// finish within the grace period, and gives the rest back to the queue for other workers.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        if let Err(e) = self.register().await {
            warn!(error = %e, "could not register in the worker registry");
        }
        let stop = CancellationToken::new();
        let listener = tokio::spawn(listen(self.database_url.clone(), self.wake.clone(), stop.clone()));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.ctx.clone(),
            self.running.clone(),
            self.config.lease,
            self.worker_id.clone(),
            self.leader.clone(),
            stop.clone(),
        ));
        let maintenance =
            Maintenance::new(self.ctx.clone(), self.database_url.clone(), self.config.retention)
                .with_leader_flag(self.leader.clone());
        let maintenance = tokio::spawn(maintenance.run(self.config.maintenance_interval, stop.clone()));
        let storage_check = self.spawn_storage_check(&stop);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        info!(worker.id = %self.worker_id, concurrency = self.config.concurrency, "worker started");
        loop {
            let free = self.config.concurrency.saturating_sub(tasks.len());
            if free > 0 {
                match self.claim(free).await {
                    Ok(claimed) => {
                        for job in claimed {
                            tasks.spawn(self.execute_owned(job));
                        }
                    }
                    Err(e) => warn!(error = %e, "claim failed; retrying after the poll interval"),
                }
            }
            let full = tasks.len() >= self.config.concurrency;
            tokio::select! {
                // Shutdown first: once signalled, no wake-up may lead to another claim.
                biased;
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = self.wake.notified(), if !full => {}
                () = tokio::time::sleep(self.config.poll_interval), if !full => {}
            }
        }

        info!(
            worker.id = %self.worker_id,
            running = tasks.len(),
            grace_ms = self.config.shutdown_grace.as_millis() as u64,
            "shutting down: no new claims; waiting for running jobs"
        );
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.shutdown_grace, drain).await.is_err() {
            self.release_running().await;
            while tasks.join_next().await.is_some() {}
        }
        stop.cancel();
        let _ = tokio::join!(listener, heartbeat, maintenance, storage_check);
        if let Ok(db) = self.ctx.pool.get().await {
            let _ = workers::deregister(&db, &self.worker_id).await;
        }
        info!(worker.id = %self.worker_id, "worker stopped");
    }

    /// The storage write check ([`storage_check`]) on its own task, until `stop`.
    fn spawn_storage_check(&self, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(storage_check::run(
            self.ctx.clone(),
            self.worker_id.clone(),
            self.config.storage_check_interval,
            stop.clone(),
        ))
    }

    async fn register(&self) -> anyhow::Result<()> {
        let db = self.ctx.pool.get().await?;
        workers::register(
            &db,
            &self.worker_id,
            &workers::host(),
            std::process::id(),
            env!("CARGO_PKG_VERSION"),
        )
        .await?;
        Ok(())
    }

    /// Gives every job still running back to the queue (uncounted), then stops them.
    async fn release_running(&self) {
        let held: Vec<(Uuid, CancellationToken)> =
            self.running.lock().expect("not poisoned").iter().map(|(t, c)| (*t, c.clone())).collect();
        let tokens: Vec<Uuid> = held.iter().map(|(t, _)| *t).collect();
        if let Err(e) = self.release(&tokens).await {
            warn!(error = %e, "could not release running jobs; their leases will expire");
        }
        for (_, cancel) in held {
            cancel.cancel();
        }
    }

    /// Releases the jobs and records it in their kinds' tables, in one transaction.
    async fn release(&self, tokens: &[Uuid]) -> Result<(), DbError> {
        let mut db = self.ctx.pool.get().await?;
        let tx = db.transaction().await?;
        let released = queue::release(&tx, tokens).await?;
        self.ctx.holds.reach(HoldPoint::BeforeSetback).await;
        for (id, kind, args) in &released {
            let (setback, code) = (Setback::Released, FailureCode::WorkerShutdown);
            self.ctx.kinds.on_setback(&self.ctx, &tx, kind, args, setback, code).await?;
            info!(job.id = id, "released to the queue at shutdown");
        }
        tx.commit().await?;
        Ok(())
    }

    /// Runs [`Runner::run`] on its own task until [`Background::stop`].
    pub fn spawn(self) -> Background {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            self.run(async {
                let _ = stopped.await;
            })
            .await;
        });
        Background { stop: Some(stop), task }
    }

    /// Claims and runs ready jobs until none is left (tests and one-shot runs): a claim that
    /// finds nothing is asked once more from the head of the queue before the run stops.
    pub async fn run_pending(&self) -> anyhow::Result<usize> {
        let mut done = 0;
        let mut rewound = false;
        loop {
            let claimed = self.claim(self.config.concurrency).await?;
            if claimed.is_empty() {
                if rewound {
                    return Ok(done);
                }
                self.cursor.lock().expect("not poisoned").rewind();
                rewound = true;
                continue;
            }
            rewound = false;
            let mut tasks = JoinSet::new();
            for job in claimed {
                tasks.spawn(self.execute_owned(job));
            }
            while tasks.join_next().await.is_some() {
                done += 1;
            }
        }
    }

    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<ClaimedJob>> {
        let db = self.ctx.pool.get().await?;
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let from = self.cursor.lock().expect("not poisoned").start();
        let jobs = queue::claim_from(&db, &self.worker_id, limit, self.config.lease, from).await?;
        self.cursor.lock().expect("not poisoned").advance(&jobs);
        let mut running = self.running.lock().expect("not poisoned");
        for job in &jobs {
            running.insert(job.token, CancellationToken::new());
        }
        Ok(jobs)
    }

    fn execute_owned(&self, job: ClaimedJob) -> impl Future<Output = ()> + Send + 'static {
        let ctx = self.ctx.clone();
        let config = self.config.clone();
        let running = self.running.clone();
        let span = ctx.kinds.span(&job);
        ctx.metrics.job_wait.record(job.waited_seconds.max(0.0), &[KeyValue::new("kind", job.kind.clone())]);
        async move {
            let cancel = running.lock().expect("not poisoned").get(&job.token).cloned().unwrap_or_default();
            let outcome = ctx.kinds.run(&ctx, &job, cancel).await;
            settle(&ctx, &config, &job, outcome).await;
            running.lock().expect("not poisoned").remove(&job.token);
        }
        .instrument(span)
    }
}

/// A runner working on its own task (see [`Runner::spawn`]).
pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Signals shutdown as SIGTERM would, without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the runner down and waits until it has stopped.
    pub async fn stop(mut self) {
        self.signal_stop();
        let _ = self.task.await;
    }
}

/// Records the outcome of an attempt in the queue (and, through the job kind, its domain row).
async fn settle(ctx: &JobContext, config: &WorkerConfig, job: &ClaimedJob, outcome: Result<(), JobError>) {
    let (failure, retry_at, retry_window) = match outcome {
        Ok(()) => {
            // Job kinds may complete their job themselves, atomically with their domain row
            // (exports do): then this finds nothing left to do.
            let completed = match ctx.pool.get().await {
                Ok(db) => queue::complete(&db, job.id, job.token).await.map(drop),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = completed {
                error!(error = %e, "could not mark the job completed; its lease will expire");
            }
            record_attempts(ctx, job, "completed");
            return;
        }
        Err(JobError::Fenced) => {
            info!("attempt stopped: lease lost or cancelled");
            return;
        }
        // The kind's backoff: the worker's (bounded by the job's attempts and the retry window)
        // or a schedule of its own (which alone decides).
        Err(JobError::Retryable(failure)) => match ctx.kinds.backoff(ctx, job) {
            Backoff::Worker => {
                let delay = backoff(job.attempt, config.retry_base, config.retry_max);
                (failure, Some(OffsetDateTime::now_utc() + delay), Some(config.retry_window))
            }
            Backoff::After(delay) => (failure, Some(OffsetDateTime::now_utc() + delay), None),
            Backoff::GiveUp => (failure, None, None),
        },
        Err(JobError::Fatal(failure)) => (failure, None, Some(config.retry_window)),
        // Handled by the export itself; should one escape, the attempt is simply retried.
        Err(JobError::Replan) => {
            let failure = crate::jobs::Failure {
                code: shared::failure::FailureCode::Internal,
                cause: anyhow::anyhow!("a statement was replanned outside its export"),
                detail: None,
            };
            (failure, Some(OffsetDateTime::now_utc()), Some(config.retry_window))
        }
    };
    // The one line that names the cause (in the job's span: job and export id); what is
    // recorded, and shown to clients, is only its code.
    let code = failure.code;
    let recorded = record_setback(ctx, job, code, retry_at, retry_window).await;
    let cause = Cause(failure.cause.as_ref());
    match recorded {
        Ok(FailOutcome::Retrying(at)) => {
            warn!(error_code = %code, error = %cause, retry_at = %at, "attempt failed; will retry")
        }
        Ok(FailOutcome::Failed) => {
            error!(error_code = %code, error = %cause, "job failed for good");
            record_attempts(ctx, job, "failed");
        }
        Ok(FailOutcome::Fenced) => {
            info!(error_code = %code, error = %cause, "attempt fenced out; its failure is not recorded")
        }
        // The lease will expire and the rescuer will put the job back.
        Err(e) => error!(
            error_code = %code,
            error = %cause,
            record_error = %Cause(&e),
            "attempt failed and could not be recorded; its lease will expire"
        ),
    }
}

/// Records a failed attempt in the queue and in its kind's tables, in one transaction: no
/// other claim can take the job between the two. Only the failure's code is recorded. With a
/// `retry_window` the job's attempts and that window bound the retry (`queue::fail`); without
/// one its kind's schedule alone decided (`queue::fail_on_schedule`).
async fn record_setback(
    ctx: &JobContext,
    job: &ClaimedJob,
    code: FailureCode,
    retry_at: Option<OffsetDateTime>,
    retry_window: Option<Duration>,
) -> Result<FailOutcome, DbError> {
    let mut db = ctx.pool.get().await?;
    let tx = db.transaction().await?;
    let outcome = match retry_window {
        Some(window) => queue::fail(&tx, job.id, job.token, code, retry_at, window).await?,
        None => queue::fail_on_schedule(&tx, job.id, job.token, code, retry_at).await?,
    };
    ctx.holds.reach(HoldPoint::BeforeSetback).await;
    let setback = match outcome {
        FailOutcome::Retrying(_) => Setback::Retrying,
        FailOutcome::Failed => Setback::Failed,
        FailOutcome::Fenced => return Ok(outcome),
    };
    ctx.kinds.on_setback(ctx, &tx, &job.kind, &job.args, setback, code).await?;
    tx.commit().await?;
    Ok(outcome)
}

fn record_attempts(ctx: &JobContext, job: &ClaimedJob, outcome: &'static str) {
    let labels = [KeyValue::new("kind", job.kind.clone()), KeyValue::new("outcome", outcome)];
    ctx.metrics.job_attempts.record(job.attempt.max(1) as u64, &labels);
}

/// Every third of the lease: extends every held lease in one statement, cancels jobs whose
/// token the database no longer honours (rescued elsewhere or cancelled), and records this
/// worker in the registry.
async fn heartbeat_loop(
    ctx: JobContext,
    running: Running,
    lease: Duration,
    worker_id: String,
    leader: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let tokens: Vec<Uuid> = running.lock().expect("not poisoned").keys().copied().collect();
        let db = match ctx.pool.get().await {
            Ok(db) => db,
            Err(e) => {
                warn!(error = %e, "heartbeat: Postgres unavailable");
                continue;
            }
        };
        if !tokens.is_empty() {
            match queue::heartbeat(&db, &tokens, lease).await {
                Ok(held) => {
                    let running = running.lock().expect("not poisoned");
                    for token in tokens.iter().filter(|t| !held.contains(t)) {
                        if let Some(cancel) = running.get(token) {
                            info!(%token, "lease lost or job cancelled; stopping the attempt");
                            cancel.cancel();
                        }
                    }
                }
                Err(e) => warn!(error = %e, "heartbeat failed"),
            }
        }
        let is_leader = leader.load(Ordering::Relaxed);
        if let Err(e) = workers::heartbeat(&db, &worker_id, tokens.len() as i32, is_leader).await {
            debug!(error = %e, "registry heartbeat failed");
        }
    }
}

/// LISTENs for enqueue notifications and wakes the claim loop. A hint only: the loop also polls.
/// Reconnects with capped exponential backoff.
async fn listen(url: SecretString, wake: Arc<Notify>, stop: CancellationToken) {
    let mut delay = Duration::from_millis(250);
    loop {
        let session = async {
            let (client, mut connection) = shared::db::connect(&url).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let pump = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = futures::StreamExt::next(&mut messages).await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                            let _ = tx.send(());
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            });
            client.batch_execute(&format!("LISTEN {}", queue::NOTIFY_CHANNEL)).await?;
            debug!("listening for job notifications");
            while rx.recv().await.is_some() {
                wake.notify_one();
            }
            drop(client);
            pump.await.map_err(|e| anyhow::anyhow!(e))??;
            anyhow::Ok(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            result = session => {
                if let Err(e) = result {
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "job listener disconnected");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..=4 {
            let nominal = 2f64 * 2f64.powi(attempt - 1);
            let d = backoff(attempt, Duration::from_secs(2), Duration::from_secs(300)).as_secs_f64();
            assert!(d >= nominal * 0.75 && d <= nominal * 1.25, "attempt {attempt}: {d}");
        }
        let capped = backoff(30, Duration::from_secs(2), Duration::from_secs(300)).as_secs_f64();
        assert!((225.0..=375.0).contains(&capped), "{capped}");
    }
}
