--
-- Transaction locks: held until the transaction (or subtransaction) that
-- took them ends.
--

-- A session's lockfence state lives in a memory context of its own, made
-- when it is first needed.
SELECT count(*) AS session_contexts FROM pg_backend_memory_contexts
WHERE name = 'lockfence session state';

-- Commit releases.
BEGIN;
SELECT lockfence.acquire_xact('inventory:7') AS t1 \gset
SELECT count(*) AS session_contexts FROM pg_backend_memory_contexts
WHERE name = 'lockfence session state';
SELECT name, session_bound, expires_at IS NULL AS no_lease, waiters FROM lockfence.locks;
SELECT lockfence.is_held('inventory:7', :t1) AS held;
SELECT lockfence.try_acquire_xact('inventory:7') IS NULL AS busy_for_self;
SELECT lockfence.try_acquire('inventory:7') IS NULL AS busy_for_lease;
COMMIT;
SELECT lockfence.is_held('inventory:7', :t1) AS held_after_commit;
SELECT count(*) AS locks_left FROM lockfence.locks;

-- Rollback releases too, and so does an error.
BEGIN;
SELECT lockfence.try_acquire_xact('inventory:7') AS t2 \gset
SELECT :t2 > :t1 AS larger_token;
ROLLBACK;
SELECT lockfence.is_held('inventory:7', :t2) AS held_after_rollback;
BEGIN;
SELECT lockfence.acquire_xact('inventory:7', timeout => '1 s') AS t3 \gset
SELECT 1 / 0;
ROLLBACK;
SELECT lockfence.is_held('inventory:7', :t3) AS held_after_error;

-- Outside an explicit transaction block the lock ends with the statement.
SELECT lockfence.acquire_xact('inventory:7') AS t4 \gset
SELECT lockfence.is_held('inventory:7', :t4) AS held_after_statement;

-- Transaction locks have no lease and are not released by token.
BEGIN;
SELECT lockfence.acquire_xact('inventory:7') AS t5 \gset
SELECT * FROM public.error_of(format('SELECT lockfence.release(%L, %s)', 'inventory:7', :t5));
SELECT * FROM public.error_of(format('SELECT lockfence.renew(%L, %s, %L)', 'inventory:7', :t5, '1 s'));
SELECT lockfence.is_held('inventory:7', :t5) AS still_held;
COMMIT;

-- Subtransactions: rolled back, the lock goes; released, it stays with the
-- transaction.
BEGIN;
SAVEPOINT a;
SELECT lockfence.acquire_xact('sub:1') AS t6 \gset
ROLLBACK TO SAVEPOINT a;
SELECT lockfence.is_held('sub:1', :t6) AS held_after_rollback_to;
SAVEPOINT b;
SELECT lockfence.acquire_xact('sub:2') AS t7 \gset
RELEASE SAVEPOINT b;
SELECT lockfence.is_held('sub:2', :t7) AS held_after_release_savepoint;
SAVEPOINT c;
SELECT lockfence.acquire('lease-in-sub', '1 min') AS t8 \gset
ROLLBACK TO SAVEPOINT c;
SELECT lockfence.is_held('lease-in-sub', :t8) AS lease_survives_rollback_to;
COMMIT;
SELECT lockfence.is_held('sub:2', :t7) AS held_after_commit;
SELECT lockfence.release('lease-in-sub', :t8) AS released;

-- A PL/pgSQL exception block that catches an error releases the locks taken
-- inside it.
DO $$
DECLARE
    t bigint;
BEGIN
    BEGIN
        t := lockfence.acquire_xact('in-exception-block');
        RAISE EXCEPTION 'boom';
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'caught: %', SQLERRM;
    END;
    t := lockfence.try_acquire('in-exception-block', '1 s');
    RAISE NOTICE 'free again: %', t IS NOT NULL;
    PERFORM lockfence.release('in-exception-block', t);
END
$$;

-- Session-bound leases survive the transaction that took them.
BEGIN;
SELECT lockfence.acquire_session('session-lock', '1 min') AS t9 \gset
ROLLBACK;
SELECT lockfence.is_held('session-lock', :t9) AS session_lock_survives_rollback;
SELECT lockfence.release('session-lock', :t9) AS released;

-- A session's first lockfence call sets up the clean-up at transaction end
-- (sessions that never call lockfence run none of it at commit).  A first
-- call inside a subtransaction, or in a transaction that aborts, is undone
-- all the same; so is a first pin.
\c
BEGIN;
SAVEPOINT first_call;
SELECT lockfence.acquire_xact('first-call-in-sub') > 0 AS granted;
ROLLBACK TO SAVEPOINT first_call;
SELECT count(*) AS held_after_rollback_to FROM lockfence.locks WHERE name = 'first-call-in-sub';
COMMIT;
\c
BEGIN;
SELECT lockfence.acquire_xact('first-call-abort') > 0 AS granted;
ROLLBACK;
SELECT count(*) AS held_after_rollback FROM lockfence.locks WHERE name = 'first-call-abort';
SELECT lockfence.acquire('first-pin', '1 min') AS t11 \gset
\c
BEGIN;
SELECT lockfence.pin('first-pin', :t11) AS pinned;
SELECT pins AS pins_in_xact FROM lockfence.locks WHERE name = 'first-pin';
COMMIT;
SELECT pins AS pins_after_commit FROM lockfence.locks WHERE name = 'first-pin';
SELECT lockfence.release('first-pin', :t11) AS released;

-- Two-phase commit cannot carry transaction locks.
BEGIN;
SELECT lockfence.acquire_xact('two-phase') AS t10 \gset
PREPARE TRANSACTION 'regress_lockfence';
SELECT lockfence.is_held('two-phase', :t10) AS held_after_failed_prepare;
SELECT count(*) AS prepared FROM pg_prepared_xacts;

SELECT count(*) AS locks_left FROM lockfence.locks;
