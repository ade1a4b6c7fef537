--
-- Helpers for the other test files (they run in this order, in one database).
--

-- Report an error's SQLSTATE and texts as a row instead of failing, so that
-- the expected output shows the SQLSTATE too.
CREATE FUNCTION public.error_of(sql text)
RETURNS TABLE (state text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    state := 'no error';
    RETURN NEXT;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END
$$;

-- Wait until a backend has exited, for tests of what happens at exit (the
-- exit callbacks have run once it is gone from pg_stat_activity).
CREATE FUNCTION public.wait_for_exit(old_pid int) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 600 LOOP
        PERFORM pg_stat_clear_snapshot();   -- else the first look is cached
        IF NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = old_pid) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN false;
END
$$;

SELECT * FROM public.error_of('SELECT 1');
SELECT * FROM public.error_of('SELECT 1/0');
