//! `noop`: does nothing and succeeds. Measures the queue itself (`make bench-queue`) and lets
//! operators check a worker end to end without touching the source.

use shared::queue::{ClaimedJob, JobKind};
use tokio_util::sync::CancellationToken;

use super::{Job, JobContext, JobError};

/// The `noop` job: no payload (stored as `{}`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Noop {}

impl JobKind for Noop {
    const KIND: &'static str = "noop";
}

impl Job for Noop {
    async fn run(&self, _: &JobContext, _: &ClaimedJob, _: CancellationToken) -> Result<(), JobError> {
        Ok(())
    }
}
