-- A synthetic history of exports, for tests and `make bench-dashboard`: $4 exports created
-- evenly from $2 to $3 days ago, requested by the keys $1 in turn, over $5 accounts. Statuses as
-- a service's history has them: ~3 % FAILED, ~1 % CANCELLED, COMPLETED ones older than 30 days
-- EXPIRED, and those of the last two minutes PENDING or PROCESSING; waits of up to 2 s and runs
-- from 0.3 s to a minute, skewed short. Every row goes through the same INSERT, so through the
-- same triggers, as the service's own.
INSERT INTO exports (id, request_hash, api_key_id, account_id, table_name, date_from, date_to,
                      format, status, file_key, file_size, row_count, rows_exported, sha256,
                      error_code, created_at, snapshot_at, started_at, completed_at, expires_at)
SELECT gen_random_uuid(), sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
       ($1::uuid[])[1 + g % cardinality($1::uuid[])],
       'ACC-' || lpad(((g * 7919) % $5)::text, 5, '0'), 'bank_transactions',
       date_trunc('month', created)::date - 31, date_trunc('month', created)::date - 1, 'csv',
       status,
       CASE WHEN status = 'COMPLETED' THEN 'exports/' || g END,
       CASE WHEN status IN ('COMPLETED', 'EXPIRED') THEN row_count * 118 END,
       CASE WHEN status IN ('COMPLETED', 'EXPIRED') THEN row_count END,
       CASE WHEN status IN ('COMPLETED', 'EXPIRED', 'PROCESSING') THEN row_count ELSE 0 END,
       CASE WHEN status IN ('COMPLETED', 'EXPIRED') THEN encode(sha256(convert_to(g::text, 'UTF8')), 'hex') END,
       CASE status WHEN 'FAILED' THEN 'source_unavailable' WHEN 'CANCELLED' THEN 'cancelled' END,
       created,
       CASE WHEN status <> 'PENDING' THEN created + waited END,
       CASE WHEN status <> 'PENDING' THEN created + waited END,
       CASE WHEN status NOT IN ('PENDING', 'PROCESSING') THEN created + waited + took END,
       CASE WHEN status IN ('COMPLETED', 'EXPIRED') THEN created + waited + took + interval '30 days' END
FROM (
    SELECT g, created, row_count, waited, took,
           CASE WHEN created > now() - interval '2 minutes' AND g % 2 = 0 THEN 'PENDING'
                WHEN created > now() - interval '2 minutes' THEN 'PROCESSING'
                WHEN g % 100 < 3 THEN 'FAILED'
                WHEN g % 100 = 3 THEN 'CANCELLED'
                WHEN created < now() - interval '30 days' THEN 'EXPIRED'
                ELSE 'COMPLETED' END AS status
    FROM (
        SELECT g,
               now() - make_interval(secs => 86400 * ($2::float8 + ($3::float8 - $2::float8) * (g - 1)::float8 / $4)) AS created,
               (50 + 40000 * random() ^ 3)::bigint AS row_count,
               make_interval(secs => 2 * random()) AS waited,
               make_interval(secs => 0.3 + 60 * random() ^ 4) AS took
        FROM generate_series(1, $4::bigint) AS g
    ) timed
) made
