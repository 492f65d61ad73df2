-- Claim up to {limit} ready jobs for worker $1 under a lease of $2 seconds, reading the ready
-- jobs from position ($3 priority, $4 run_at, $5 id) in claim order, or from the head of the
-- queue when they are NULL (queue/cursor.rs says why a worker remembers where it stopped).
-- SKIP LOCKED lets any number of workers run this at once without waiting on each other;
-- every claim draws a fresh fencing token. `= ANY (ARRAY(…))` keeps the update an index scan
-- on the primary key whatever the planner guesses for LIMIT $1 (a join on the CTE turns into a
-- sequential scan of the whole table under a generic plan).
-- The limit is written into the text (`shared::queue::claim_sql`), one statement per limit: with
-- `LIMIT $n` the generic plan looks costlier than a custom one (Postgres assumes a tenth of the
-- table), so Postgres plans every call afresh; with the number written in, both cost the same and
-- Postgres keeps the generic plan after its fifth call.
WITH next AS (
    SELECT id
    FROM jobs
    WHERE state IN ('available', 'retryable')
      AND run_at <= now()
      AND (priority, run_at, id) >= (coalesce($3::smallint, -32768),
                                     coalesce($4::timestamptz, '-infinity'),
                                     coalesce($5::bigint, 0))
    ORDER BY priority, run_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs
SET state            = 'running',
    attempt          = jobs.attempt + 1,
    attempt_token    = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => $2),
    worker_id        = $1,
    attempted_at     = now()
WHERE jobs.id = ANY (ARRAY(SELECT id FROM next))
RETURNING jobs.id, jobs.kind, jobs.args, jobs.attempt, jobs.max_attempts, jobs.attempt_token,
          jobs.priority, jobs.run_at,
          extract(epoch FROM now() - jobs.run_at)::float8 AS waited_seconds
