-- The latest storage write check. Every worker overwrites one small object (`health/write-check`)
-- now and then and records here whether that worked; `/ready` and the dashboard report it. One
-- row, overwritten by whichever worker checked last: the question is whether storage takes
-- writes now, and a row per worker would need its own cleanup as workers come and go.
CREATE TABLE storage_checks (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    ok         boolean NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    latency_ms double precision NOT NULL,
    worker_id  text NOT NULL,
    -- Why the write failed (operators only: the dashboard shows it, `/ready` never does).
    error      text
);
