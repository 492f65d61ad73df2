//! Where a worker's next claim starts reading the ready jobs (`jobs_ready`, in claim order).
//!
//! Claiming and completing a job leave its old entry in `jobs_ready` until vacuum removes it.
//! Normally the first scan that steps over such an entry marks it dead and later scans skip it
//! at no cost. A transaction that holds an old snapshot on the same database (an analytics
//! query, a client idle in transaction) keeps every one of them alive: vacuum may not remove
//! them and scans may not mark them, so a claim from the head of the queue visits the heap for
//! every job finished since that snapshot was taken, and each claim costs more than the last
//! (`make bench-queue`: `held_xmin_ratio`).
//!
//! So each worker claims from where its previous claim stopped ([`Position`]): the jobs before
//! it were claimed already, by this worker or by others. A job can still land behind it: one
//! of a higher priority, one enqueued by a transaction that began before the claim, one whose
//! run time was moved into the past, one whose claim rolled back. So a worker also claims from
//! the head of the queue once per `rewind_every` (the worker's poll interval): such a job waits
//! at most that much longer, as long as one whose NOTIFY was lost waits for the next poll.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::ClaimedJob;

/// A place in claim order (`ORDER BY priority, run_at, id`, the key of `jobs_ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The job's priority (lower runs first).
    pub priority: i16,
    /// When the job became due.
    pub run_at: OffsetDateTime,
    /// The job's id.
    pub id: i64,
}

/// One worker's claim position: where its next claim starts (see the module's documentation).
#[derive(Debug, Clone)]
pub struct ClaimCursor {
    /// Where the last claim that found jobs stopped.
    position: Option<Position>,
    /// When a claim last started at the head of the queue.
    rewound_at: Option<Instant>,
    rewind_every: Duration,
}

impl ClaimCursor {
    /// A cursor that claims from the head of the queue first, and again at least once per
    /// `rewind_every`.
    pub fn new(rewind_every: Duration) -> Self {
        Self { position: None, rewound_at: None, rewind_every }
    }

    /// Where the next claim starts: `None` (the head of the queue) when no claim has found jobs
    /// yet or the last claim from the head is `rewind_every` old; the position otherwise.
    pub fn start(&mut self) -> Option<Position> {
        let now = Instant::now();
        if self.rewound_at.is_none_or(|at| now.duration_since(at) >= self.rewind_every) {
            self.rewound_at = Some(now);
            return None;
        }
        self.position
    }

    /// Moves to where a claim stopped: the last of the jobs it claimed, in claim order. A claim
    /// that found nothing leaves the position where it was.
    pub fn advance(&mut self, claimed: &[ClaimedJob]) {
        if let Some(last) = claimed.iter().map(|job| job.position).max() {
            self.position = Some(last);
        }
    }

    /// Makes the next claim start at the head of the queue: a run that stops once the queue
    /// looks empty asks once more from there before it believes it.
    pub fn rewind(&mut self) {
        self.rewound_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(priority: i16, id: i64) -> ClaimedJob {
        ClaimedJob {
            id,
            kind: "noop".into(),
            args: serde_json::Value::Null,
            attempt: 1,
            max_attempts: 1,
            token: uuid::Uuid::nil(),
            waited_seconds: 0.0,
            position: Position { priority, run_at: OffsetDateTime::UNIX_EPOCH, id },
        }
    }

    #[test]
    fn starts_at_the_head_then_where_the_last_claim_stopped_until_rewound() {
        let mut cursor = ClaimCursor::new(Duration::from_secs(3600));
        assert_eq!(cursor.start(), None, "the first claim reads from the head");
        assert_eq!(cursor.start(), None, "no job claimed yet: still the head");
        cursor.advance(&[job(0, 7), job(1, 3), job(0, 9)]);
        assert_eq!(cursor.start().map(|p| (p.priority, p.id)), Some((1, 3)), "the last in claim order");
        cursor.advance(&[]);
        assert_eq!(cursor.start().map(|p| p.id), Some(3), "a claim that found nothing leaves it");
        cursor.rewind();
        assert_eq!(cursor.start(), None);
        assert_eq!(cursor.start().map(|p| p.id), Some(3));
    }

    #[test]
    fn reads_from_the_head_once_per_interval() {
        let mut cursor = ClaimCursor::new(Duration::ZERO);
        cursor.advance(&[job(0, 1)]);
        assert_eq!(cursor.start(), None);
        assert_eq!(cursor.start(), None, "an interval of zero: every claim from the head");
    }
}
