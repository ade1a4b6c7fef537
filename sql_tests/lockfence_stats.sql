--
-- lockfence.stats counts what happens to locks (server-wide, so the test
-- compares before and after).
--
CREATE TEMP TABLE before AS SELECT * FROM lockfence.stats;

SELECT lockfence.acquire('stats:a', '1 min') AS ta \gset
SELECT lockfence.renew('stats:a', :ta, '2 min');
SELECT lockfence.try_acquire('stats:a') IS NULL AS busy;
SELECT lockfence.release('stats:a', :ta);
SELECT lockfence.acquire('stats:b', '10 ms') AS tb \gset
SELECT pg_sleep(0.05);
SELECT lockfence.renew('stats:b', :tb, '1 min') AS renewed_too_late;
SELECT lockfence.acquire('stats:c', '1 min') AS tc \gset

SELECT s.grants - b.grants AS grants,
       s.releases - b.releases AS releases,
       s.renewals - b.renewals AS renewals,
       s.expiries - b.expiries AS expiries,
       s.waits - b.waits AS waits,
       s.wait_timeouts - b.wait_timeouts AS wait_timeouts,
       s.fence_rejections_monotonic - b.fence_rejections_monotonic AS monotonic,
       s.fence_rejections_lease - b.fence_rejections_lease AS lease
FROM lockfence.stats s, before b;

-- slots: stats:c is held; the table holds lockfence.max_locks slots
SELECT slots_used, slots_used + slots_available = current_setting('lockfence.max_locks')::bigint AS adds_up
FROM lockfence.stats;
SELECT lockfence.release('stats:c', :tc);
SELECT slots_used FROM lockfence.stats;
