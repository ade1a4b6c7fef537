/* lockfence 0.1 -> 0.2: fence tokens that keep increasing across pg_upgrade and dump/restore */

\echo Use "ALTER EXTENSION lockfence UPDATE TO '0.2'" to load this file. \quit

/*
 * Where this database's fence tokens were granted: the system identifier
 * of the cluster, and (timeline << 16) | band (see src/token_band.c).
 * Sequences, because the record must survive the rollback of the
 * transaction whose first grant wrote it; configuration relations, so that
 * pg_dump and pg_upgrade carry them with the data.  Unset means: no grant
 * recorded yet.  Only their owner reads or writes them, through lockfence.
 */
CREATE SEQUENCE lockfence.token_history_system
    AS bigint MINVALUE -9223372036854775808 START WITH 0 NO CYCLE;
COMMENT ON SEQUENCE lockfence.token_history_system IS
'system identifier of the cluster that last granted this database''s fence tokens';
CREATE SEQUENCE lockfence.token_history_band
    AS bigint MINVALUE 0 START WITH 0 NO CYCLE;
COMMENT ON SEQUENCE lockfence.token_history_band IS
'(timeline << 16) | band of this database''s fence tokens, on that cluster';
REVOKE ALL ON SEQUENCE lockfence.token_history_system FROM PUBLIC;
REVOKE ALL ON SEQUENCE lockfence.token_history_band FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('lockfence.token_history_system', '');
SELECT pg_catalog.pg_extension_config_dump('lockfence.token_history_band', '');

CREATE FUNCTION lockfence.advance_tokens(min_token bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'lockfence_advance_tokens'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION lockfence.advance_tokens(bigint) IS
'make every later fence token of this database exceed min_token (superusers only); returns a bound below them';
REVOKE ALL ON FUNCTION lockfence.advance_tokens(bigint) FROM PUBLIC;
