-- A key's state, made explicit. `revoked_at` (`statement-api keys revoke`) is final; the dashboard's
-- deactivate/reactivate sets and clears `deactivated_at` and never touches `revoked_at`. A key is
-- active when both are NULL. Until now the dashboard's deactivate also set `revoked_at`, so a
-- revoked key could not be told from a deactivated one: existing `revoked_at` rows stay revoked
-- (the safe reading: a key someone revoked never comes back).
ALTER TABLE api_keys ADD COLUMN deactivated_at timestamptz;

-- Who asked for an export: one row per (export, requesting key), written synchronously when the
-- pair is new (the create transaction, or right after the dedup read), so a cancel always sees
-- every requester. `last_requested_at` and `requests` are advanced in batches by each API
-- process (a dedup hit writes nothing synchronously). A key that cancels an export other keys
-- also requested is only detached (`detached_at`); asking again attaches it again.
--
-- The surrogate `id` and the named unique constraint leave room for later requesters (a
-- schedule or webhook acting for a key): add nullable `schedule_id` / `webhook_id` columns and
-- replace `export_requesters_pair` with `UNIQUE NULLS NOT DISTINCT (export_id, api_key_id,
-- schedule_id, webhook_id)`.
CREATE TABLE export_requesters (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    export_id         uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    -- A deleted key can neither read nor cancel: its rows go with it.
    api_key_id        uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    first_requested_at timestamptz NOT NULL DEFAULT now(),
    last_requested_at timestamptz NOT NULL DEFAULT now(),
    requests          bigint NOT NULL DEFAULT 1 CHECK (requests > 0),
    detached_at       timestamptz,
    CONSTRAINT export_requesters_pair UNIQUE (export_id, api_key_id)
);
-- Key deletion (the cascade) finds a key's rows.
CREATE INDEX export_requesters_api_key_id ON export_requesters (api_key_id);

-- Exports made before this table: their creator is their requester.
INSERT INTO export_requesters (export_id, api_key_id, first_requested_at, last_requested_at)
SELECT id, api_key_id, created_at, created_at FROM exports WHERE api_key_id IS NOT NULL;

-- The per-key cap on outstanding exports counts a key's pending and processing exports; this
-- keeps that count as small as the count itself. The predicate is `OUTSTANDING` in
-- shared/src/exports.rs.
CREATE INDEX exports_outstanding_by_key ON exports (api_key_id)
    WHERE status IN ('PENDING', 'PROCESSING');
