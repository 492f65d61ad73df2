//! Counts requests answered by deduplication for the dashboard's reuse rate. Requests only bump
//! an in-memory counter; a background task adds it to Postgres every few seconds, so no request
//! waits on that write. A crash loses at most the last few seconds of counts.

use std::sync::atomic::{AtomicI64, Ordering};

use deadpool_postgres::Pool;

#[derive(Debug, Default)]
pub(crate) struct ReuseCounter {
    pending: AtomicI64,
}

impl ReuseCounter {
    pub(crate) fn count(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the counts gathered so far; on failure they are kept for the next flush.
    pub(crate) async fn flush(&self, pool: &Pool) {
        let count = self.pending.swap(0, Ordering::Relaxed);
        if count == 0 {
            return;
        }
        let written = match pool.get().await {
            Ok(db) => shared::exports::stats::record_reuse(&db, count).await.is_ok(),
            Err(_) => false,
        };
        if !written {
            self.pending.fetch_add(count, Ordering::Relaxed);
        }
    }
}
