-- Bank statement formats (shared/src/formats, worker/src/jobs/bank_statement.rs).

-- The request's time zone (IANA name, canonical spelling): the period's days are days there.
-- Part of the request hash; the "books closed" reuse rule reads the snapshot's date in it.
-- Exports from before time zones were UTC statements.
ALTER TABLE exports ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
-- The statement's number in its account's sequence (bank formats only; see statement_numbers).
ALTER TABLE exports ADD COLUMN statement_number bigint;
-- What the file states, per currency: balances, their source (read or computed), totals.
-- Written with the completion (bank formats only).
ALTER TABLE exports ADD COLUMN statement jsonb;
-- A client-safe sentence about a failure's data (the currencies found, the balances that do not
-- add up, the entry whose amount does not fit): values of the client's own account, never
-- anything of the service's internals.
ALTER TABLE exports ADD COLUMN error_detail text;

-- Each account's last statement number, per exported table. An operator moving from another
-- system may seed `last_number` so numbering continues where the old one stopped.
CREATE TABLE statement_sequences (
    table_name  text   NOT NULL,
    account_id  text   NOT NULL,
    last_number bigint NOT NULL CHECK (last_number >= 0),
    PRIMARY KEY (table_name, account_id)
);

-- The number a statement (an account's period in a time zone) was given, once: every export of
-- that statement, in any format and refreshed or not, carries the same number.
CREATE TABLE statement_numbers (
    table_name  text        NOT NULL,
    account_id  text        NOT NULL,
    date_from   date        NOT NULL,
    date_to     date        NOT NULL,
    time_zone   text        NOT NULL,
    number      bigint      NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, account_id, date_from, date_to, time_zone),
    UNIQUE (table_name, account_id, number)
);
