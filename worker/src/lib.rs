#![doc = include_str!("../README.md")]

pub mod jobs;
pub mod runner;

use anyhow::Context as _;
use shared::{config::Config, db, source::Source, storage::Storage};

/// Builds the job context from configuration: Postgres pool, source pool, storage.
pub fn context(config: &Config, max_jobs: usize) -> anyhow::Result<jobs::JobContext> {
    let pool = db::pool(&config.database_url, max_jobs + 4).context("DATABASE_URL")?;
    let source = Source::new(&config.source_database_url, max_jobs + 1).context("SOURCE_DATABASE_URL")?;
    let storage = Storage::new(&config.storage, config.upload_part_size).context("storage")?;
    Ok(jobs::JobContext::new(config, pool, source, storage))
}
