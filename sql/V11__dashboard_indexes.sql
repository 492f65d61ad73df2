-- Indexes the dashboard, the listing and `/metrics` read through. On a large live database build
-- them by hand first (the `IF NOT EXISTS` below then skips them):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_finished_by_state ON jobs (state, finished_at)
--       WHERE state IN ('completed', 'failed', 'cancelled');
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS exports_status_created_at
--       ON exports (status, created_at DESC, id DESC);
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS api_keys_created_at ON api_keys (created_at DESC, id DESC);

-- Finished jobs indexed by state first, so the queue's depth by state (the dashboard's queue page
-- and `/metrics`) counts each finished state from this index alone (an index-only scan: finished
-- rows do not change, so vacuum marks their pages all-visible) instead of reading every job row
-- kept for JOB_RETENTION_DAYS. Pruning still finds what is past retention by
-- (state, finished_at). Waiting and running jobs are counted through their own partial indexes
-- (`jobs_ready`, `jobs_running_lease`): there are only as many of them as the backlog.
CREATE INDEX IF NOT EXISTS jobs_finished_by_state ON jobs (state, finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
DROP INDEX IF EXISTS jobs_finished;

-- The export listing filtered by status alone (`GET /api/exports?status=PENDING`), newest first:
-- without it a rare status is found by reading the whole table backwards.
CREATE INDEX IF NOT EXISTS exports_status_created_at ON exports (status, created_at DESC, id DESC);

-- The dashboard's API keys page, newest first, a page at a time.
CREATE INDEX IF NOT EXISTS api_keys_created_at ON api_keys (created_at DESC, id DESC);
