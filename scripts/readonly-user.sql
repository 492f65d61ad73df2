-- The service reads the transactions database as a user with SELECT only.
CREATE USER IF NOT EXISTS 'statements_ro'@'%' IDENTIFIED BY 'statements_ro';
GRANT SELECT ON statements_demo.* TO 'statements_ro'@'%';
