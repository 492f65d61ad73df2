-- What an export's snapshot was taken against, and exports whose file disappeared.
--
-- `snapshot_lag_seconds`: the source replica's lag behind its primary when the snapshot was
-- taken (NULL: not checked, SOURCE_MAX_LAG_SECS unset). `snapshot_position`: the source's
-- replication position read inside the snapshot (@@gtid_current_pos on MariaDB,
-- @@gtid_executed on MySQL; NULL when the source has none).
-- `file_lost_at`: when the API found a COMPLETED export's object missing from storage (deleted
-- by hand, a bucket lifecycle rule); such an export is EXPIRED and answers 410 Gone.
ALTER TABLE exports
    ADD COLUMN snapshot_lag_seconds bigint,
    ADD COLUMN snapshot_position    text,
    ADD COLUMN file_lost_at         timestamptz;
