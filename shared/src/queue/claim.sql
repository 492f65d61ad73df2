-- Claim up to $1 ready jobs for worker $2 under a lease of $3 seconds.
-- SKIP LOCKED lets any number of workers run this at once without waiting on each other;
-- every claim draws a fresh fencing token.
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
FROM next
WHERE jobs.id = next.id
RETURNING jobs.id, jobs.kind, jobs.args, jobs.attempt, jobs.max_attempts, jobs.attempt_token
