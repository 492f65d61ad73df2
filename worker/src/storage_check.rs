//! The storage write check: every interval, overwrite one small object
//! ([`shared::storage::WRITE_CHECK_KEY`]) and record in Postgres whether that worked, so `/ready`
//! and the dashboard know whether exports can be written (a reachable bucket or directory that
//! refuses writes passes every read-only check).

use std::time::{Duration, Instant};

use shared::storage_checks;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::jobs::JobContext;

/// A write that takes longer than this counts as failed. S3 requests retry transient errors for
/// up to `S3_RETRY_TIMEOUT_SECS`: a check must answer long before that.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks at once, then every `interval` (a slow check delays the next, never overlaps it),
/// until `stop`.
pub async fn run(ctx: JobContext, worker_id: String, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = check_once(&ctx, &worker_id) => {}
        }
    }
}

/// One write check, recorded.
pub async fn check_once(ctx: &JobContext, worker_id: &str) {
    let started = Instant::now();
    let error = match tokio::time::timeout(WRITE_TIMEOUT, ctx.storage.check_writable()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("the write did not finish within {} s", WRITE_TIMEOUT.as_secs())),
    };
    let latency = started.elapsed();
    match &error {
        None => debug!(latency_ms = latency.as_secs_f64() * 1000.0, "storage write check passed"),
        Some(e) => warn!(error = %e, "storage write check failed"),
    }
    let recorded = match ctx.pool.get().await {
        Ok(db) => storage_checks::record(&db, worker_id, latency, error.as_deref()).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = recorded {
        warn!(error = %e, "could not record the storage write check");
    }
}
