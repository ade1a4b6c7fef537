-- own lock + UPDATE, advisory: each client its own key and row.
\set id :client_id + 1
BEGIN;
SELECT pg_advisory_xact_lock(:id);
UPDATE ctr SET v = v + 1 WHERE id = :id;
COMMIT;
