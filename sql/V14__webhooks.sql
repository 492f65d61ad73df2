-- Completion webhooks (the Standard Webhooks spec): endpoints registered per API key, the events
-- an export's final state produces, one delivery per subscribed endpoint, and each attempt of a
-- delivery. `shared::webhooks` owns these tables.

-- Where a key's export events go. `secret` is the signing key's raw bytes (shown to the client
-- once, as `whsec_` + base64; it must be stored readable, to sign with); after a rotation the
-- previous one keeps signing beside it until `previous_secret_expires_at`. `failing_since`: the
-- first failed attempt since the last success; an endpoint failing for
-- WEBHOOK_DISABLE_AFTER_SECS is disabled (`disabled_at`) until its owner enables it again (its
-- events meanwhile are recorded unsent). Deleting the key deletes its endpoints.
CREATE TABLE webhook_endpoints (
    id                         uuid PRIMARY KEY,
    api_key_id                 uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    url                        text NOT NULL,
    description                text NOT NULL DEFAULT '',
    event_types                text[] NOT NULL
        CHECK (cardinality(event_types) > 0
               AND event_types <@ ARRAY['export.completed', 'export.failed', 'export.cancelled', 'export.expired']),
    secret                     bytea NOT NULL,
    previous_secret            bytea,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    secret_rotated_at          timestamptz,
    failing_since              timestamptz,
    disabled_at                timestamptz,
    CONSTRAINT webhook_endpoints_previous_secret
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
-- A key's endpoints, oldest first (listing, the per-key cap, and the trigger's lookup).
CREATE INDEX webhook_endpoints_by_key ON webhook_endpoints (api_key_id, created_at, id);

-- An export reached a final state. `body` is the request body every delivery of the event sends:
-- rendered by the worker at the first attempt (the export as GET /api/export/{id} returns it,
-- without a download link) and then kept, so every retry and every resend sends the same bytes
-- under the same `webhook-id` (the event's id). The events of a pruned export go with it.
CREATE TABLE webhook_events (
    id          uuid PRIMARY KEY,
    export_id   uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    type        text NOT NULL
        CHECK (type IN ('export.completed', 'export.failed', 'export.cancelled', 'export.expired')),
    occurred_at timestamptz NOT NULL,
    body        text
);
CREATE INDEX webhook_events_by_export ON webhook_events (export_id);

-- One event to one endpoint, once. `job_id`: the `deliver_webhook` job now sending it (a resend
-- enqueues a new one). `attempts` counts the attempts logged in `webhook_attempts`.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    job_id          bigint,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'retrying', 'succeeded', 'failed', 'disabled')),
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT webhook_deliveries_once UNIQUE (event_id, endpoint_id)
);
-- An endpoint's delivery log, newest first (keyset pages), and its deliveries still to send.
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
-- The delivery a job sends (an operator's retry or cancel of the job on the dashboard).
CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (job_id);

-- Each attempt of a delivery: when, how long, what the endpoint answered (its status and the
-- first bytes of its body) or why there was no answer (`error_class`, NULL on a 2xx).
CREATE TABLE webhook_attempts (
    delivery_id      uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt          integer NOT NULL CHECK (attempt > 0),
    attempted_at     timestamptz NOT NULL,
    latency_ms       double precision,
    response_status  integer,
    error_class      text CHECK (error_class IN ('timeout', 'connect', 'dns', 'address_refused', 'redirect',
                                                 'http_status', 'request', 'worker_lost')),
    response_excerpt text,
    PRIMARY KEY (delivery_id, attempt)
);

-- The one home of "an export's final state produces its event": whatever statement moves an
-- export to COMPLETED, FAILED, CANCELLED or EXPIRED (the worker's completion and failure, a lease
-- rescue out of attempts, a cancel, retention and a lost file), the event, its deliveries and
-- their jobs are written in the same transaction, or not at all.
--
-- The event goes to the endpoints subscribed to its type of every key that holds the export
-- (asked for it and did not cancel for itself: `detached_at IS NULL`) and is active (neither
-- revoked nor deactivated). A disabled endpoint gets its delivery recorded as `disabled`, with
-- no job: its owner may send it when enabling the endpoint again. An export no endpoint wants
-- writes nothing. Each delivery to an enabled endpoint gets a `deliver_webhook` job
-- (`shared::webhooks::DeliverWebhook::KIND`) with that kind's attempt budget (`MAX_ATTEMPTS`:
-- it only bounds lease rescues; the kind's schedule decides retries); a test holds these
-- literals to the Rust constants. The NOTIFY wakes the workers when the transaction commits.
CREATE FUNCTION webhook_events_record() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_type  text := 'export.' || lower(NEW.status);
    new_event uuid := gen_random_uuid();
BEGIN
    WITH targets AS MATERIALIZED (
        SELECT gen_random_uuid() AS delivery_id, e.id AS endpoint_id, e.disabled_at IS NOT NULL AS disabled
        FROM export_requesters r
        JOIN api_keys k ON k.id = r.api_key_id AND k.revoked_at IS NULL AND k.deactivated_at IS NULL
        JOIN webhook_endpoints e ON e.api_key_id = r.api_key_id
        WHERE r.export_id = NEW.id AND r.detached_at IS NULL AND new_type = ANY (e.event_types)
    ), event AS (
        INSERT INTO webhook_events (id, export_id, type, occurred_at)
        SELECT new_event, NEW.id, new_type, now() WHERE EXISTS (SELECT 1 FROM targets)
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
    RETURN NULL;
END
$$;

-- Row by row, filtered in the trigger's WHEN (no function call for a statement that changes no
-- status: progress writes, job ids): only a change into a final state runs it.
CREATE TRIGGER exports_webhook_events AFTER UPDATE OF status ON exports
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED'))
    EXECUTE FUNCTION webhook_events_record();
