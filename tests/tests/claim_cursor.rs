//! A worker claims from where its last claim stopped (`shared::queue::ClaimCursor`), and from the
//! head of the queue once per poll interval: on real Postgres, claims keep priority and due-time
//! order, retries in the past and the future, SKIP LOCKED among many workers, jobs that land
//! behind a position are still claimed, and under a held snapshot a claim no longer reads every
//! job finished since that snapshot.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use shared::{
    db::Sql,
    failure::FailureCode,
    queue::{self, ClaimCursor, ClaimedJob, JobKind as _},
};
use testkit::TestApp;
use time::OffsetDateTime;
use worker::jobs::noop::Noop;

const LEASE: Duration = Duration::from_secs(30);
/// Longer than any test: the cursor goes back to the head only when a test says so.
const NEVER: Duration = Duration::from_secs(3600);

/// Inserts a noop with this priority, due `due_in_secs` from now (negative: in the past).
async fn insert_job(db: &impl Sql, priority: i16, due_in_secs: f64) -> i64 {
    db.query_one(
        "INSERT INTO jobs (kind, priority, run_at) VALUES ($1, $2, now() + make_interval(secs => $3))
         RETURNING id",
        &[&Noop::KIND, &priority, &due_in_secs],
    )
    .await
    .unwrap()
    .get(0)
}

/// One claim of up to `limit` as a worker makes it: from the cursor's start, then advancing it.
async fn claim(db: &impl Sql, cursor: &mut ClaimCursor, limit: u32) -> Vec<ClaimedJob> {
    let claimed = queue::claim_from(db, "cursor-test", limit, LEASE, cursor.start()).await.unwrap();
    cursor.advance(&claimed);
    claimed
}

async fn complete(db: &impl Sql, claimed: &[ClaimedJob]) {
    for job in claimed {
        assert!(queue::complete(db, job.id, job.token).await.unwrap());
    }
}

fn ids(jobs: &[ClaimedJob]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn claims_follow_priority_then_due_time_and_jobs_left_behind_wait_for_the_next_rewind() {
    let app = TestApp::spawn().await;
    let db = app.pool.get().await.unwrap();
    let mut expected = Vec::new();
    for (priority, due) in [(1, -180.0), (0, -60.0), (-1, -120.0), (0, -180.0), (1, -60.0), (-1, -1.0)] {
        expected.push((priority, due, insert_job(&db, priority, due).await));
    }
    let not_due = insert_job(&db, -5, 3600.0).await;
    expected.sort_by(|a, b| (a.0, a.1, a.2).partial_cmp(&(b.0, b.1, b.2)).unwrap());
    let expected: Vec<i64> = expected.iter().map(|e| e.2).collect();

    let mut cursor = ClaimCursor::new(NEVER);
    let mut order = Vec::new();
    loop {
        let claimed = claim(&db, &mut cursor, 1).await;
        if claimed.is_empty() {
            break;
        }
        order.extend(ids(&claimed));
        complete(&db, &claimed).await;
    }
    assert_eq!(order, expected, "one at a time, in priority then due-time order; {not_due} is not due");

    // Behind the position now: a job of a higher priority, and a retry whose time is in the past
    // (a worker whose clock runs behind). Ahead of it: a job due now at the lowest priority.
    let urgent = insert_job(&db, -3, 0.0).await;
    let past = insert_job(&db, 0, -600.0).await;
    let job = queue::claim(&db, "cursor-test", 1, LEASE).await.unwrap().remove(0);
    assert_eq!(job.id, urgent);
    let clock_behind = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    let outcome = queue::fail(&db, job.id, job.token, FailureCode::Internal, Some(clock_behind), LEASE);
    assert!(matches!(outcome.await.unwrap(), queue::FailOutcome::Retrying(_)));
    let ahead = insert_job(&db, 1, 0.0).await;
    let claimed = claim(&db, &mut cursor, 10).await;
    assert_eq!(ids(&claimed), [ahead], "from the position: what is ahead only");
    complete(&db, &claimed).await;
    assert!(claim(&db, &mut cursor, 10).await.is_empty());
    // The next claim from the head (once per poll interval in a worker) takes what was left.
    cursor.rewind();
    let claimed = claim(&db, &mut cursor, 10).await;
    let mut left_behind = ids(&claimed);
    left_behind.sort();
    assert_eq!(left_behind, [urgent, past]);
    complete(&db, &claimed).await;
    cursor.rewind();
    assert!(claim(&db, &mut cursor, 10).await.is_empty(), "{not_due} waits for its time");
    assert!(queue::cancel(&db, not_due, FailureCode::Internal).await.unwrap());
}

#[tokio::test]
async fn retries_due_now_are_claimed_from_the_position_and_future_ones_wait_for_their_time() {
    let app = TestApp::spawn().await;
    let db = app.pool.get().await.unwrap();
    let mut cursor = ClaimCursor::new(NEVER);
    let jobs =
        [insert_job(&db, 0, -3.0).await, insert_job(&db, 0, -2.0).await, insert_job(&db, 0, -1.0).await];

    // The first fails for an hour; the second fails and may run again at once (a retry with no
    // backoff: its due time is now, after the position).
    let first = claim(&db, &mut cursor, 1).await.remove(0);
    let later = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    queue::fail(&db, first.id, first.token, FailureCode::Internal, Some(later), LEASE).await.unwrap();
    let second = claim(&db, &mut cursor, 1).await.remove(0);
    assert_eq!(second.id, jobs[1], "not the first: it waits an hour");
    let now = OffsetDateTime::now_utc();
    queue::fail(&db, second.id, second.token, FailureCode::Internal, Some(now), LEASE).await.unwrap();

    let third = claim(&db, &mut cursor, 1).await;
    assert_eq!(ids(&third), [jobs[2]]);
    complete(&db, &third).await;
    let retried = claim(&db, &mut cursor, 1).await;
    assert_eq!((retried[0].id, retried[0].attempt), (jobs[1], 2), "the retry, from the position");
    complete(&db, &retried).await;
    assert!(claim(&db, &mut cursor, 1).await.is_empty());
    cursor.rewind();
    assert!(claim(&db, &mut cursor, 1).await.is_empty(), "nor from the head: the first is not due");

    // Its hour passes (moved rather than waited for): it is due after the position.
    db.execute("UPDATE jobs SET run_at = now() WHERE id = $1", &[&jobs[0]]).await.unwrap();
    let retried = claim(&db, &mut cursor, 1).await;
    assert_eq!((retried[0].id, retried[0].attempt), (jobs[0], 2));
    complete(&db, &retried).await;
}

#[tokio::test]
async fn many_workers_with_cursors_claim_every_job_exactly_once_while_jobs_arrive() {
    let app = TestApp::spawn().await;
    let produced = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let (pool, produced) = (app.pool.clone(), produced.clone());
            tokio::spawn(async move {
                let db = pool.get().await.unwrap();
                // Short: claims from the position and from the head both happen.
                let mut cursor = ClaimCursor::new(Duration::from_millis(30));
                let mut mine = Vec::new();
                loop {
                    // Read before the claim: a claim that starts later sees every job enqueued.
                    let all_enqueued = produced.load(Ordering::SeqCst);
                    let from = cursor.start();
                    let claimed =
                        queue::claim_from(&db, &format!("w{i}"), 1 + i % 3, LEASE, from).await.unwrap();
                    cursor.advance(&claimed);
                    for job in &claimed {
                        assert!(queue::complete(&db, job.id, job.token).await.unwrap());
                    }
                    mine.extend(ids(&claimed));
                    if claimed.is_empty() {
                        // Done once everything was produced and a claim from the head finds
                        // nothing.
                        if all_enqueued && from.is_none() {
                            return mine;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();

    let db = app.pool.get().await.unwrap();
    // Enqueued by a transaction that began before the workers claimed anything: it commits
    // behind every worker's position.
    let mut early_db = app.pool.get().await.unwrap();
    let early = early_db.transaction().await.unwrap();
    let late_comer = Noop {}.enqueue(&early).await.unwrap();
    let mut enqueued = vec![late_comer];
    for n in 0..300 {
        enqueued.push(insert_job(&db, (n % 5) as i16 - 2, 0.0).await);
    }
    app.wait_for("SELECT count(*) = 300 FROM jobs WHERE state = 'completed'").await;
    early.commit().await.unwrap();
    produced.store(true, Ordering::SeqCst);

    let mut claimed = Vec::new();
    for worker in workers {
        claimed.extend(worker.await.unwrap());
    }
    let distinct: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(distinct.len(), claimed.len(), "no job claimed twice");
    assert_eq!(distinct, enqueued.into_iter().collect(), "every job claimed, {late_comer} included");
    let first_attempts: i64 = db
        .query_one("SELECT count(*) FROM jobs WHERE state = 'completed' AND attempt = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(first_attempts, 301);
}

/// Blocks of `jobs` and its indexes this transaction has read so far.
async fn blocks_read(tx: &deadpool_postgres::Transaction<'_>) -> i64 {
    tx.query_one(
        "SELECT sum(pg_stat_get_xact_blocks_fetched(oid))::int8 FROM pg_class
         WHERE oid = 'jobs'::regclass OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'jobs'::regclass)",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn under_a_held_snapshot_a_claim_reads_from_its_position_not_past_every_finished_job() {
    let app = TestApp::spawn().await;
    let mut db = app.pool.get().await.unwrap();
    db.execute("INSERT INTO jobs (kind) SELECT $1 FROM generate_series(1, 4000)", &[&Noop::KIND])
        .await
        .unwrap();
    // Statistics as autovacuum keeps them: no job running yet.
    db.batch_execute("VACUUM ANALYZE jobs").await.unwrap();
    // An analytics query, say: a snapshot held open on another connection to this database.
    let (holder, connection) = shared::db::connect(&app.config.database_url).await.unwrap();
    tokio::spawn(connection);
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM exports")
        .await
        .unwrap();

    let mut cursor = ClaimCursor::new(NEVER);
    for _ in 0..30 {
        let claimed = claim(&db, &mut cursor, 100).await;
        let (ids, tokens): (Vec<i64>, Vec<uuid::Uuid>) = claimed.iter().map(|j| (j.id, j.token)).unzip();
        assert_eq!(queue::complete_many(&db, &ids, &tokens).await.unwrap(), 100);
    }

    // Every one of the 3,000 finished jobs left an entry in jobs_ready (and in the running
    // jobs' index) that the held snapshot keeps alive. A worker's claim reads from its position.
    let tx = db.transaction().await.unwrap();
    let before = blocks_read(&tx).await;
    let claimed = claim(&tx, &mut cursor, 1).await;
    let positioned = blocks_read(&tx).await - before;
    // And completes it by its id.
    let before = blocks_read(&tx).await;
    assert!(queue::complete(&tx, claimed[0].id, claimed[0].token).await.unwrap());
    let completing = blocks_read(&tx).await - before;
    let before = blocks_read(&tx).await;
    assert_eq!(queue::claim(&tx, "from-the-head", 1, LEASE).await.unwrap().len(), 1);
    let from_head = blocks_read(&tx).await - before;
    tx.rollback().await.unwrap();
    holder.batch_execute("ROLLBACK").await.unwrap();
    // Settled: the jobs left run.
    db.execute("UPDATE jobs SET state = 'completed', finished_at = now() WHERE state = 'available'", &[])
        .await
        .unwrap();
    assert!(from_head > 40, "from the head a claim reads past the finished jobs: {from_head} blocks");
    // A few pages of each index, the job's heap page and the one its new version goes to, whatever
    // the number of jobs finished (3,000 here).
    assert!(
        completing <= 20,
        "completing a job read {completing} blocks of jobs and its indexes under a held snapshot"
    );
    assert!(
        positioned <= 25,
        "a worker's claim read {positioned} blocks of jobs and jobs_ready under a held snapshot \
         (from the head: {from_head})"
    );
}
