-- hot lock, advisory: pg_advisory_xact_lock in a transaction of its own.
BEGIN;
SELECT pg_advisory_xact_lock(0);
COMMIT;
