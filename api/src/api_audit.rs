//! API requests that change state — exports requested (created, or answered by an existing
//! export) or refused for their account, and cancels — recorded in the audit trail with the key
//! that made them. They are gathered in memory and appended in batches every second
//! (`crate::flush_batches`), so the request path never waits on the audit chain's lock; a
//! process that is killed loses at most its last second of records (the exports and their
//! requesters are in Postgres either way), and a clean shutdown flushes them.

use std::sync::Mutex;

use deadpool_postgres::Pool;
use shared::{
    api_keys::ApiKey,
    audit::{self, Actor, ActorKind, Event, Outcome},
};

use crate::client_addr::ClientAddr;

/// Most records held between flushes; past it new ones are dropped (and counted in the log)
/// rather than growing without bound while Postgres is away.
const MAX_PENDING: usize = 100_000;
/// Most records appended in one transaction.
const BATCH: usize = 5_000;

#[derive(Debug, Default)]
pub(crate) struct ApiAudit {
    pending: Mutex<Vec<Event>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl ApiAudit {
    /// Notes that `key`, from `client`, did `action` to `target` with `outcome`.
    pub(crate) fn record(
        &self,
        key: &ApiKey,
        client: ClientAddr,
        action: &'static str,
        target: Option<String>,
        outcome: Outcome,
        details: serde_json::Value,
    ) {
        let actor = Actor {
            kind: ActorKind::ApiKey,
            id: key.id.to_string(),
            name: shared::sessions::key_label(&key.name, &key.prefix),
        };
        let event = Event::new(actor, action, target, outcome).from_client(client).with_details(details);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        pending.push(event);
    }

    /// Appends what was gathered, in order, in batches; on failure the rest is kept (in order)
    /// for the next flush.
    pub(crate) async fn flush(&self, pool: &Pool) {
        let dropped = self.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            tracing::error!(
                dropped,
                "audit records of API requests dropped: Postgres did not take them in time"
            );
        }
        let mut events = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        while !events.is_empty() {
            let batch: Vec<Event> = events.drain(..events.len().min(BATCH)).collect();
            if let Err(e) = append(pool, &batch).await {
                tracing::warn!(error = %e, records = batch.len() + events.len(), "could not append API audit records; kept for the next flush");
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let newer = std::mem::take(&mut *pending);
                *pending = batch;
                pending.extend(events);
                pending.extend(newer);
                return;
            }
        }
    }
}

async fn append(pool: &Pool, events: &[Event]) -> Result<(), shared::db::DbError> {
    let mut db = pool.get().await?;
    audit::record_alone(&mut db, events).await
}
