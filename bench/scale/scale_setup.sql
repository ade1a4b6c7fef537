-- Roles and the wrapper of the scale section (bench/run.sh scale).
\set ON_ERROR_STOP on
CREATE EXTENSION lockfence;
CREATE ROLE filler;                     -- holds the table's leases
CREATE ROLE victim LOGIN;               -- the timed client
CREATE ROLE attacker LOGIN;             -- the role at its quota
GRANT ALL ON SCHEMA public TO victim, attacker;
-- Take and release a lock; a refusal (table full, role at its quota) is a
-- normal return, so that refused requests are timed too.
CREATE FUNCTION public.grant_release(name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lockfence.release(name, lockfence.try_acquire(name, '10 s'));
EXCEPTION WHEN out_of_memory OR configuration_limit_exceeded THEN
    NULL;
END $$;
