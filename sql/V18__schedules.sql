-- Recurring statements (shared/src/schedules): a key's schedule asks for one export per account
-- and period, on time and exactly once, from the maintenance leader's scheduler pass.

-- A schedule of one key: which accounts (a list, or NULL for every account the key may read:
-- its allowed accounts, or the table's accounts table for an unrestricted key), which table and
-- format, how often (shared/src/schedules/calendar.rs) in which time zone, and how long after a
-- period closes its statement is asked for.
CREATE TABLE schedules (
    id             uuid PRIMARY KEY,
    -- A deleted key's schedules go with it.
    api_key_id     uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    name           text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    accounts       text[],
    table_name     text NOT NULL,
    format         text NOT NULL,
    frequency      text NOT NULL CHECK (frequency IN ('daily', 'weekly', 'monthly', 'quarterly')),
    -- The weekday weekly periods start on ('monday' …); the day of month monthly and quarterly
    -- periods start on (clamped to the month's last day).
    weekday        text CHECK (weekday IN ('monday', 'tuesday', 'wednesday', 'thursday', 'friday',
                                           'saturday', 'sunday')),
    day_of_month   smallint CHECK (day_of_month BETWEEN 1 AND 31),
    time_zone      text NOT NULL,
    delay_minutes  integer NOT NULL CHECK (delay_minutes BETWEEN 0 AND 44640),
    -- The first period is the one holding this day.
    starts_on      date NOT NULL,
    -- The scheduler's cursor: the first day of the first period not yet planned, and when that
    -- period is due. Advanced only under the schedule's row lock, with the runs it plans.
    next_period    date NOT NULL,
    next_due_at    timestamptz NOT NULL,
    paused_at      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- The scheduler's read: active schedules whose next period is due.
CREATE INDEX schedules_due ON schedules (next_due_at) WHERE paused_at IS NULL;
CREATE INDEX schedules_by_key ON schedules (api_key_id, created_at);

-- One statement a schedule asks for: an account's period. The primary key is the "exactly once"
-- guarantee: however many schedulers run, a (schedule, account, period) is planned once, and its
-- export is linked in the transaction that creates (or finds) it.
CREATE TABLE schedule_runs (
    schedule_id  uuid NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    account_id   text NOT NULL,
    period_from  date NOT NULL,
    period_to    date NOT NULL CHECK (period_to >= period_from),
    due_at       timestamptz NOT NULL,
    -- NULL until the export is asked for (deferred by the key's cap, or not yet reached).
    export_id    uuid REFERENCES exports (id) ON DELETE SET NULL,
    -- When the scheduler next looks at the run: to ask for its export, or to retry it.
    attention_at timestamptz,
    -- Retries of a FAILED export made by the schedule's policy.
    retries      integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, account_id, period_from)
);
-- The scheduler's second read: runs that need it (to ask, or to check on a failure), oldest first.
CREATE INDEX schedule_runs_attention ON schedule_runs (attention_at) WHERE attention_at IS NOT NULL;
-- A schedule's page: its latest runs.
CREATE INDEX schedule_runs_latest ON schedule_runs (schedule_id, period_from DESC);
-- An export's runs (deleting an export row, the dashboard's export page).
CREATE INDEX schedule_runs_export ON schedule_runs (export_id) WHERE export_id IS NOT NULL;

-- The schedule on whose behalf a key asked for an export (NULL: asked for by hand). One row per
-- (export, key) still: a key's completion webhook goes out once, whether it asked by hand, by a
-- schedule or both.
ALTER TABLE export_requesters ADD COLUMN schedule_id uuid REFERENCES schedules (id) ON DELETE SET NULL;

-- A scheduled export that fails is the scheduler's to retry: its runs ask for attention at once
-- (the scheduler then waits out the retry policy's delay). One home for "a scheduled export
-- failed", whichever path fails it (the worker, lease rescue, an operator).
CREATE FUNCTION schedule_runs_notice_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE schedule_runs SET attention_at = now() WHERE export_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER exports_failed_to_schedule_runs
    AFTER UPDATE OF status ON exports
    FOR EACH ROW WHEN (NEW.status = 'FAILED' AND OLD.status IS DISTINCT FROM 'FAILED')
    EXECUTE FUNCTION schedule_runs_notice_failure();

-- A completion event for the keys that hold an export (or, given `only_key`, that key alone):
-- the body of V14's trigger, given one home so a schedule that finds its period's export already
-- completed tells its key through the key's endpoints, as it would have had the export finished
-- after it asked.
CREATE FUNCTION webhook_events_write(export uuid, status text, only_key uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    new_type  text := 'export.' || lower(status);
    new_event uuid := gen_random_uuid();
BEGIN
    WITH targets AS MATERIALIZED (
        SELECT gen_random_uuid() AS delivery_id, e.id AS endpoint_id, e.disabled_at IS NOT NULL AS disabled
        FROM export_requesters r
        JOIN api_keys k ON k.id = r.api_key_id AND k.revoked_at IS NULL AND k.deactivated_at IS NULL
        JOIN webhook_endpoints e ON e.api_key_id = r.api_key_id
        WHERE r.export_id = export AND r.detached_at IS NULL AND new_type = ANY (e.event_types)
          AND (only_key IS NULL OR r.api_key_id = only_key)
    ), event AS (
        INSERT INTO webhook_events (id, export_id, type, occurred_at)
        SELECT new_event, export, new_type, now() WHERE EXISTS (SELECT 1 FROM targets)
    ), queued AS (
        INSERT INTO jobs (kind, args, max_attempts)
        SELECT 'deliver_webhook', jsonb_build_object('delivery_id', delivery_id), 8
        FROM targets WHERE NOT disabled
        RETURNING id, (args ->> 'delivery_id')::uuid AS delivery_id
    )
    INSERT INTO webhook_deliveries (id, event_id, endpoint_id, job_id, status, next_attempt_at, finished_at)
    SELECT t.delivery_id, new_event, t.endpoint_id, q.id,
           CASE WHEN t.disabled THEN 'disabled' ELSE 'pending' END,
           CASE WHEN t.disabled THEN NULL ELSE now() END,
           CASE WHEN t.disabled THEN now() END
    FROM targets t LEFT JOIN queued q USING (delivery_id);
    IF FOUND THEN
        PERFORM pg_notify('statement_jobs', 'deliver_webhook');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION webhook_events_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_events_write(NEW.id, NEW.status, NULL);
    RETURN NULL;
END
$$;
