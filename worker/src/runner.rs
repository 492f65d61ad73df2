//! The worker loop: claim jobs up to the free slots, run them, heartbeat their leases in one
//! batched statement, retry with backoff, drain on shutdown.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use shared::{
    config::WorkerConfig,
    queue::{self, ClaimedJob, FailOutcome},
};
use time::OffsetDateTime;
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::jobs::{self, JobContext, JobError};

/// Backoff before retry `attempt` (1-based): 2 s doubling, capped at 5 minutes, with ±25 %
/// jitter so a burst of failures does not retry in lockstep.
pub fn backoff(attempt: i32) -> Duration {
    let base = 2f64 * 2f64.powi(attempt.clamp(1, 20) - 1);
    let capped = base.min(300.0);
    let jitter = 0.75 + 0.5 * unit_random();
    Duration::from_secs_f64(capped * jitter)
}

fn unit_random() -> f64 {
    (Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Jobs this process holds: fencing token → cancellation of the running attempt.
type Running = Arc<Mutex<HashMap<Uuid, CancellationToken>>>;

pub struct Runner {
    ctx: JobContext,
    config: WorkerConfig,
    worker_id: String,
    running: Running,
    wake: Arc<Notify>,
}

impl Runner {
    pub fn new(ctx: JobContext, config: WorkerConfig) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        Self {
            ctx,
            config,
            worker_id: format!("{host}:{}:{}", std::process::id(), &Uuid::new_v4().to_string()[..8]),
            running: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Claims and runs jobs until `shutdown` resolves, then stops claiming and waits for the
    /// running jobs.
    pub async fn run(&self, database_url: &SecretString, shutdown: impl Future<Output = ()>) {
        let stop = CancellationToken::new();
        let listener = tokio::spawn(listen(database_url.clone(), self.wake.clone(), stop.clone()));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.ctx.clone(),
            self.running.clone(),
            self.config.lease,
            stop.clone(),
        ));
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
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = self.wake.notified(), if !full => {}
                () = tokio::time::sleep(self.config.poll_interval), if !full => {}
            }
        }
        info!(worker.id = %self.worker_id, running = tasks.len(), "shutting down: waiting for running jobs");
        while tasks.join_next().await.is_some() {}
        stop.cancel();
        let _ = listener.await;
        let _ = heartbeat.await;
    }

    /// Claims and runs ready jobs until none is left (tests and one-shot runs).
    pub async fn run_pending(&self) -> anyhow::Result<usize> {
        let mut done = 0;
        loop {
            let claimed = self.claim(self.config.concurrency).await?;
            if claimed.is_empty() {
                return Ok(done);
            }
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
        let jobs = queue::claim(&db, &self.worker_id, limit as i64, self.config.lease).await?;
        let mut running = self.running.lock().expect("not poisoned");
        for job in &jobs {
            running.insert(job.token, CancellationToken::new());
        }
        Ok(jobs)
    }

    fn execute_owned(&self, job: ClaimedJob) -> impl Future<Output = ()> + Send + 'static {
        let ctx = self.ctx.clone();
        let running = self.running.clone();
        let span = info_span!("job", job.id = job.id, job.kind = %job.kind, attempt = job.attempt);
        async move {
            let cancel = running.lock().expect("not poisoned").get(&job.token).cloned().unwrap_or_default();
            let outcome = jobs::run(&ctx, &job, cancel).await;
            settle(&ctx, &job, outcome).await;
            running.lock().expect("not poisoned").remove(&job.token);
        }
        .instrument(span)
    }
}

/// Records the outcome of an attempt in the queue (and, through the job kind, its domain row).
async fn settle(ctx: &JobContext, job: &ClaimedJob, outcome: Result<(), JobError>) {
    let Ok(db) = ctx.pool.get().await else {
        // The lease will expire and the rescuer will put the job back.
        error!("postgres unavailable; the job's lease will expire and it will be retried");
        return;
    };
    let (message, retry_at) = match outcome {
        Ok(()) => {
            if let Err(e) = queue::complete(&db, job.id, job.token).await {
                error!(error = %e, "could not mark the job completed");
            }
            return;
        }
        Err(JobError::Fenced) => {
            info!("attempt stopped: lease lost or cancelled");
            return;
        }
        Err(JobError::Retryable(e)) => {
            (format!("{e:#}"), Some(OffsetDateTime::now_utc() + backoff(job.attempt)))
        }
        Err(JobError::Fatal(e)) => (format!("{e:#}"), None),
    };
    match queue::fail(&db, job.id, job.token, &message, retry_at).await {
        Ok(FailOutcome::Retrying(at)) => {
            warn!(error = %message, retry_at = %at, "attempt failed; will retry");
            jobs::on_failure(ctx, &job.kind, &job.args, true, &public_message(&message, true)).await;
        }
        Ok(FailOutcome::Failed) => {
            error!(error = %message, "job failed for good");
            jobs::on_failure(ctx, &job.kind, &job.args, false, &public_message(&message, false)).await;
        }
        Ok(FailOutcome::Fenced) => info!("attempt fenced out; its failure is not recorded"),
        Err(e) => error!(error = %e, "could not record the failed attempt"),
    }
}

/// The message stored for clients: the error chain's outermost part, which our job code writes
/// to be readable (no credentials ever appear in our error texts).
fn public_message(message: &str, retrying: bool) -> String {
    if retrying { format!("attempt failed, retrying: {message}") } else { message.to_owned() }
}

/// Extends every held lease in one statement every third of the lease; cancels jobs whose
/// token the database no longer honours (rescued elsewhere or cancelled).
async fn heartbeat_loop(ctx: JobContext, running: Running, lease: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        rescue_expired(&ctx).await;
        let tokens: Vec<Uuid> = running.lock().expect("not poisoned").keys().copied().collect();
        if tokens.is_empty() {
            continue;
        }
        let held = match ctx.pool.get().await {
            Ok(db) => queue::heartbeat(&db, &tokens, lease).await,
            Err(e) => Err(e.into()),
        };
        match held {
            Ok(held) => {
                let running = running.lock().expect("not poisoned");
                for token in tokens.iter().filter(|t| !held.contains(t)) {
                    if let Some(cancel) = running.get(token) {
                        cancel.cancel();
                    }
                }
            }
            Err(e) => warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Puts jobs of crashed or stalled workers back to work (idempotent, safe on every worker).
async fn rescue_expired(ctx: &JobContext) {
    let rescued = match ctx.pool.get().await {
        Ok(db) => queue::rescue_expired(&db).await,
        Err(e) => Err(e.into()),
    };
    match rescued {
        Ok(failed) => {
            for (id, kind, args) in failed {
                warn!(job.id = id, "job failed for good after its last lease expired");
                let message = "the export was interrupted too many times (worker lost)";
                jobs::on_failure(ctx, &kind, &args, false, message).await;
            }
        }
        Err(e) => warn!(error = %e, "lease rescue failed"),
    }
}

/// LISTENs for enqueue notifications and wakes the claim loop. A hint only: the loop also polls.
/// Reconnects with capped exponential backoff.
async fn listen(url: SecretString, wake: Arc<Notify>, stop: CancellationToken) {
    let mut delay = Duration::from_millis(250);
    loop {
        let session = async {
            let (client, mut connection) =
                tokio_postgres::connect(url.expose_secret(), tokio_postgres::NoTls).await?;
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
            let d = backoff(attempt).as_secs_f64();
            assert!(d >= nominal * 0.75 && d <= nominal * 1.25, "attempt {attempt}: {d}");
        }
        assert!(backoff(30).as_secs_f64() <= 300.0 * 1.25);
    }
}
