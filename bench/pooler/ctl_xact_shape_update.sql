-- control, no lock: the advisory side's shape (one transaction).
\set id :client_id + 1
BEGIN;
SELECT 1;
UPDATE ctr SET v = v + 1 WHERE id = :id;
COMMIT;
