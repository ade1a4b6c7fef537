-- control, no lock: the lease's shape (three transactions: acquire, write, release),
-- which pgbouncer serves with a server connection each.
\set id :client_id + 1
SELECT 1;
UPDATE ctr SET v = v + 1 WHERE id = :id;
SELECT 1;
