-- Export analytics by the hour, so the dashboard's overview never rescans `exports`.
--
-- One row per hour in which exports were created (`hour`: the UTC hour of `created_at`): how many of those
-- exports are in each status now, and the runs that completed (count, rows, bytes, seconds from
-- start to completion, and a histogram of those seconds for the p95). A trigger keeps it
-- exact, in the transaction of every insert and every status change; rows pruned from `exports`
-- (EXPORT_ROW_RETENTION_DAYS) leave their counts here. Read by `shared::exports::stats`.
--
-- Duration histogram: 100 buckets, four per doubling from 10 ms. Bucket b (1-based) counts runs
-- of [0.01 * 2^((b-1)/4), 0.01 * 2^(b/4)) seconds; bucket 1 also takes anything shorter and
-- bucket 100 anything longer (about 3 days). `export_run_bucket` is the one definition;
-- shared/src/exports/stats.rs reads the boundaries back from it in a test.
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

CREATE FUNCTION export_run_bucket(seconds double precision) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT least(100, greatest(1, floor(4 * ln(greatest(seconds, 0.001) / 0.01) / ln(2))::integer + 1))
$$;

-- Moves one export from its old status's column (none on insert) to its new one.
CREATE FUNCTION export_hourly_record() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    created_hour timestamp := date_trunc('hour', NEW.created_at AT TIME ZONE 'UTC');
    was  text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
    ran  double precision;
BEGIN
    INSERT INTO export_hourly AS h (hour, pending, processing, completed, failed, cancelled, expired)
    VALUES (created_hour,
            (NEW.status = 'PENDING')::int    - (was IS NOT DISTINCT FROM 'PENDING')::int,
            (NEW.status = 'PROCESSING')::int - (was IS NOT DISTINCT FROM 'PROCESSING')::int,
            (NEW.status = 'COMPLETED')::int  - (was IS NOT DISTINCT FROM 'COMPLETED')::int,
            (NEW.status = 'FAILED')::int     - (was IS NOT DISTINCT FROM 'FAILED')::int,
            (NEW.status = 'CANCELLED')::int  - (was IS NOT DISTINCT FROM 'CANCELLED')::int,
            (NEW.status = 'EXPIRED')::int    - (was IS NOT DISTINCT FROM 'EXPIRED')::int)
    ON CONFLICT ON CONSTRAINT export_hourly_pkey DO UPDATE SET
        pending    = h.pending    + EXCLUDED.pending,
        processing = h.processing + EXCLUDED.processing,
        completed  = h.completed  + EXCLUDED.completed,
        failed     = h.failed     + EXCLUDED.failed,
        cancelled  = h.cancelled  + EXCLUDED.cancelled,
        expired    = h.expired    + EXCLUDED.expired;

    -- A run is counted once, when it completes (an export inserted as completed or expired, as
    -- a restore or a backfill does, counts too). Expiring later keeps it.
    IF NEW.status IN ('COMPLETED', 'EXPIRED') AND was IS DISTINCT FROM 'COMPLETED'
       AND NEW.started_at IS NOT NULL AND NEW.completed_at IS NOT NULL THEN
        ran := greatest(extract(epoch FROM NEW.completed_at - NEW.started_at)::double precision, 0);
        UPDATE export_hourly h SET
            runs          = h.runs + 1,
            run_rows      = h.run_rows + coalesce(NEW.row_count, 0),
            run_bytes     = h.run_bytes + coalesce(NEW.file_size, 0),
            run_seconds   = h.run_seconds + ran,
            run_histogram[export_run_bucket(ran)] = h.run_histogram[export_run_bucket(ran)] + 1
        WHERE h.hour = created_hour;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER exports_hourly_insert AFTER INSERT ON exports
    FOR EACH ROW EXECUTE FUNCTION export_hourly_record();
CREATE TRIGGER exports_hourly_status AFTER UPDATE OF status ON exports
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION export_hourly_record();

-- The exports already there.
INSERT INTO export_hourly (hour, pending, processing, completed, failed, cancelled, expired,
                           runs, run_rows, run_bytes, run_seconds)
SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC'),
       count(*) FILTER (WHERE status = 'PENDING'),
       count(*) FILTER (WHERE status = 'PROCESSING'),
       count(*) FILTER (WHERE status = 'COMPLETED'),
       count(*) FILTER (WHERE status = 'FAILED'),
       count(*) FILTER (WHERE status = 'CANCELLED'),
       count(*) FILTER (WHERE status = 'EXPIRED'),
       count(*) FILTER (WHERE ran IS NOT NULL),
       coalesce(sum(row_count) FILTER (WHERE ran IS NOT NULL), 0),
       coalesce(sum(file_size) FILTER (WHERE ran IS NOT NULL), 0),
       coalesce(sum(ran), 0)
FROM (SELECT *, CASE WHEN status IN ('COMPLETED', 'EXPIRED')
                     THEN greatest(extract(epoch FROM completed_at - started_at)::double precision, 0)
                END AS ran
      FROM exports) e
GROUP BY 1;

UPDATE export_hourly h SET run_histogram = b.histogram
FROM (SELECT hour, array_agg(coalesce(n, 0) ORDER BY bucket) AS histogram
      FROM (SELECT DISTINCT date_trunc('hour', created_at AT TIME ZONE 'UTC') AS hour FROM exports) hours
      CROSS JOIN generate_series(1, 100) AS bucket
      LEFT JOIN (SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AS hour,
                        export_run_bucket(extract(epoch FROM completed_at - started_at)::double precision) AS bucket,
                        count(*) AS n
                 FROM exports
                 WHERE status IN ('COMPLETED', 'EXPIRED') AND completed_at IS NOT NULL AND started_at IS NOT NULL
                 GROUP BY 1, 2) counted USING (hour, bucket)
      GROUP BY hour) b
WHERE h.hour = b.hour;
