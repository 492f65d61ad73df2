-- Operator dashboard sign-in: an admin API key is exchanged for a session. Only the SHA-256 of
-- the session token (the cookie) is stored; each session has its own CSRF token for forms.
CREATE TABLE admin_sessions (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    api_key_id uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);

-- Requests answered with an existing export (deduplication), counted per hour. API processes
-- add their counts every few seconds, so a request never waits on this write.
CREATE TABLE export_reuse_hourly (
    hour   timestamptz PRIMARY KEY,
    reused bigint NOT NULL DEFAULT 0
);

-- Admin keys see every account on the dashboard: an account restriction on one would mislead.
ALTER TABLE api_keys ADD CONSTRAINT admin_keys_are_unrestricted
    CHECK (role <> 'admin' OR allowed_accounts IS NULL);
