-- Baseline 1, try: pg_try_advisory_lock, then unlock when it was granted.
\set k random(1, :nkeys)
SELECT pg_try_advisory_lock(:k)::int AS got \gset
\if :got
SELECT pg_advisory_unlock(:k);
\endif
