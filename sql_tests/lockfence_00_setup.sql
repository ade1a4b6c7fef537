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

SELECT * FROM public.error_of('SELECT 1');
SELECT * FROM public.error_of('SELECT 1/0');
