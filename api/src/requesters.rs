//! Repeat requests of an export by a key that had already asked for it, batched. The first
//! request of a pair is recorded synchronously (by `shared::exports::request`), so cancels
//! always see every requester; a repeat only advances the pair's count and latest time, which
//! this log adds to Postgres every few seconds instead of writing on the dedup path. A crash
//! loses at most the last few seconds of repeats (never a requester).

use std::{collections::HashMap, sync::Mutex};

use deadpool_postgres::Pool;
use shared::requesters::Repeats;
use time::OffsetDateTime;
use uuid::Uuid;

/// Most distinct pairs held between flushes; beyond it a repeat is dropped (the requester row
/// exists either way, only its count and latest time would lag).
const MAX_PENDING_PAIRS: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct RequesterLog {
    pending: Mutex<HashMap<(Uuid, Uuid), (i64, OffsetDateTime)>>,
}

impl RequesterLog {
    /// Notes one more request of `export` by `key`.
    pub(crate) fn repeat(&self, export: Uuid, key: Uuid) {
        let now = OffsetDateTime::now_utc();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING_PAIRS && !pending.contains_key(&(export, key)) {
            return;
        }
        let entry = pending.entry((export, key)).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
    }

    fn take(&self) -> Vec<Repeats> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .drain()
            .map(|((export_id, api_key_id), (count, last_at))| Repeats {
                export_id,
                api_key_id,
                count,
                last_at,
            })
            .collect()
    }

    fn give_back(&self, repeats: Vec<Repeats>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for r in repeats {
            let entry = pending.entry((r.export_id, r.api_key_id)).or_insert((0, r.last_at));
            entry.0 += r.count;
            entry.1 = entry.1.max(r.last_at);
        }
    }

    /// Writes the repeats gathered so far; on failure they are kept for the next flush.
    pub(crate) async fn flush(&self, pool: &Pool) {
        let repeats = self.take();
        if repeats.is_empty() {
            return;
        }
        let written = match pool.get().await {
            Ok(db) => match shared::requesters::record_repeats(&db, &repeats).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, pairs = repeats.len(), "could not record repeat requests");
                    false
                }
            },
            Err(_) => false,
        };
        if !written {
            self.give_back(repeats);
        }
    }
}
