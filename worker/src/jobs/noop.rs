//! `noop`: does nothing and succeeds. Measures the queue itself (`make bench-queue`) and lets
//! operators check a worker end to end without touching the source.

use super::JobError;

/// Persisted in `jobs.kind`: never rename.
pub const KIND: &str = "noop";

pub async fn run() -> Result<(), JobError> {
    Ok(())
}
