-- lockfence, two round trips: acquire (waits at most 30 s), then release by token.
\set k random(1, :nkeys)
SELECT lockfence.acquire('k' || :k, '1 min', '30 s') AS tok \gset
SELECT lockfence.release('k' || :k, :tok);
