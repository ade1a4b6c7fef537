--
-- Bad arguments get a clear error with the right SQLSTATE and change nothing.
--

-- NULL arguments: 22004
SELECT * FROM public.error_of($$SELECT lockfence.acquire(NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.try_acquire(NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire_xact(NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.try_acquire_xact(NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.release(NULL, 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.renew(NULL, 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.is_held(NULL, 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.force_release(NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.release('a', NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.renew('a', NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.is_held('a', NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire_session(NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.try_acquire_session(NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire_session('a', lease => '-1 s')$$);
SELECT * FROM public.error_of($$SELECT lockfence.try_acquire_session('a', lease => '366 days')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire_session('a', timeout => '-1 s')$$);

SELECT * FROM public.error_of($$SELECT lockfence.pin(NULL, 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.pin('a', NULL)$$);
-- a NULL lease or timeout is not an error: it means the setting's default
SELECT * FROM public.error_of($$SELECT lockfence.acquire_xact('a', NULL)$$);

-- Empty and overlong names: 22023
SELECT * FROM public.error_of($$SELECT lockfence.acquire('')$$);
SELECT * FROM public.error_of($$SELECT lockfence.try_acquire_xact('')$$);
SELECT * FROM public.error_of($$SELECT lockfence.release('', 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire(repeat('x', 201))$$);
-- 67 three-byte characters are 201 bytes
SELECT * FROM public.error_of($$SELECT lockfence.try_acquire(repeat('€', 67))$$);
SELECT * FROM public.error_of($$SELECT lockfence.is_held(repeat('x', 10000), 1)$$);

-- Invalid encodings never reach lockfence: PostgreSQL rejects them (22021).
SELECT * FROM public.error_of($$SELECT lockfence.acquire(E'bad\xff')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire(convert_from('\xc3'::bytea, 'UTF8'))$$);
-- A multibyte name of exactly 200 bytes is fine.
SELECT lockfence.try_acquire(repeat('é', 100), '1 s') IS NOT NULL AS took_200_bytes;
SELECT lockfence.force_release(repeat('é', 100)) AS released;

-- Leases: zero, negative, absurd: 22023
SELECT * FROM public.error_of($$SELECT lockfence.acquire('a', lease => '0')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire('a', lease => '-1 s')$$);
SELECT * FROM public.error_of($$SELECT lockfence.try_acquire('a', lease => '1 day -25 hours')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire('a', lease => '366 days')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire('a', lease => '13 months')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire('a', lease => '1000000 years')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire('a', lease => '-178000000 years')$$);
SELECT * FROM public.error_of($$SELECT lockfence.renew('a', 1, '-1 s')$$);
SELECT * FROM public.error_of($$SELECT lockfence.renew('a', 1, '400 days')$$);
-- 'infinity' is not an interval in PostgreSQL 15 (22007); where it is, it is
-- out of range like any absurd lease.
SELECT state = ANY ('{22007,22023}') AS rejected
FROM public.error_of($$SELECT lockfence.acquire('a', lease => 'infinity')$$);
SELECT state = ANY ('{22007,22023}') AS rejected
FROM public.error_of($$SELECT lockfence.acquire('a', timeout => '-infinity')$$);

-- Timeouts: negative or absurd: 22023
SELECT * FROM public.error_of($$SELECT lockfence.acquire('a', timeout => '-1 s')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire('a', timeout => '1000000 years')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire_xact('a', timeout => '-1 ms')$$);

-- Tokens that lockfence never hands out: 22023
SELECT * FROM public.error_of($$SELECT lockfence.release('a', 0)$$);
SELECT * FROM public.error_of($$SELECT lockfence.release('a', -1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.renew('a', 0, '1 s')$$);
SELECT * FROM public.error_of($$SELECT lockfence.is_held('a', -9223372036854775808)$$);
SELECT * FROM public.error_of($$SELECT lockfence.pin('a', -1)$$);
-- the largest bigint is a well-formed token that holds nothing
SELECT * FROM public.error_of($$SELECT lockfence.pin('a', 9223372036854775807)$$);
-- A well-formed token that does not hold the lock is simply not the holder.
SELECT lockfence.release('a', 9223372036854775807) AS released,
       lockfence.renew('a', 9223372036854775807, '1 s') AS renewed,
       lockfence.is_held('a', 9223372036854775807) AS held;

-- The longest accepted values work.
SELECT lockfence.acquire('a', lease => '365 days', timeout => '365 days') AS t1 \gset
SELECT lockfence.release('a', :t1) AS released;

-- The row-lock helpers.
CREATE TABLE accounts (id int PRIMARY KEY);
INSERT INTO accounts VALUES (1);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row(NULL, 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', NULL::int)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', 1, mode => 'exclusive')$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', 1, mode => NULL)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', 1, timeout => '-1 s')$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', 1, timeout => '1000 years')$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', 'abc'::text)$$);
-- an untyped literal key needs a cast, as for any anyelement argument
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', '3')$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_rows('accounts', NULL::int[])$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_rows(NULL, ARRAY[1])$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_rows('accounts', ARRAY[1], '-1 s')$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_rows('accounts', ARRAY[1], mode => 'nope')$$);
-- NULL keys inside the array match no row
SELECT lockfence.lock_rows('accounts', ARRAY[NULL, 1]::int[]) AS locked;
DROP TABLE accounts;

-- Settings reject bad values (PostgreSQL words the range differently from
-- version to version; the SQLSTATE and the parameter are what matter).
SELECT state, message LIKE '%outside the valid range for parameter "lockfence.default_lease"%' AS range_error
FROM public.error_of('SET lockfence.default_lease = 0');
SELECT state, message LIKE '%outside the valid range for parameter "lockfence.wait_timeout"%' AS range_error
FROM public.error_of('SET lockfence.wait_timeout = -1');
SET lockfence.max_locks = 100;

-- Nothing was taken by any of the failed calls.
SELECT count(*) AS locks_held FROM lockfence.locks;
