--
-- A full lock table: the test server has lockfence.max_locks = 64.
--
SHOW lockfence.max_locks;
SELECT count(*) AS locks_held FROM lockfence.locks;

-- Fill every slot.
SELECT count(lockfence.try_acquire('slot:' || i, '1 h')) AS taken
FROM generate_series(1, 64) AS i;

-- One more fails with 53200 and names the setting; nothing is evicted.
SELECT * FROM public.error_of($$SELECT lockfence.try_acquire('one-too-many', '1 h')$$);
SELECT lockfence.try_acquire('one-too-many', '1 h');
SELECT lockfence.acquire_xact('one-too-many');
SELECT count(*) AS locks_held FROM lockfence.locks;

-- A freed slot is reusable.
SELECT lockfence.release('slot:1', token) AS released
FROM lockfence.locks WHERE name = 'slot:1';
SELECT lockfence.try_acquire('one-too-many', '1 h') IS NOT NULL AS took_freed_slot;

-- Expired leases are reclaimed when the table is full.
SELECT count(lockfence.force_release(name)) FROM lockfence.locks;
SELECT count(lockfence.try_acquire('short:' || i, '100 ms')) AS taken
FROM generate_series(1, 64) AS i;
SELECT pg_sleep(0.3);
SELECT count(lockfence.try_acquire('after-expiry:' || i, '1 h')) AS taken
FROM generate_series(1, 64) AS i;
SELECT count(*) AS locks_held FROM lockfence.locks;

SELECT count(lockfence.force_release(name)) AS cleaned FROM lockfence.locks;
