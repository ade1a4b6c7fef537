-- Baseline 1, two round trips: session advisory lock, then unlock.
\set k random(1, :nkeys)
SELECT pg_advisory_lock(:k);
SELECT pg_advisory_unlock(:k);
