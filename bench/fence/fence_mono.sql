-- Fence trigger benchmark, table bench.acct_mono: lockfence.fence_check('fence_token'): monotonic mode.
-- Row id's token is tokbase + id (checked at setup), the same in all five tables.
\set id random(1, :nrows)
\set tok :tokbase + :id
UPDATE bench.acct_mono SET balance = balance + 1, fence_token = :tok WHERE id = :id;
