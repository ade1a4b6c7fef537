-- hot lock + UPDATE, advisory: the same with pg_advisory_xact_lock in one transaction.
BEGIN;
SELECT pg_advisory_xact_lock(0);
UPDATE ctr SET v = v + 1 WHERE id = 0;
COMMIT;
