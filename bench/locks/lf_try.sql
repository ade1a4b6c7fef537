-- lockfence try_acquire, then release when it was granted (two round trips;
-- one when the lock was busy).
\set k random(1, :nkeys)
SELECT coalesce(lockfence.try_acquire('k' || :k, '1 min'), 0) AS tok \gset
\if :tok > 0
SELECT lockfence.release('k' || :k, :tok);
\endif
