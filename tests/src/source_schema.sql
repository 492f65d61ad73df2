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
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
