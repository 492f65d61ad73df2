-- An export's failure is stored as a code (`error_code`, see `shared::failure::FailureCode`);
-- the message clients and the dashboard show is derived from it. Causes (driver text, users,
-- hosts, paths, URLs, buckets) are logged by the worker and never stored.
--
-- The free-text `error` column is no longer written; it is kept (NULL) for binaries of the
-- previous release during a rolling upgrade and dropped by a later migration. Existing text is
-- never shown again: the fixed texts of the previous release become their codes, anything else
-- (which may hold driver text or paths) becomes `unclassified`, and the text is cleared.
ALTER TABLE exports ADD COLUMN error_code text;

UPDATE exports SET
    error_code = CASE error
        WHEN 'cancelled by the client' THEN 'cancelled'
        WHEN 'cancelled by an operator' THEN 'cancelled_by_operator'
        WHEN 'the worker shut down; another worker will resume the export' THEN 'worker_shutdown'
        WHEN 'the worker running the export was lost; another worker will resume it' THEN 'worker_lost'
        WHEN 'the export was interrupted too many times (worker lost during every attempt)'
            THEN 'attempts_exhausted'
        ELSE 'unclassified'
    END,
    error = NULL
WHERE error IS NOT NULL;

-- The queue's `last_error` holds the same codes (the dashboard shows it).
UPDATE jobs SET last_error = CASE
        WHEN last_error = 'cancelled' THEN 'cancelled'
        WHEN last_error LIKE 'worker lost its lease%' THEN 'worker_lost'
        ELSE 'unclassified'
    END
WHERE last_error IS NOT NULL;
