-- Fence trigger benchmark, table bench.acct_lease: lockfence.fence_check('fence_token', 'acct:', 'id'): lease mode; the token is the live lease of lock 'acct:<id>', taken at setup.
-- Row id's token is tokbase + id (checked at setup), the same in all five tables.
\set id random(1, :nrows)
\set tok :tokbase + :id
UPDATE bench.acct_lease SET balance = balance + 1, fence_token = :tok WHERE id = :id;
