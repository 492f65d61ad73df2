-- Operators are people. A person signs in to the dashboard through the organisation's OpenID
-- provider and is known by the provider's (issuer, subject) pair; `role` is the dashboard role
-- the provider's claims granted at the latest sign-in.
CREATE TABLE operators (
    id                  uuid PRIMARY KEY,
    issuer              text NOT NULL,
    subject             text NOT NULL,
    name                text NOT NULL,
    email               text,
    role                text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    first_signed_in_at  timestamptz NOT NULL DEFAULT now(),
    last_signed_in_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operators_identity UNIQUE (issuer, subject)
);

-- A dashboard session belongs to a person (single sign-on) or, for break-glass use, to an
-- admin API key; it carries the role it was granted. Sessions opened before this migration
-- were admin-key sessions. A person's session keeps the provider's ID token, to name the
-- session when signing out at the provider (`id_token_hint`).
ALTER TABLE admin_sessions
    ALTER COLUMN api_key_id DROP NOT NULL,
    ADD COLUMN operator_id uuid REFERENCES operators (id) ON DELETE CASCADE,
    ADD COLUMN role text NOT NULL DEFAULT 'admin' CHECK (role IN ('viewer', 'operator', 'admin')),
    ADD COLUMN id_token text,
    ADD CONSTRAINT admin_sessions_one_actor CHECK ((api_key_id IS NULL) <> (operator_id IS NULL));
ALTER TABLE admin_sessions ALTER COLUMN role DROP DEFAULT;

-- The audit trail: one row per administrative action, appended and never changed. `seq` is
-- gapless and each row holds the SHA-256 of the row before it (`prev_hash`; 32 zero bytes for
-- the first) and its own `hash` = SHA-256(prev_hash || canonical JSON of the row's content), as
-- `shared::audit` computes it and `statement-api audit verify` checks it: an edited, deleted or
-- inserted row breaks the chain from there on. Writers append under a transaction-level
-- advisory lock, so rows are chained in the order they commit.
--
-- Every column is text (or a number, or a timestamp in microseconds) exactly as it is hashed:
-- nothing is normalised on the way in, so the chain can be recomputed from what is stored.
CREATE TABLE audit_log (
    seq          bigint PRIMARY KEY CHECK (seq > 0),
    -- When the row was appended (the database's clock).
    at           timestamptz NOT NULL,
    -- When the action happened (the clock of the process that handled it): API requests are
    -- appended in batches, up to a second or so later.
    occurred_at  timestamptz NOT NULL,
    -- `person` (signed in through single sign-on), `break_glass` (an admin key on the
    -- dashboard), `api_key` (a client's API request) or `system` (the service itself).
    actor_kind   text NOT NULL CHECK (actor_kind IN ('person', 'break_glass', 'api_key', 'system')),
    -- The operator's id, or the key's id.
    actor_id     text NOT NULL,
    -- The person's name and e-mail, or the key's prefix, as they were at the time.
    actor_name   text NOT NULL,
    action       text NOT NULL,
    target       text,
    outcome      text NOT NULL CHECK (outcome IN ('success', 'unchanged', 'not_found', 'denied', 'failed')),
    client_addr  text,
    -- A JSON object, stored as the exact text that was hashed.
    details      text NOT NULL,
    prev_hash    bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash         bytea NOT NULL CHECK (length(hash) = 32)
);
-- The Audit page filters by actor and by action, newest first.
CREATE INDEX audit_log_actor ON audit_log (actor_id, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_at ON audit_log (at);

-- Appended, never changed: UPDATE, DELETE and TRUNCATE are refused for every role, the
-- service's own included. The table's owner (the role that ran this migration) and a
-- superuser can still disable the trigger or grant themselves the privileges back: run the
-- migrations as an owner role and the service as a role granted INSERT and SELECT only
-- (docs/audit.md), and keep the chain's head outside the database (`statement-api audit verify`
-- prints it, the maintenance leader logs it): the hash chain, checked against a kept head, is
-- what shows a change made that way.
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC, CURRENT_USER;
