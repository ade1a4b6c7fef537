-- Fence trigger benchmark, table bench.acct_noop: suppress_redundant_updates_trigger(), a built-in C BEFORE ROW trigger that does next to nothing: the price of any BEFORE ROW UPDATE trigger.
-- Row id's token is tokbase + id (checked at setup), the same in all five tables.
\set id random(1, :nrows)
\set tok :tokbase + :id
UPDATE bench.acct_noop SET balance = balance + 1, fence_token = :tok WHERE id = :id;
