/* lockfence 0.1: leased named locks with fence tokens */

\echo Use "CREATE EXTENSION lockfence" to load this file. \quit

/*
 * Every object is schema-qualified and every function is written in C, so
 * nothing here depends on search_path at install or call time.
 */

-- The control file names schema lockfence, which CREATE EXTENSION creates,
-- owned by the superuser who runs it, unless it exists already.  A schema
-- that someone else made first (a database owner, say) could hold objects
-- that capture calls to ours, and its owner could drop ours with it: refuse
-- to install into a schema that a superuser did not make, or that is not
-- empty.
DO $do$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace AS n
                   JOIN pg_catalog.pg_roles AS r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
                   WHERE n.nspname OPERATOR(pg_catalog.=) 'lockfence' AND r.rolsuper) THEN
        RAISE EXCEPTION 'schema "lockfence" is not owned by a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Another role created the schema before lockfence was installed; it could capture or drop lockfence''s objects.',
                  HINT = 'Drop schema lockfence and run CREATE EXTENSION lockfence again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_class
               WHERE relnamespace OPERATOR(pg_catalog.=) 'lockfence'::pg_catalog.regnamespace)
       OR EXISTS (SELECT FROM pg_catalog.pg_proc
                  WHERE pronamespace OPERATOR(pg_catalog.=) 'lockfence'::pg_catalog.regnamespace)
       OR EXISTS (SELECT FROM pg_catalog.pg_type
                  WHERE typnamespace OPERATOR(pg_catalog.=) 'lockfence'::pg_catalog.regnamespace)
       OR EXISTS (SELECT FROM pg_catalog.pg_operator
                  WHERE oprnamespace OPERATOR(pg_catalog.=) 'lockfence'::pg_catalog.regnamespace) THEN
        RAISE EXCEPTION 'schema "lockfence" is not empty'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Install lockfence into a new schema: drop or rename schema lockfence first.';
    END IF;
END
$do$;

-- Members of lockfence_admin may force-release locks, see every token and
-- act on every lease: one grantable role, as PostgreSQL's predefined roles
-- (pg_signal_backend) are, which an extension cannot create.  Roles are
-- cluster-wide, so the role is created only if another database's install
-- has not done so.  A role of that name made by someone else could log in
-- and would hand its creator those powers: it must be a plain NOLOGIN role
-- without a password.
DO $do$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_authid
                   WHERE rolname OPERATOR(pg_catalog.=) 'lockfence_admin') THEN
        CREATE ROLE lockfence_admin NOLOGIN;
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_authid
                  WHERE rolname OPERATOR(pg_catalog.=) 'lockfence_admin'
                    AND (rolcanlogin OR rolpassword IS NOT NULL OR rolsuper
                         OR rolcreaterole OR rolcreatedb OR rolreplication
                         OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role "lockfence_admin" exists and is not a plain NOLOGIN role'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Its members get power over every lockfence lock, so lockfence does not adopt a role that can log in, has a password or has attributes.',
                  HINT = 'Drop the role, or make it plain: ALTER ROLE lockfence_admin NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS PASSWORD NULL.';
    END IF;
END
$do$;

/*
 * Session-bound leases have functions of their own rather than a boolean
 * argument with a default: PostgreSQL reads a function's stored argument
 * defaults (all of them) at parse and at plan time of every call that
 * leaves one out, which costs an unprepared acquire + release about a
 * fifth of its CPU time.  The usual calls, acquire(name, lease, timeout)
 * and try_acquire(name, lease), leave none out.
 */
CREATE FUNCTION lockfence.acquire(name text,
                                  lease interval DEFAULT NULL,
                                  timeout interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockfence_acquire'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.acquire(text, interval, interval) IS
'wait for the named lock, take it for a lease and return its fence token';

CREATE FUNCTION lockfence.try_acquire(name text,
                                      lease interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockfence_try_acquire'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.try_acquire(text, interval) IS
'take the named lock if it is free and return its fence token, else NULL';

CREATE FUNCTION lockfence.acquire_session(name text,
                                          lease interval DEFAULT NULL,
                                          timeout interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockfence_acquire_session'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.acquire_session(text, interval, interval) IS
'like acquire, but the lease also ends when this session ends';

CREATE FUNCTION lockfence.try_acquire_session(name text,
                                              lease interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockfence_try_acquire_session'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.try_acquire_session(text, interval) IS
'like try_acquire, but the lease also ends when this session ends';

CREATE FUNCTION lockfence.acquire_xact(name text,
                                       timeout interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockfence_acquire_xact'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.acquire_xact(text, interval) IS
'wait for the named lock and hold it until the transaction ends';

CREATE FUNCTION lockfence.try_acquire_xact(name text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockfence_try_acquire_xact'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.try_acquire_xact(text) IS
'take the named lock until the transaction ends if it is free, else NULL';

CREATE FUNCTION lockfence.release(name text, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockfence_release'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.release(text, bigint) IS
'free the named lock if token is its live holder';

CREATE FUNCTION lockfence.renew(name text, token bigint,
                                lease interval DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockfence_renew'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.renew(text, bigint, interval) IS
'extend the lease of the named lock, counted from now, if token holds it';

CREATE FUNCTION lockfence.is_held(name text, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockfence_is_held'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL SAFE;

COMMENT ON FUNCTION lockfence.is_held(text, bigint) IS
'true while token is the live holder of the named lock';

CREATE FUNCTION lockfence.force_release(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockfence_force_release'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.force_release(text) IS
'free the named lock whoever holds it (superusers and lockfence_admin only)';

REVOKE ALL ON FUNCTION lockfence.force_release(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lockfence.force_release(text) TO lockfence_admin;

CREATE FUNCTION lockfence.lock_status(OUT name text,
                                      OUT token bigint,
                                      OUT holder_pid integer,
                                      OUT session_bound boolean,
                                      OUT acquired_at timestamptz,
                                      OUT expires_at timestamptz,
                                      OUT waiters integer,
                                      OUT pins integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'lockfence_lock_status'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE VIEW lockfence.locks AS
    SELECT name, token, holder_pid, session_bound, acquired_at, expires_at,
           waiters, pins
    FROM lockfence.lock_status();

COMMENT ON VIEW lockfence.locks IS
'locks of the current database that are held now';

CREATE FUNCTION lockfence.lock_stats(OUT grants bigint,
                                     OUT releases bigint,
                                     OUT renewals bigint,
                                     OUT expiries bigint,
                                     OUT waits bigint,
                                     OUT wait_timeouts bigint,
                                     OUT fence_rejections_monotonic bigint,
                                     OUT fence_rejections_lease bigint,
                                     OUT slots_used bigint,
                                     OUT slots_available bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'lockfence_stats'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE VIEW lockfence.stats AS
    SELECT * FROM lockfence.lock_stats();

COMMENT ON VIEW lockfence.stats IS
'lock and fence counters of the whole server since it started';

-- Fencing

CREATE FUNCTION lockfence.fence_check()
RETURNS trigger
AS 'MODULE_PATHNAME', 'lockfence_fence_check'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.fence_check() IS
'BEFORE ROW trigger: reject rows whose fence token is stale (SQLSTATE LF001)';

CREATE FUNCTION lockfence.pin(name text, token bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'lockfence_pin'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.pin(text, bigint) IS
'raise LF001 unless token holds the lock; else keep its lease until the transaction ends';

-- Row locking helpers: they run their queries as the caller, so the
-- caller needs the table privileges that SELECT ... FOR <mode> needs.

CREATE FUNCTION lockfence.lock_row(rel regclass, key anyelement,
                                   timeout interval DEFAULT NULL,
                                   mode text DEFAULT 'update')
RETURNS boolean
AS 'MODULE_PATHNAME', 'lockfence_lock_row'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.lock_row(regclass, anyelement, interval, text) IS
'lock the row with this primary key, waiting at most timeout; false if there is no such row';

CREATE FUNCTION lockfence.lock_rows(rel regclass, keys anyarray,
                                    timeout interval DEFAULT NULL,
                                    mode text DEFAULT 'update')
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockfence_lock_rows'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.lock_rows(regclass, anyarray, interval, text) IS
'lock the rows with these primary keys in key order (deadlock-free); returns how many were locked';

CREATE FUNCTION lockfence.lock_version_check()
RETURNS trigger
AS 'MODULE_PATHNAME', 'lockfence_lock_version_check'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION lockfence.lock_version_check() IS
'BEFORE INSERT OR UPDATE row trigger: optimistic locking on a version column; an UPDATE sends the version read or the next one (SQLSTATE 40001 otherwise)';

GRANT USAGE ON SCHEMA lockfence TO PUBLIC;
GRANT SELECT ON lockfence.locks TO PUBLIC;
GRANT SELECT ON lockfence.stats TO PUBLIC;
