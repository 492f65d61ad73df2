-- Download links and downloads (shared/src/downloads.rs). Both are written in batches by each API
-- process (about once a second), never on the request path.

-- Every download link the service hands out: each `GET /api/export/{id}` (and each listed
-- export) of a COMPLETED export mints one, and so does the dashboard's export page for an
-- operator. `id` is the link id a local-storage link carries (`link=` in its signed query), so
-- a download maps to its link and through it to the key or operator it was issued to; S3 links
-- are pre-signed by S3 and carry none (theirs is only this row's).
--
-- This table takes a row per status read of a completed export (thousands a second under load),
-- written in batches, so it is kept cheap to insert into (17,000 rows, measured: 45 ms like this,
-- 90 ms with a foreign key or a second index or `ON CONFLICT`):
-- - one index, the primary key `(export_id, id)`: ids are UUIDv7, ordered by the time they were
--   minted, so it lists an export's links newest first, finds a download's link, and grows at
--   its right edge per export;
-- - no foreign key on `export_id`: the batch locks the exports it counts and inserts only their
--   links, and the export pruner (`exports::prune_rows`) deletes an export's links with it.
CREATE TABLE download_links (
    export_id    uuid NOT NULL,
    id           uuid NOT NULL,
    -- Through the API or the dashboard.
    via          text NOT NULL CHECK (via IN ('api', 'dashboard')),
    -- The key it was issued to (through the API, or a break-glass dashboard session). No foreign
    -- key: the record outlives the key (the dashboard names a deleted key as such).
    api_key_id   uuid,
    -- The person it was issued to (a single sign-on dashboard session).
    operator_id  uuid,
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    backend      text NOT NULL CHECK (backend IN ('local', 's3')),
    CONSTRAINT download_links_one_holder CHECK ((api_key_id IS NULL) <> (operator_id IS NULL)),
    PRIMARY KEY (export_id, id)
);

-- Every request through the service's own file endpoint (`GET /files/…`, local storage) that a
-- valid link let through: what was sent (status, range, bytes) and to whom.
CREATE TABLE export_downloads (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    export_id    uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    -- The link used (`download_links.id`, of this export); NULL for a link minted before this
    -- migration. No foreign key: another API process may flush the link a moment after this row.
    link_id      uuid,
    -- When the request was answered.
    started_at   timestamptz NOT NULL,
    -- 200 (whole file), 206 (a range), 304 (not modified) or 416 (range not satisfiable).
    status       smallint NOT NULL CHECK (status BETWEEN 100 AND 599),
    -- The bytes a 206 sent, inclusive (`Content-Range: bytes first-last/…`); NULL otherwise.
    range_first  bigint,
    range_last   bigint,
    -- Bytes of the file handed to the connection: less than the response's length when the
    -- client went away mid-way.
    bytes_sent   bigint NOT NULL CHECK (bytes_sent >= 0),
    -- The client (as `ClientAddr` names it: behind a trusted proxy, the address it forwarded;
    -- an IPv6 client by its /64).
    client_addr  inet NOT NULL,
    CONSTRAINT export_downloads_range CHECK ((range_first IS NULL) = (range_last IS NULL)
        AND (range_first IS NULL OR range_first <= range_last))
);
CREATE INDEX export_downloads_by_export ON export_downloads (export_id, started_at DESC);

-- The counts `GET /api/export/{id}` returns, kept on the export by the same batch writes (a
-- constant default: no table rewrite). `downloads` counts responses that sent file bytes (200
-- and 206): a file fetched in four ranges counts four.
ALTER TABLE exports
    ADD COLUMN download_links_issued bigint NOT NULL DEFAULT 0,
    ADD COLUMN downloads bigint NOT NULL DEFAULT 0;
