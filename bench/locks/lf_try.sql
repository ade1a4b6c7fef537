-- lockfence try_acquire, then release when it was granted (two round trips;
-- one when the lock was busy).
-- The lock name is the key, passed as a text parameter.
\set k random(1, :nkeys)
SELECT coalesce(lockfence.try_acquire(:k::text, '1 min'), 0) AS tok \gset
\if :tok > 0
SELECT lockfence.release(:k::text, :tok);
\endif
