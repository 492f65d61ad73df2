-- Every upload a worker starts is journalled before its first byte, under the key only that
-- claim writes (it contains the claim's token). The row goes away with the export's COMPLETED
-- record (same transaction) or once the attempt's cleanup succeeded; a row whose claim no
-- longer runs is an upload nobody will finish, and maintenance removes what it left in storage
-- (an object never recorded, an S3 multipart upload, local staging files) until that succeeds.
CREATE TABLE uploads (
    file_key      text PRIMARY KEY,
    export_id     uuid NOT NULL,
    job_id        bigint NOT NULL,
    attempt_token uuid NOT NULL,
    -- The S3 multipart upload id, once storage created it (local disk has none).
    upload_id     text,
    started_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_started_at ON uploads (started_at);

-- When a job's current run of retryable failures began: outages are retried for a time
-- window (JOB_RETRY_WINDOW_SECS), not only for a number of attempts.
ALTER TABLE jobs ADD COLUMN failing_since timestamptz;
