-- Export analytics by the hour, so the dashboard's overview never rescans `exports`.
--
-- `export_hourly` holds, per hour in which exports were created (`hour`: the UTC hour of
-- `created_at`), how many of those exports are in each status, and the runs among them that
-- completed (count, rows, bytes, seconds from start to completion, and a histogram of those
-- seconds for the p95). It is exactly the aggregate of `export_hourly_terms` over the rows of
-- `exports` as they are now, plus the rows pruned since (EXPORT_ROW_RETENTION_DAYS), which
-- leave their figures here.
--
-- It is kept in two steps, so that no writer of `exports` ever waits on another for it:
-- - a statement trigger on `exports` appends what each statement changed, summed per hour and
--   duration bucket, to `export_hourly_changes` (inserts only: no row is locked, and a bulk
--   insert of a million exports adds one row per hour and bucket, not a million updates);
-- - `export_hourly_compact()`, run by the maintenance leader on every pass, folds those rows
--   into `export_hourly`, in hour order.
-- Readers (shared/src/exports/stats.rs) add the two together, so figures are exact at once.
--
-- Duration histogram: 100 buckets, four per doubling from 10 ms. Bucket b (1-based) counts runs
-- of [0.01 * 2^((b-1)/4), 0.01 * 2^(b/4)) seconds; bucket 1 also takes anything shorter and
-- bucket 100 anything longer (about 3 days). `export_run_bucket` is the one definition;
-- `shared::exports::stats::bucket_start` reads it back (a test holds the two together).
CREATE TABLE export_hourly (
    hour          timestamp PRIMARY KEY, -- UTC
    pending       bigint NOT NULL DEFAULT 0,
    processing    bigint NOT NULL DEFAULT 0,
    completed     bigint NOT NULL DEFAULT 0,
    failed        bigint NOT NULL DEFAULT 0,
    cancelled     bigint NOT NULL DEFAULT 0,
    expired       bigint NOT NULL DEFAULT 0,
    runs          bigint NOT NULL DEFAULT 0,
    run_rows      bigint NOT NULL DEFAULT 0,
    run_bytes     bigint NOT NULL DEFAULT 0,
    run_seconds   double precision NOT NULL DEFAULT 0,
    run_histogram bigint[] NOT NULL DEFAULT array_fill(0::bigint, ARRAY[100])
);

-- Changes not folded in yet: the same figures, as differences, with the runs of one duration
-- bucket per row (`run_bucket`; NULL when the row changes no run).
CREATE TABLE export_hourly_changes (
    hour        timestamp NOT NULL,
    run_bucket  integer,
    pending     bigint NOT NULL,
    processing  bigint NOT NULL,
    completed   bigint NOT NULL,
    failed      bigint NOT NULL,
    cancelled   bigint NOT NULL,
    expired     bigint NOT NULL,
    runs        bigint NOT NULL,
    run_rows    bigint NOT NULL,
    run_bytes   bigint NOT NULL,
    run_seconds double precision NOT NULL
);

CREATE FUNCTION export_run_bucket(seconds double precision) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT least(100, greatest(1, floor(4 * ln(greatest(seconds, 0.001) / 0.01) / ln(2))::integer + 1))
$$;

-- The statement that appends to `export_hourly_changes` the figures of `terms`: a query of
-- `sign` (+1 to add a row, -1 to take it away) and the columns of `exports`. A run is an export
-- COMPLETED or EXPIRED with both its start and its completion recorded.
CREATE FUNCTION export_hourly_terms(terms text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
SELECT format($q$
    WITH t AS (
        SELECT sign, date_trunc('hour', created_at AT TIME ZONE 'UTC') AS hour, status, row_count, file_size,
               CASE WHEN status IN ('COMPLETED', 'EXPIRED') AND started_at IS NOT NULL AND completed_at IS NOT NULL
                    THEN greatest(extract(epoch FROM completed_at - started_at)::double precision, 0)
               END AS ran
        FROM (%s) AS terms
    ), summed AS (
        SELECT hour, export_run_bucket(ran) AS run_bucket,
               coalesce(sum(sign) FILTER (WHERE status = 'PENDING'), 0) AS pending,
               coalesce(sum(sign) FILTER (WHERE status = 'PROCESSING'), 0) AS processing,
               coalesce(sum(sign) FILTER (WHERE status = 'COMPLETED'), 0) AS completed,
               coalesce(sum(sign) FILTER (WHERE status = 'FAILED'), 0) AS failed,
               coalesce(sum(sign) FILTER (WHERE status = 'CANCELLED'), 0) AS cancelled,
               coalesce(sum(sign) FILTER (WHERE status = 'EXPIRED'), 0) AS expired,
               coalesce(sum(sign) FILTER (WHERE ran IS NOT NULL), 0) AS runs,
               coalesce(sum(sign * coalesce(row_count, 0)) FILTER (WHERE ran IS NOT NULL), 0) AS run_rows,
               coalesce(sum(sign * coalesce(file_size, 0)) FILTER (WHERE ran IS NOT NULL), 0) AS run_bytes,
               coalesce(sum(sign * ran), 0) AS run_seconds
        FROM t GROUP BY 1, 2
    )
    INSERT INTO export_hourly_changes (hour, run_bucket, pending, processing, completed, failed,
                                       cancelled, expired, runs, run_rows, run_bytes, run_seconds)
    SELECT * FROM summed
    -- A statement that changed no status and no run (progress, a job id) adds nothing.
    WHERE (pending, processing, completed, failed, cancelled, expired, runs, run_rows, run_bytes, run_seconds)
          IS DISTINCT FROM (0, 0, 0, 0, 0, 0, 0, 0, 0, 0::double precision)
$q$, terms)
$$;

-- The trigger: what the statement inserted, or the rows as they are now minus as they were.
-- (Transition tables are visible to the trigger function's own statements only, hence EXECUTE.)
CREATE FUNCTION export_hourly_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE export_hourly_terms('SELECT 1 AS sign, * FROM new_rows');
    ELSE
        EXECUTE export_hourly_terms('SELECT 1 AS sign, * FROM new_rows UNION ALL SELECT -1, * FROM old_rows');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER exports_hourly_insert AFTER INSERT ON exports
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION export_hourly_record();
CREATE TRIGGER exports_hourly_update AFTER UPDATE ON exports
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION export_hourly_record();

-- Folds the changes into `export_hourly`, in hour order (two folds at once wait on each other
-- instead of deadlocking). Returns how many change rows it folded.
CREATE FUNCTION export_hourly_compact() RETURNS bigint
LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM export_hourly_changes RETURNING *
    ), buckets AS (
        SELECT hour, run_bucket, sum(runs) AS runs FROM moved WHERE run_bucket IS NOT NULL GROUP BY 1, 2
    ), histograms AS (
        SELECT hours.hour, array_agg(coalesce(b.runs, 0)::bigint ORDER BY i) AS run_histogram
        FROM (SELECT DISTINCT hour FROM moved) AS hours
        CROSS JOIN generate_series(1, 100) AS i
        LEFT JOIN buckets b ON b.hour = hours.hour AND b.run_bucket = i
        GROUP BY hours.hour
    ), folded AS (
        SELECT m.hour,
               sum(pending) AS pending, sum(processing) AS processing, sum(completed) AS completed,
               sum(failed) AS failed, sum(cancelled) AS cancelled, sum(expired) AS expired,
               sum(m.runs) AS runs, sum(run_rows) AS run_rows, sum(run_bytes) AS run_bytes,
               sum(run_seconds) AS run_seconds, min(hg.run_histogram) AS run_histogram
        FROM moved m JOIN histograms hg USING (hour) GROUP BY m.hour
    ), written AS (
        INSERT INTO export_hourly AS h (hour, pending, processing, completed, failed, cancelled, expired,
                                        runs, run_rows, run_bytes, run_seconds, run_histogram)
        SELECT * FROM folded ORDER BY hour
        ON CONFLICT (hour) DO UPDATE SET
            pending     = h.pending + EXCLUDED.pending,
            processing  = h.processing + EXCLUDED.processing,
            completed   = h.completed + EXCLUDED.completed,
            failed      = h.failed + EXCLUDED.failed,
            cancelled   = h.cancelled + EXCLUDED.cancelled,
            expired     = h.expired + EXCLUDED.expired,
            runs        = h.runs + EXCLUDED.runs,
            run_rows    = h.run_rows + EXCLUDED.run_rows,
            run_bytes   = h.run_bytes + EXCLUDED.run_bytes,
            run_seconds = h.run_seconds + EXCLUDED.run_seconds,
            run_histogram = (SELECT array_agg(a + b ORDER BY i)
                             FROM unnest(h.run_histogram, EXCLUDED.run_histogram) WITH ORDINALITY AS u(a, b, i))
        RETURNING 1
    )
    SELECT count(*) FROM moved
$$;

-- The exports already there, folded in at once.
DO $$ BEGIN EXECUTE export_hourly_terms('SELECT 1 AS sign, * FROM exports'); END $$;
SELECT export_hourly_compact();
