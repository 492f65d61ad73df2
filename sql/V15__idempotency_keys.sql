-- Idempotency keys: the first response to a request sent with an `Idempotency-Key` header
-- (POST /api/export, POST /api/export/{reference_id}/cancel), kept per API key so that a retry
-- with the same key gets that response again instead of running the request twice
-- (draft-ietf-httpapi-idempotency-key-header). Written by `shared::idempotency`: one insert
-- claims a key, one update stores the response. A row is in flight while `response_status` is
-- NULL; its claim lasts until `lease_expires_at`, after which another request takes it over
-- (an API process that died mid-request must not hold the key for ever). The maintenance leader
-- deletes rows past `expires_at` in batches.
CREATE TABLE idempotency_keys (
    -- A deleted key's rows go with it.
    api_key_id        uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    -- The key as the client chose it (the sf-string's content): 1-255 printable ASCII.
    idempotency_key   text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- SHA-256 of the request (method, route, path parameters, canonical body): the same key
    -- with another request is refused (422).
    fingerprint       bytea NOT NULL CHECK (length(fingerprint) = 32),
    -- The claim holding the row now: only it may store the response or release the key.
    claim_token       uuid NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- After this the key is forgotten (`IDEMPOTENCY_KEY_TTL_SECS` after its first use).
    expires_at        timestamptz NOT NULL,
    -- While in flight: when the claim lapses and another request may take the key over.
    lease_expires_at  timestamptz,
    -- The stored response: status, the headers that matter (a JSON object, lower-case names)
    -- and the body's exact bytes.
    response_status   smallint CHECK (response_status BETWEEN 100 AND 599),
    response_headers  jsonb,
    response_body     bytea,
    completed_at      timestamptz,
    PRIMARY KEY (api_key_id, idempotency_key),
    CONSTRAINT idempotency_keys_in_flight_or_stored CHECK (
        (response_status IS NULL AND lease_expires_at IS NOT NULL
            AND response_headers IS NULL AND response_body IS NULL AND completed_at IS NULL)
        OR (response_status IS NOT NULL AND lease_expires_at IS NULL
            AND response_headers IS NOT NULL AND response_body IS NOT NULL AND completed_at IS NOT NULL))
);
-- Pruning finds expired rows oldest first.
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
