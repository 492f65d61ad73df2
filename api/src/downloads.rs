//! Download links handed out and downloads served through `/files/`, gathered in memory and
//! written to Postgres in batches every second (`crate::flush_batches`, with the other batches),
//! with their exports' counters, by `shared::downloads::record`. Minting a link is on the hot
//! path of `GET /api/export/{id}`: it takes a lock and a push, never a write.
//!
//! What a crash can lose: the records of the last second (more while Postgres is unreachable,
//! up to the caps below); the links themselves keep working. Past a cap new records are dropped
//! and counted in the log rather than held without bound. A clean shutdown flushes them.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use deadpool_postgres::Pool;
use shared::{
    downloads::{Backend, Download, Holder, IssuedLink, Via},
    storage::StorageError,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AppState;

/// Most links held between flushes (about 100 bytes each).
const MAX_PENDING_LINKS: usize = 200_000;
/// Most downloads held between flushes.
const MAX_PENDING_DOWNLOADS: usize = 100_000;
/// Most rows of each kind written in one transaction.
const BATCH: usize = 20_000;

#[derive(Debug, Default)]
pub(crate) struct DownloadLog {
    pending: Mutex<Pending>,
    dropped: AtomicU64,
    /// One flush at a time (the background one and the one at shutdown).
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    links: Vec<IssuedLink>,
    downloads: Vec<Download>,
    /// Batches whose write failed: perhaps after their commit (its answer lost). Each is written
    /// again alone, first, so that "already recorded" (a unique violation, which
    /// `shared::downloads::record` takes as done) can only mean the whole batch.
    unconfirmed: Vec<(Vec<IssuedLink>, Vec<Download>)>,
}

impl DownloadLog {
    /// Notes a link handed out.
    pub(crate) fn link(&self, link: IssuedLink) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.links.len() >= MAX_PENDING_LINKS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.links.push(link);
    }

    /// Notes a download answered.
    pub(crate) fn download(&self, download: Download) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.downloads.len() >= MAX_PENDING_DOWNLOADS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.downloads.push(download);
    }

    /// Writes what was gathered, in batches; on failure the rest is kept (ahead of what arrived
    /// meanwhile, within the caps) for the next flush.
    pub(crate) async fn flush(&self, pool: &Pool) {
        let _one_at_a_time = self.flushing.lock().await;
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::error!(
                dropped,
                "download link and download records dropped: Postgres did not take them in time"
            );
        }
        let Pending { mut links, mut downloads, unconfirmed } =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut unconfirmed = unconfirmed.into_iter();
        while let Some((link_batch, download_batch)) = unconfirmed.next() {
            if let Err(e) = write(pool, &link_batch, &download_batch).await {
                tracing::warn!(error = %e, "could not record download links and downloads; kept for the next flush");
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let newer = std::mem::take(&mut *pending);
                pending.unconfirmed = std::iter::once((link_batch, download_batch))
                    .chain(unconfirmed)
                    .chain(newer.unconfirmed)
                    .collect();
                pending.links = links.into_iter().chain(newer.links).collect();
                pending.downloads = downloads.into_iter().chain(newer.downloads).collect();
                return;
            }
        }
        while !links.is_empty() || !downloads.is_empty() {
            let link_batch: Vec<IssuedLink> = links.drain(..links.len().min(BATCH)).collect();
            let download_batch: Vec<Download> = downloads.drain(..downloads.len().min(BATCH)).collect();
            if let Err(e) = write(pool, &link_batch, &download_batch).await {
                tracing::warn!(
                    error = %e,
                    links = link_batch.len() + links.len(),
                    downloads = download_batch.len() + downloads.len(),
                    "could not record download links and downloads; kept for the next flush"
                );
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let newer = std::mem::take(&mut *pending);
                pending.unconfirmed =
                    std::iter::once((link_batch, download_batch)).chain(newer.unconfirmed).collect();
                pending.links = links.into_iter().chain(newer.links).collect();
                pending.downloads = downloads.into_iter().chain(newer.downloads).collect();
                let over = pending.links.len().saturating_sub(MAX_PENDING_LINKS)
                    + pending.downloads.len().saturating_sub(MAX_PENDING_DOWNLOADS);
                pending.links.truncate(MAX_PENDING_LINKS);
                pending.downloads.truncate(MAX_PENDING_DOWNLOADS);
                self.dropped.fetch_add(over as u64, Ordering::Relaxed);
                return;
            }
        }
    }
}

async fn write(pool: &Pool, links: &[IssuedLink], downloads: &[Download]) -> Result<(), shared::db::DbError> {
    let mut db = pool.get().await?;
    shared::downloads::record(&mut db, links, downloads).await
}

impl AppState {
    /// A fresh download link to `export`'s file at `key`, for `holder` (through `via`), noted
    /// for the batch; its URL and when it expires.
    pub(crate) async fn download_link(
        &self,
        export: Uuid,
        key: &str,
        via: Via,
        holder: Holder,
    ) -> Result<(String, OffsetDateTime), StorageError> {
        let id = shared::downloads::new_link_id();
        let issued_at = OffsetDateTime::now_utc();
        let (url, expires_at) = self
            .storage
            .download_url(key, id, self.download_url_ttl, &self.public_base_url, &self.signer)
            .await?;
        let backend = if self.storage.is_local() { Backend::Local } else { Backend::S3 };
        self.downloads.link(IssuedLink {
            id,
            export_id: export,
            via,
            holder,
            issued_at,
            expires_at,
            backend,
        });
        Ok((url, expires_at))
    }
}
