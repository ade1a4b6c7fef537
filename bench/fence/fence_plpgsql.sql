-- Fence trigger benchmark, table bench.acct_plpgsql: the monotonic check written in PL/pgSQL (bench.fence_plpgsql).
-- Row id's token is tokbase + id (checked at setup), the same in all five tables.
\set id random(1, :nrows)
\set tok :tokbase + :id
UPDATE bench.acct_plpgsql SET balance = balance + 1, fence_token = :tok WHERE id = :id;
