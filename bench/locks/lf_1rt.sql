-- lockfence, one round trip: acquire and release in one statement.
\set k random(1, :nkeys)
SELECT lockfence.release('k' || :k, lockfence.acquire('k' || :k, '1 min', '30 s'));
