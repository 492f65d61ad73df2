-- API keys: only the SHA-256 of the full key is stored; `prefix` is what operators see.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    role         text NOT NULL DEFAULT 'client' CHECK (role IN ('client', 'admin')),
    -- NULL: every account; otherwise the accounts this key may export and read.
    allowed_accounts text[],
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- One row per statement export requested by a client.
CREATE TABLE exports (
    id            uuid PRIMARY KEY,
    request_hash  bytea NOT NULL CHECK (length(request_hash) = 32),
    api_key_id    uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    account_id    text NOT NULL,
    table_name    text NOT NULL,
    date_from     date NOT NULL,
    date_to       date NOT NULL CHECK (date_to >= date_from),
    format        text NOT NULL DEFAULT 'csv',
    status        text NOT NULL DEFAULT 'PENDING'
                  CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED')),
    file_key      text,
    file_size     bigint,
    row_count     bigint,
    rows_exported bigint NOT NULL DEFAULT 0,
    sha256        text,
    error         text,
    -- The job that produces this export (cancel goes through it).
    job_id        bigint,
    -- Set when a newer export (force_refresh) takes over this request's deduplication slot.
    superseded_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- When the source snapshot was taken (freshness of open-period statements).
    snapshot_at   timestamptz,
    started_at    timestamptz,
    completed_at  timestamptz,
    expires_at    timestamptz
);

-- Deduplication is enforced here, not by check-then-insert: at most one live export per
-- normalized request.
CREATE UNIQUE INDEX exports_dedup_slot ON exports (request_hash)
    WHERE superseded_at IS NULL AND status IN ('PENDING', 'PROCESSING', 'COMPLETED');
CREATE INDEX exports_created_at ON exports (created_at DESC, id DESC);
CREATE INDEX exports_account_created_at ON exports (account_id, created_at DESC, id DESC);
-- Retention: maintenance finds completed exports whose files are due for deletion.
CREATE INDEX exports_due_to_expire ON exports (expires_at) WHERE status = 'COMPLETED';

-- Generic job queue. Workers claim with SELECT ... FOR UPDATE SKIP LOCKED.
CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL,
    args             jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'available'
                     CHECK (state IN ('available', 'running', 'retryable', 'completed', 'failed', 'cancelled')),
    priority         smallint NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    -- Fencing: every write after the claim must present the token of the current attempt.
    attempt_token    uuid,
    lease_expires_at timestamptz,
    worker_id        text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempted_at     timestamptz,
    finished_at      timestamptz
);

CREATE INDEX jobs_ready ON jobs (priority, run_at, id) WHERE state IN ('available', 'retryable');
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');

-- Worker processes, for the dashboard and readiness: each upserts itself and heartbeats.
CREATE TABLE workers (
    id                text PRIMARY KEY,
    host              text NOT NULL,
    pid               integer NOT NULL,
    version           text NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    running_jobs      integer NOT NULL DEFAULT 0,
    is_leader         boolean NOT NULL DEFAULT false
);
