-- Running jobs by lease expiry (the rescuer; the heartbeat, shutdown's release, the queue's counts
-- and lists read running jobs through it too), now with a predicate that names the lease as well
-- as the state. A statement that finds one job by id and checks `state = 'running'` (completion,
-- a failure, the fencing of every export write) must not match it: with `WHERE state = 'running'`
-- alone the planner scanned the whole index for that one job rather than take the primary key
-- (the index looks tiny: a few running jobs), and under a long-running transaction elsewhere the
-- index keeps an entry for every job finished since (measured: 49,328 buffers read to complete
-- one job after 40,000 had completed under a held snapshot). Every running job has a lease
-- (`shared::queue::RUNNING` is the predicate the readers write).
-- On a large live `jobs` table build the new index by hand first:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_running_by_lease ON jobs (lease_expires_at)
--       WHERE state = 'running' AND lease_expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_running_by_lease ON jobs (lease_expires_at)
    WHERE state = 'running' AND lease_expires_at IS NOT NULL;
DROP INDEX IF EXISTS jobs_running_lease;
