-- Fence trigger benchmark, table bench.acct_plain2: no trigger, a second table like acct_plain (A/A control).
-- Row id's token is tokbase + id (checked at setup), the same in all six tables.
\set id random(1, :nrows)
\set tok :tokbase + :id
UPDATE bench.acct_plain2 SET balance = balance + 1, fence_token = :tok WHERE id = :id;
