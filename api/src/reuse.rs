//! Counts requests answered by deduplication for the dashboard's reuse rate. Requests only bump
//! an in-memory counter; a background task adds it to Postgres every few seconds, so no request
//! waits on that write. A crash loses at most the last few seconds of counts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use deadpool_postgres::Pool;

#[derive(Debug, Default)]
pub struct ReuseCounter {
    pending: AtomicI64,
}

impl ReuseCounter {
    pub fn count(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the counts gathered so far; on failure they are kept for the next flush.
    pub async fn flush(&self, pool: &Pool) {
        let count = self.pending.swap(0, Ordering::Relaxed);
        if count == 0 {
            return;
        }
        let written = match pool.get().await {
            Ok(db) => shared::dashboard::record_reuse(&db, count).await.is_ok(),
            Err(_) => false,
        };
        if !written {
            self.pending.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Flushes every `interval` for as long as the process runs.
    pub fn spawn_flusher(self: &Arc<Self>, pool: Pool, interval: Duration) {
        let counter = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // The task ends with the application that owns the counter.
                let Some(counter) = counter.upgrade() else { return };
                counter.flush(&pool).await;
            }
        });
    }
}
