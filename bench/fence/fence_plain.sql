-- Fence trigger benchmark, table bench.acct_plain: no trigger.
-- Row id's token is tokbase + id (checked at setup), the same in all five tables.
\set id random(1, :nrows)
\set tok :tokbase + :id
UPDATE bench.acct_plain SET balance = balance + 1, fence_token = :tok WHERE id = :id;
