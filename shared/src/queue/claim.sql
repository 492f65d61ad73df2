-- Claim up to $1 ready jobs for worker $2 under a lease of $3 seconds.
-- SKIP LOCKED lets any number of workers run this at once without waiting on each other;
-- every claim draws a fresh fencing token. `= ANY (ARRAY(…))` keeps the update an index scan
-- on the primary key whatever the planner guesses for LIMIT $1 (a join on the CTE turns into a
-- sequential scan of the whole table under a generic plan).
WITH next AS (
    SELECT id
    FROM jobs
    WHERE state IN ('available', 'retryable')
      AND run_at <= now()
    ORDER BY priority, run_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs
SET state            = 'running',
    attempt          = jobs.attempt + 1,
    attempt_token    = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => $3),
    worker_id        = $2,
    attempted_at     = now()
WHERE jobs.id = ANY (ARRAY(SELECT id FROM next))
RETURNING jobs.id, jobs.kind, jobs.args, jobs.attempt, jobs.max_attempts, jobs.attempt_token,
          extract(epoch FROM now() - jobs.run_at)::float8 AS waited_seconds
