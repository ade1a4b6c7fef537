-- lockfence, one round trip: acquire and release in one statement.  The
-- lock name is the key, passed as a text parameter (as applications pass
-- names; the advisory scripts pass the key as a bigint parameter).
\set k random(1, :nkeys)
SELECT lockfence.release(:k::text, lockfence.acquire(:k::text, '1 min', '30 s'));
