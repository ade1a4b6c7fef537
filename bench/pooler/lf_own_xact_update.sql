-- own lock + UPDATE with lockfence's transaction lock, in the advisory side's shape.
\set id :client_id + 1
BEGIN;
SELECT lockfence.acquire_xact('own:' || ':id', '60 s');
UPDATE ctr SET v = v + 1 WHERE id = :id;
COMMIT;
