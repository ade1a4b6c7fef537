--
-- The SQL surface of lockfence: acquire, renew, is_held, release, the view.
--
-- Tokens differ from run to run, so results compare them instead of
-- printing them.
--

-- Take a lock with a lease and a wait timeout; the result is its fence token.
SELECT lockfence.acquire('order:42', lease => '10 s', timeout => '2 s') AS t1 \gset
SELECT :t1 > 0 AS token_is_positive;

SELECT name, token = :t1 AS token_matches, holder_pid = pg_backend_pid() AS held_here,
       session_bound, expires_at - acquired_at AS lease, waiters
FROM lockfence.locks;

SELECT lockfence.is_held('order:42', :t1) AS held;

-- Renewal counts the new lease from now.
SELECT lockfence.renew('order:42', :t1, '1 h') AS renewed;
SELECT expires_at > now() + interval '59 min' AS lease_extended
FROM lockfence.locks WHERE name = 'order:42';
-- Without a lease argument, renew uses lockfence.default_lease.
SET lockfence.default_lease = '30 s';
SELECT lockfence.renew('order:42', :t1) AS renewed;
SELECT expires_at < now() + interval '31 s' AS default_lease_used
FROM lockfence.locks WHERE name = 'order:42';

-- A plain lease belongs to its token, not to the session that took it: this
-- session waits for it like any other (as a pooled client whose statement
-- lands on this server connection does), here until its timeout.
SELECT waits AS waits0, wait_timeouts AS timeouts0 FROM lockfence.stats \gset
SELECT lockfence.try_acquire('order:42') IS NULL AS try_is_null;
SELECT state, message FROM public.error_of($$SELECT lockfence.acquire('order:42', timeout => '20 ms')$$);
SELECT waits - :waits0 AS waited, wait_timeouts - :timeouts0 AS timed_out FROM lockfence.stats;
-- A session lease or transaction lock of its own ends only with this session
-- or transaction, and a lease this transaction pinned only when it ends:
-- acquire refuses those at once, even without a timeout, and queues nothing.
SELECT lockfence.acquire_session('own:session', '1 h') AS ts \gset
SELECT * FROM public.error_of($$SELECT lockfence.acquire('own:session', timeout => '0')$$);
SELECT lockfence.try_acquire('own:session') IS NULL AS try_is_null;
SELECT lockfence.release('own:session', :ts) AS released;
BEGIN;
SELECT lockfence.acquire_xact('own:xact') IS NOT NULL AS xact_lock;
SELECT * FROM public.error_of($$SELECT lockfence.acquire_xact('own:xact', timeout => '0')$$);
SELECT * FROM public.error_of($$SELECT lockfence.acquire('own:xact', timeout => '0')$$);
COMMIT;
BEGIN;
SELECT lockfence.pin('order:42', :t1) AS pinned;
SELECT * FROM public.error_of($$SELECT lockfence.acquire('order:42', timeout => '0')$$);
COMMIT;
SELECT waits - :waits0 AS waited FROM lockfence.stats;

-- A wrong token neither releases nor renews.
SELECT lockfence.release('order:42', :t1 + 1) AS released_with_wrong_token;
SELECT lockfence.renew('order:42', :t1 + 1, '1 s') AS renewed_with_wrong_token;
SELECT lockfence.is_held('order:42', :t1 + 1) AS held_with_wrong_token;
SELECT lockfence.is_held('order:42', :t1) AS still_held;

-- Release with the right token frees it; a second release returns false.
SELECT lockfence.release('order:42', :t1) AS released;
SELECT lockfence.release('order:42', :t1) AS released_again;
SELECT lockfence.is_held('order:42', :t1) AS held_after_release;
SELECT count(*) AS locks_left FROM lockfence.locks;

-- Every grant gets a larger token, whatever the lock.
SELECT lockfence.try_acquire('order:42', '10 s') AS t2 \gset
SELECT lockfence.acquire('order:43', '10 s') AS t3 \gset
SELECT lockfence.acquire('order:44', '10 s') AS t4 \gset
SELECT :t2 > :t1 AND :t3 > :t2 AND :t4 > :t3 AS strictly_increasing;
SELECT lockfence.release('order:42', :t2), lockfence.release('order:43', :t3),
       lockfence.release('order:44', :t4);

-- A lease that ran out is lost: no renew, no release, not shown, and the
-- next holder gets a larger token.
SELECT lockfence.acquire('short', lease => '50 ms') AS t5 \gset
SELECT pg_sleep(0.2);
SELECT lockfence.is_held('short', :t5) AS held_after_expiry;
SELECT lockfence.renew('short', :t5, '10 s') AS renewed_after_expiry;
SELECT lockfence.release('short', :t5) AS released_after_expiry;
SELECT count(*) AS shown FROM lockfence.locks WHERE name = 'short';
SELECT lockfence.try_acquire('short', '10 s') AS t6 \gset
SELECT :t6 > :t5 AS takeover_token_is_larger;
SELECT lockfence.release('short', :t6);

-- Without a lease argument, acquire uses lockfence.default_lease.
SET lockfence.default_lease = '5 s';
SELECT lockfence.acquire('defaulted') AS t7 \gset
SELECT expires_at - acquired_at AS lease FROM lockfence.locks WHERE name = 'defaulted';
SELECT lockfence.release('defaulted', :t7);
RESET lockfence.default_lease;

-- Session-bound locks are marked in the view.
SELECT lockfence.acquire_session('job:nightly', '1 min') AS t8 \gset
SELECT lockfence.try_acquire_session('job:hourly') AS t8b \gset
SELECT lockfence.try_acquire_session('job:hourly') IS NULL AS busy_try_is_null;
SELECT name, session_bound, expires_at - acquired_at AS lease
FROM lockfence.locks ORDER BY name;
SELECT lockfence.release('job:nightly', :t8) AS released;
SELECT lockfence.release('job:hourly', :t8b) AS released;

-- Names are bytes: multibyte names work, and 200 bytes is the longest.
SELECT lockfence.acquire('commande:é€𝄞', '10 s') AS t9 \gset
SELECT name, octet_length(name) FROM lockfence.locks;
SELECT lockfence.release('commande:é€𝄞', :t9);
SELECT lockfence.acquire(repeat('x', 200), '10 s') AS t10 \gset
SELECT octet_length(name) FROM lockfence.locks;
SELECT lockfence.release(repeat('x', 200), :t10);

-- A lease is owned by its token: another connection can renew and release
-- it, and it outlives the connection that took it.
SELECT lockfence.acquire('pooled', '1 min') AS t11 \gset
\c
SELECT lockfence.is_held('pooled', :t11) AS held_after_reconnect;
SELECT lockfence.renew('pooled', :t11, '2 min') AS renewed_elsewhere;
SELECT lockfence.release('pooled', :t11) AS released_elsewhere;

-- A session-bound lock ends with its session.
SELECT lockfence.acquire_session('bound', '1 min') AS t12,
       lockfence.try_acquire_session('bound-try', '1 min') AS t12b,
       pg_backend_pid() AS bound_pid \gset
\c
SELECT public.wait_for_exit(:bound_pid) AS old_backend_gone;
SELECT count(*) AS bound_locks_left FROM lockfence.locks
WHERE name IN ('bound', 'bound-try');
SELECT lockfence.is_held('bound', :t12) AS held_after_disconnect,
       lockfence.is_held('bound-try', :t12b) AS try_held_after_disconnect;

-- Names are scoped per database: the same name in another database is
-- another lock, and the view shows only the current database's locks.
SELECT lockfence.acquire('shared-name', '1 min') AS t13 \gset
\set first_db :DBNAME
CREATE DATABASE regress_lockfence_other;
\c regress_lockfence_other
CREATE EXTENSION lockfence;
SELECT count(*) AS visible_from_other_db FROM lockfence.locks;
SELECT lockfence.try_acquire('shared-name', '1 min') AS t14 \gset
SELECT :t14 > :t13 AS other_db_got_its_own_lock;
SELECT lockfence.is_held('shared-name', :t13) AS first_db_token_here;
SELECT lockfence.release('shared-name', :t14);
\c :first_db
DROP DATABASE regress_lockfence_other;
SELECT lockfence.is_held('shared-name', :t13) AS still_held_in_first_db;
SELECT lockfence.release('shared-name', :t13);

-- force_release: superusers and members of lockfence_admin only.
SELECT lockfence.acquire('stuck', '1 h') AS t15 \gset
CREATE ROLE regress_lockfence_user;
SET ROLE regress_lockfence_user;
SELECT * FROM public.error_of($$SELECT lockfence.force_release('stuck')$$);
RESET ROLE;
GRANT lockfence_admin TO regress_lockfence_user;
SET ROLE regress_lockfence_user;
SELECT lockfence.force_release('stuck') AS forced;
SELECT lockfence.force_release('stuck') AS forced_again;
RESET ROLE;
SELECT lockfence.is_held('stuck', :t15) AS held_after_force;
SELECT lockfence.release('stuck', :t15) AS released_after_force;
REVOKE lockfence_admin FROM regress_lockfence_user;
DROP ROLE regress_lockfence_user;

SELECT count(*) AS locks_left FROM lockfence.locks;
