-- Start of the fence section (psql variable nrows).  One long lease per
-- row: lock 'acct:<id>' for 2 hours, its token stored in the row, so every
-- benchmark UPDATE of acct_lease carries the live token of its row's lock.
-- The leases are taken in id order by one statement, so the tokens are
-- consecutive: token = tokbase + id, which the pgbench scripts compute.
-- The other four tables get the same tokens.
\set ON_ERROR_STOP on
ALTER TABLE bench.acct_lease DISABLE TRIGGER acct_lease_fence;
INSERT INTO bench.acct_lease
    SELECT i, 0, lockfence.acquire('acct:' || i, '2 h', '10 s')
    FROM generate_series(1, :nrows) i;
ALTER TABLE bench.acct_lease ENABLE TRIGGER acct_lease_fence;
INSERT INTO bench.acct_plain SELECT * FROM bench.acct_lease;
INSERT INTO bench.acct_mono SELECT * FROM bench.acct_lease;
INSERT INTO bench.acct_plpgsql SELECT * FROM bench.acct_lease;
INSERT INTO bench.acct_noop SELECT * FROM bench.acct_lease;
VACUUM ANALYZE bench.acct_plain, bench.acct_mono, bench.acct_lease, bench.acct_plpgsql,
    bench.acct_noop;
SELECT min(fence_token - id) AS tokbase, max(fence_token - id) AS tokbase_max,
       count(*) AS nleases
FROM bench.acct_lease \gset
\echo tokbase :tokbase :tokbase_max :nleases
