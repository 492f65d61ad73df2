//! API requests that change state — exports requested (created, or answered by an existing
//! export) or refused for their account, and cancels — recorded in the audit trail with the key
//! that made them. They are gathered in memory and appended in batches every second
//! (`crate::flush_batches`), so the request path never waits on the audit chain's lock; a
//! process that is killed loses at most its last second of records (the exports and their
//! requesters are in Postgres either way), and a clean shutdown flushes them.
//!
//! Identical records within one flush (same key, action, target, outcome, client and details:
//! a client repeating a request) are one row whose details say how many requests it stands
//! for (`"requests": n`, when more than one), so a client hammering the API cannot flood the
//! trail nor slow the dedup path.

use std::{collections::HashMap, sync::Mutex};

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
    pending: Mutex<Pending>,
    dropped: std::sync::atomic::AtomicU64,
    /// One flush at a time (the background one and the one at shutdown), so records are
    /// appended in order and none put back after the last flush has run.
    flushing: tokio::sync::Mutex<()>,
}

/// Records in arrival order, each with the number of identical requests it stands for.
#[derive(Debug, Default)]
struct Pending {
    events: Vec<(Event, u64)>,
    /// Where each distinct record is in `events`.
    index: HashMap<String, usize>,
}

impl Pending {
    fn take(&mut self) -> Vec<(Event, u64)> {
        self.index.clear();
        std::mem::take(&mut self.events)
    }
}

/// What makes two records the same (all but the time).
fn identity(event: &Event) -> String {
    format!(
        "{}\u{0}{}\u{0}{:?}\u{0}{}\u{0}{:?}\u{0}{}",
        event.actor.id,
        event.action,
        event.target,
        event.outcome.as_str(),
        event.client_addr,
        event.details
    )
}

/// The record as appended: its details name the number of requests when more than one.
fn counted((mut event, requests): (Event, u64)) -> Event {
    if requests > 1
        && let Some(details) = event.details.as_object_mut()
    {
        details.insert("requests".into(), requests.into());
    }
    event
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
        let identity = identity(&event);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&at) = pending.index.get(&identity) {
            pending.events[at].1 += 1;
            return;
        }
        if pending.events.len() >= MAX_PENDING {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let at = pending.events.len();
        pending.events.push((event, 1));
        pending.index.insert(identity, at);
    }

    /// Appends what was gathered, in order, in batches; on failure the rest is kept (in order)
    /// for the next flush.
    pub(crate) async fn flush(&self, pool: &Pool) {
        let _one_at_a_time = self.flushing.lock().await;
        let dropped = self.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            tracing::error!(
                dropped,
                "audit records of API requests dropped: Postgres did not take them in time"
            );
        }
        let mut events: Vec<Event> =
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).take().into_iter().map(counted).collect();
        while !events.is_empty() {
            let batch: Vec<Event> = events.drain(..events.len().min(BATCH)).collect();
            if let Err(e) = append(pool, &batch).await {
                tracing::warn!(error = %e, records = batch.len() + events.len(), "could not append API audit records; kept for the next flush");
                // Put back first, in order, ahead of what arrived meanwhile (counted already:
                // they are not merged again).
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let newer = pending.take();
                pending.events = batch.into_iter().chain(events).map(|e| (e, 1)).chain(newer).collect();
                pending.index.clear();
                return;
            }
        }
    }
}

async fn append(pool: &Pool, events: &[Event]) -> Result<(), shared::db::DbError> {
    let mut db = pool.get().await?;
    audit::record_alone(&mut db, events).await
}
