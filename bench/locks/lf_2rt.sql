-- lockfence, two round trips: acquire (waits at most 30 s), then release by token.
-- The lock name is the key, passed as a text parameter.
\set k random(1, :nkeys)
SELECT lockfence.acquire(:k::text, '1 min', '30 s') AS tok \gset
SELECT lockfence.release(:k::text, :tok);
