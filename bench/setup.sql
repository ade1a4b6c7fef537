-- Schema of the benchmark database (run once, by bench/run.sh, with psql
-- variables nkeys and nrows).
\set ON_ERROR_STOP on
CREATE EXTENSION lockfence;
CREATE EXTENSION dblink;		-- drives the waiting session of the handoff test
CREATE SCHEMA bench;

-- Baseline 2: table-emulated leases.  leases_del starts empty (its rows come
-- and go); leases_upd holds every key from the start, expired, as a table
-- whose leases are released by UPDATE reaches that state anyway.
CREATE TABLE bench.leases_del (name text PRIMARY KEY, token bigint NOT NULL,
                               expires_at timestamptz NOT NULL);
CREATE TABLE bench.leases_upd (name text PRIMARY KEY, token bigint NOT NULL,
                               expires_at timestamptz NOT NULL);
INSERT INTO bench.leases_upd
    SELECT i::text, 1, '-infinity' FROM generate_series(1, :nkeys) i;

-- The fence trigger: five identical tables, filled at the start of the
-- fence section (bench/fence_setup.sql).  fillfactor 80 leaves room for HOT
-- updates in all of them alike.
CREATE TABLE bench.acct_plain (id int PRIMARY KEY, balance bigint NOT NULL,
                               fence_token bigint) WITH (fillfactor = 80);
CREATE TABLE bench.acct_mono (LIKE bench.acct_plain INCLUDING ALL) WITH (fillfactor = 80);
CREATE TABLE bench.acct_lease (LIKE bench.acct_plain INCLUDING ALL) WITH (fillfactor = 80);
CREATE TABLE bench.acct_plpgsql (LIKE bench.acct_plain INCLUDING ALL) WITH (fillfactor = 80);
CREATE TABLE bench.acct_noop (LIKE bench.acct_plain INCLUDING ALL) WITH (fillfactor = 80);

-- What an application would write without lockfence: fence_check's
-- monotonic mode in PL/pgSQL.
CREATE FUNCTION bench.fence_plpgsql() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.fence_token IS NULL THEN
        RAISE EXCEPTION 'missing fence token' USING ERRCODE = 'LF001';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.fence_token < OLD.fence_token THEN
        RAISE EXCEPTION 'stale fence token % < %', NEW.fence_token, OLD.fence_token
            USING ERRCODE = 'LF001';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER acct_mono_fence BEFORE INSERT OR UPDATE ON bench.acct_mono
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token');
CREATE TRIGGER acct_lease_fence BEFORE INSERT OR UPDATE ON bench.acct_lease
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'acct:', 'id');
CREATE TRIGGER acct_plpgsql_fence BEFORE INSERT OR UPDATE ON bench.acct_plpgsql
    FOR EACH ROW EXECUTE FUNCTION bench.fence_plpgsql();
-- The price of any BEFORE ROW UPDATE trigger, whatever it does: PostgreSQL's
-- built-in C trigger that only compares the old and new row (they always
-- differ here, so every UPDATE goes ahead).
CREATE TRIGGER acct_noop_trigger BEFORE UPDATE ON bench.acct_noop
    FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger();

-- Handoff latency on one contended lock, lockfence and advisory alternately
-- (A B A B ...).  This session holds the lock; a second session, driven
-- through dblink, blocks in acquire.  Once pg_stat_activity shows it
-- sleeping, this session reads clock_timestamp() and releases at once; the
-- waiter reads clock_timestamp() as soon as its acquire returns.  Both
-- clocks are the same system clock.  Returns one row per handoff.
CREATE FUNCTION bench.handoff(iters int, conninfo text)
RETURNS TABLE (kind text, iter int, us double precision)
LANGUAGE plpgsql AS $$
DECLARE
    wpid int;
    tok bigint;
    wtok bigint;
    t_release timestamptz;
    t_granted timestamptz;
    polls int;
BEGIN
    PERFORM dblink_connect('bench_waiter', conninfo);
    SELECT p INTO wpid FROM dblink('bench_waiter', 'SELECT pg_backend_pid()') AS r(p int);
    FOR i IN 1 .. 2 * iters LOOP
        kind := CASE WHEN i % 2 = 1 THEN 'lockfence' ELSE 'advisory' END;
        iter := (i + 1) / 2;
        IF kind = 'lockfence' THEN
            tok := lockfence.acquire('bench:handoff', '1 min', '10 s');
            PERFORM dblink_send_query('bench_waiter',
                'SELECT t, clock_timestamp() FROM (SELECT lockfence.acquire(''bench:handoff'', ''1 min'', ''10 s'') AS t OFFSET 0) s');
        ELSE
            PERFORM pg_advisory_lock(4242);
            PERFORM dblink_send_query('bench_waiter',
                'SELECT 0::bigint, clock_timestamp() FROM (SELECT pg_advisory_lock(4242) OFFSET 0) s');
        END IF;

        -- wait until the waiter sleeps in its lock wait
        polls := 0;
        LOOP
            PERFORM pg_stat_clear_snapshot();
            EXIT WHEN EXISTS (SELECT FROM pg_stat_activity
                              WHERE pid = wpid
                                AND wait_event_type = CASE kind WHEN 'lockfence' THEN 'Extension' ELSE 'Lock' END);
            polls := polls + 1;
            IF polls > 5000 THEN
                RAISE EXCEPTION 'the waiting session never blocked (%)', kind;
            END IF;
            PERFORM pg_sleep(0.001);
        END LOOP;
        PERFORM pg_sleep(0.002);

        IF kind = 'lockfence' THEN
            t_release := clock_timestamp();
            PERFORM lockfence.release('bench:handoff', tok);
        ELSE
            t_release := clock_timestamp();
            PERFORM pg_advisory_unlock(4242);
        END IF;
        SELECT r.t, r.ts INTO wtok, t_granted
            FROM dblink_get_result('bench_waiter') AS r(t bigint, ts timestamptz);
        PERFORM FROM dblink_get_result('bench_waiter') AS r(t bigint, ts timestamptz);

        IF kind = 'lockfence' THEN
            IF wtok IS NULL OR wtok <= tok THEN
                RAISE EXCEPTION 'the waiter got token %, not one above %', wtok, tok;
            END IF;
            IF NOT lockfence.release('bench:handoff', wtok) THEN
                RAISE EXCEPTION 'the waiter''s token % did not hold the lock', wtok;
            END IF;
        ELSE
            PERFORM FROM dblink('bench_waiter', 'SELECT pg_advisory_unlock(4242)') AS r(ok boolean);
        END IF;
        us := extract(epoch FROM t_granted - t_release) * 1e6;
        RETURN NEXT;
    END LOOP;
    PERFORM dblink_disconnect('bench_waiter');
END
$$;
