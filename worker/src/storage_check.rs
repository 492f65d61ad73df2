//! The storage write check: every interval, overwrite one small object
//! ([`shared::storage::WRITE_CHECK_KEY`]) and record in Postgres whether that worked, so `/ready`
//! and the dashboard know whether exports can be written (a reachable bucket or directory that
//! refuses writes passes every read-only check).

use std::time::{Duration, Instant};

use shared::{
    failure::{Cause, FailureCode},
    storage_checks,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::jobs::JobContext;

/// A write that takes longer than this counts as failed. S3 requests retry transient errors for
/// up to `S3_RETRY_TIMEOUT_SECS`: a check must answer long before that.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks at once, then every `interval` (a slow check delays the next, never overlaps it),
/// until `stop`.
pub(crate) async fn run(ctx: JobContext, worker_id: String, interval: Duration, stop: CancellationToken) {
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
pub(crate) async fn check_once(ctx: &JobContext, worker_id: &str) {
    let started = Instant::now();
    // The cause goes to the log; the record (shown on the dashboard) holds only its class.
    let failure = match tokio::time::timeout(WRITE_TIMEOUT, ctx.storage.check_writable()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            warn!(error = %Cause(&e), "storage write check failed");
            Some(e.failure_code())
        }
        Err(_) => {
            warn!(
                timeout_secs = WRITE_TIMEOUT.as_secs(),
                "storage write check failed: the write did not finish in time"
            );
            Some(FailureCode::StorageUnavailable)
        }
    };
    let latency = started.elapsed();
    if failure.is_none() {
        debug!(latency_ms = latency.as_secs_f64() * 1000.0, "storage write check passed");
    }
    let recorded = match ctx.pool.get().await {
        Ok(db) => storage_checks::record(&db, worker_id, latency, failure.map(FailureCode::as_str)).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = recorded {
        warn!(error = %e, "could not record the storage write check");
    }
}
