-- own lock + UPDATE, lockfence: each client its own lock and row (nobody waits).
\set id :client_id + 1
SELECT lockfence.acquire('own:' || ':id', '10 s', '60 s') AS tok \gset
UPDATE ctr SET v = v + 1 WHERE id = :id;
SELECT lockfence.release('own:' || ':id', :tok);
