-- Deterministic demo transactions: 5 accounts, 100,000 rows over 2024-01-01 .. 2025-12-31,
-- including awkward text (commas, quotes, CR/LF, tabs, unicode incl. 4-byte, formula-like
-- leading characters, NULL and empty strings). Re-running replaces the table.
CREATE DATABASE IF NOT EXISTS statements_demo CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
USE statements_demo;

DROP TABLE IF EXISTS bank_transactions;
CREATE TABLE bank_transactions (
    id           BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    account_id   VARCHAR(32)     NOT NULL,
    txn_date     DATE            NOT NULL,
    posted_at    DATETIME(6)     NOT NULL,
    description  VARCHAR(255)    NULL,
    counterparty VARCHAR(255)    NULL,
    amount       DECIMAL(18, 2)  NOT NULL,
    currency     CHAR(3)         NOT NULL,
    reference    VARCHAR(64)     NULL,
    KEY account_date (account_id, txn_date, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO bank_transactions
SELECT n + 1,
       CONCAT('ACC-', 1001 + (n % 5)),
       DATE_ADD('2024-01-01', INTERVAL (n DIV 5) % 731 DAY),
       DATE_ADD(DATE_ADD('2024-01-01', INTERVAL (n DIV 5) % 731 DAY),
                INTERVAL ((n * 7919 * 104729) % 86400000000) MICROSECOND),
       CASE (n DIV 5) % 10
           WHEN 0 THEN CONCAT('Card payment ', n)
           WHEN 1 THEN 'Coffee, croissant and juice'
           WHEN 2 THEN 'Refund for "damaged" item'
           WHEN 3 THEN CONCAT('Line one', CHAR(13), CHAR(10), 'line two')
           WHEN 4 THEN 'Café Zürich – naïve façade 日本 💶🚀'
           WHEN 5 THEN '=HYPERLINK("http://example.com")'
           WHEN 6 THEN ''
           WHEN 7 THEN NULL
           WHEN 8 THEN CONCAT('tab', CHAR(9), 'separated\\backslash')
           ELSE CONCAT('+', n, ' @mention -minus')
       END,
       CASE n % 4
           WHEN 0 THEN 'ACME Corp.'
           WHEN 1 THEN 'O''Brien & Sons, Ltd'
           WHEN 2 THEN NULL
           ELSE 'Ελληνική Τράπεζα'
       END,
       CAST(((n * 7919) % 2000001 - 1000000) / 100 AS DECIMAL(18, 2)),
       CASE n % 3 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' ELSE 'GBP' END,
       IF(n % 6 = 0, NULL, CONCAT('REF-', LPAD(n, 8, '0')))
FROM (
    SELECT a.d + 10 * b.d + 100 * c.d + 1000 * d.d + 10000 * e.d AS n
    FROM (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a,
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) b,
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) c,
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d,
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) e
) numbers;
