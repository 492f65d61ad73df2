-- The export a job produces, found from the job: the dashboard's queue page (each listed job's
-- export and progress) and its retry and cancel actions look exports up by `job_id` instead of
-- reading the export id out of the job's arguments (the queue never reads a kind's payload).
-- On a large live `exports` table build it by hand first:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS exports_job_id ON exports (job_id);
CREATE INDEX IF NOT EXISTS exports_job_id ON exports (job_id);
