-- Baseline 1, one round trip: lock and unlock in one statement (the target
-- list is evaluated left to right).
\set k random(1, :nkeys)
SELECT pg_advisory_lock(:k), pg_advisory_unlock(:k);
