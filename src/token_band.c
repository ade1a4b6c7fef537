/*-------------------------------------------------------------------------
 *
 * token_band.c
 *	  The band of a database's fence tokens, carried wherever its data goes.
 *
 * A fence token is (band << 48) | sequence number.  The sequence number
 * comes from the server-wide generator (fence_token.c) and only ever
 * increases within one data directory; the band is the database's own and
 * only ever increases along its history.  A database's tokens therefore
 * increase as long as its band never goes down and the band changes every
 * time the sequence numbers may start again: after a promotion (the
 * standby's state file may be old) and after a move to a new cluster
 * (pg_upgrade, pg_dump and restore: the new cluster's numbers start at 1).
 *
 * Where the database has been is recorded in two sequences of the
 * extension, registered with pg_extension_config_dump so that pg_dump and
 * pg_upgrade carry them with the data:
 *
 *	  lockfence.token_history_system	system identifier of the cluster
 *	  lockfence.token_history_band		(timeline << 16) | band
 *
 * "Tokens of this database were granted in band B on timeline T of cluster
 * S, and in no higher band."  Before its first grant a backend works out
 * its database's band from that record and the server it runs on:
 *
 *	  no record				band = timeline - 1 (a new database)
 *	  same cluster, same timeline	band = B
 *	  same cluster, later timeline	band = B + (timeline - T) (a promotion)
 *	  another cluster, or a later
 *	  timeline of this one		band = B + timeline (a move)
 *
 * and records the result if it differs.  The rule needs nothing but the
 * record and the server: two backends, or a crash and a restart, or a
 * standby that replayed an older record than its primary had, work out a
 * band at least as high as any band its history used.  Sequences are not
 * transactional, so a record survives a rollback of the transaction that
 * wrote it; it is written under a lock of the band sequence (so backends
 * agree) and flushed before any token of the new band is used.
 *
 * Logical replication does not carry sequences.  A database moved that way
 * starts without a record, and lockfence.advance_tokens() (superusers
 * only) raises its band above a token of the old cluster; the fence
 * trigger's rejection of a row from a higher band says so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "lock_table_internal.h"

PG_FUNCTION_INFO_V1(lockfence_advance_tokens);

#define HISTORY_SYSTEM_SEQUENCE	"token_history_system"
#define HISTORY_BAND_SEQUENCE	"token_history_band"

/* What a database's record says, and what this server is. */
typedef struct TokenHistory
{
	bool		recorded;
	uint64		system_identifier;
	uint32		timeline;
	uint32		band;
} TokenHistory;

/* This backend's band, valid while the shared generation has not moved. */
static bool band_valid = false;
static uint32 band_generation;
static uint32 my_band;

static inline int64
encode_band(uint32 timeline, uint32 band)
{
	return ((int64) timeline << 16) | band;
}

/* The OID of one of the history sequences, InvalidOid before version 0.2. */
static Oid
history_sequence(const char *name)
{
	Oid			namespace = get_namespace_oid("lockfence", true);

	if (!OidIsValid(namespace))
		return InvalidOid;
	return get_relname_relid(name, namespace);
}

static Oid
relation_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* Read the record; the caller runs as the sequences' owner. */
static void
read_history(TokenHistory *history)
{
	int			rc;
	bool		isnull[4];
	Datum		value[4];

	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute("SELECT s.last_value, s.is_called, b.last_value, b.is_called"
					 " FROM lockfence." HISTORY_SYSTEM_SEQUENCE " AS s,"
					 " lockfence." HISTORY_BAND_SEQUENCE " AS b",
					 true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the fence token history: %s",
			 SPI_result_code_string(rc));
	for (int i = 0; i < 4; i++)
		value[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								 i + 1, &isnull[i]);
	/* a record is complete once both are set; the band is written first */
	history->recorded = DatumGetBool(value[1]) && DatumGetBool(value[3]);
	if (history->recorded)
	{
		int64		encoded = DatumGetInt64(value[2]);

		history->system_identifier = (uint64) DatumGetInt64(value[0]);
		history->timeline = (uint32) (encoded >> 16);
		history->band = (uint32) (encoded & 0xFFFF);
	}
	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed: %s", SPI_result_code_string(rc));
}

/*
 * Write the record.  The band first: a crash between the two leaves the
 * band of this server with an older system identifier, which reads as a
 * move and so gives a higher band, never a lower one.
 */
static void
write_history(Oid system_seq, Oid band_seq, uint32 timeline, uint32 band)
{
	DirectFunctionCall3(setval3_oid, ObjectIdGetDatum(band_seq),
						Int64GetDatum(encode_band(timeline, band)),
						BoolGetDatum(true));
	DirectFunctionCall3(setval3_oid, ObjectIdGetDatum(system_seq),
						Int64GetDatum((int64) GetSystemIdentifier()),
						BoolGetDatum(true));
	/* durable before a token of the band leaves the server */
	XLogFlush(XactLastRecEnd);
}

static uint32
check_band(uint64 band)
{
	if (band > LOCKFENCE_MAX_BAND)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("fence tokens of database \"%s\" are exhausted",
						get_database_name(MyDatabaseId)),
				 errdetail("Its token band would be %llu; the last is %u.",
						   (unsigned long long) band, LOCKFENCE_MAX_BAND)));
	return (uint32) band;
}

/* The band the rule in the header comment gives, from a record. */
static uint32
band_after(const TokenHistory *history, uint32 timeline)
{
	if (!history->recorded)
		return check_band((uint64) timeline - 1);
	if (history->system_identifier == GetSystemIdentifier())
	{
		if (history->timeline == timeline)
			return history->band;
		if (history->timeline < timeline)
			return check_band((uint64) history->band +
							  (timeline - history->timeline));
	}
	return check_band((uint64) history->band + timeline);
}

/*
 * Work out, record if needed, and return this database's band, no lower
 * than min_band.  Takes the band sequence's lock for the duration.  Runs
 * the record's queries as the sequences' owner, in a restricted security
 * context, so that neither the caller's privileges nor its search_path
 * matter.  Returns false (and changes nothing) when the database has no
 * history sequences: lockfence's SQL objects are older than 0.2, and the
 * band is that of a new database.
 */
static bool
settle_band(uint64 min_band, uint32 *band)
{
	Oid			system_seq = history_sequence(HISTORY_SYSTEM_SEQUENCE);
	Oid			band_seq = history_sequence(HISTORY_BAND_SEQUENCE);
	uint32		timeline = GetWALInsertionTimeLine();
	TokenHistory history;
	Oid			save_userid;
	int			save_sec_context;
	uint32		result;

	if (!OidIsValid(system_seq) || !OidIsValid(band_seq))
		return false;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(relation_owner(band_seq),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	LockRelationOid(band_seq, ShareUpdateExclusiveLock);

	read_history(&history);
	result = Max(band_after(&history, timeline), check_band(min_band));
	if (!history.recorded ||
		history.system_identifier != GetSystemIdentifier() ||
		history.timeline != timeline || history.band != result)
	{
		/*
		 * A read-only transaction cannot write it; the rule gives the same
		 * band again until a read-write one does (advance_tokens() refuses
		 * to run in one).
		 */
		if (!XactReadOnly)
			write_history(system_seq, band_seq, timeline, result);
	}

	UnlockRelationOid(band_seq, ShareUpdateExclusiveLock);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	*band = result;
	return true;
}

/*
 * This database's band, for a grant by this backend.  Works it out before
 * the first grant and again after advance_tokens() ran anywhere; both need
 * a transaction and no LWLock held.
 */
uint32
lockfence_token_band(void)
{
	uint32		generation =
		pg_atomic_read_u32(&lockfence_shared->tokens.state.band_generation);

	if (likely(band_valid && band_generation == generation))
		return my_band;

	lockfence_refuse_grant_in_recovery();
	if (!settle_band(0, &my_band))
	{
		/* lockfence's objects are older than 0.2: a database without a record */
		TokenHistory none = {0};

		my_band = band_after(&none, GetWALInsertionTimeLine());
	}
	band_generation = generation;
	band_valid = true;
	return my_band;
}

/*
 * lockfence.advance_tokens(min_token bigint) returns bigint
 *
 * Make every later token of this database exceed min_token, for a database
 * whose data came from another cluster without its token history (logical
 * replication, a dump without lockfence's configuration).  Returns the
 * smallest token this database can grant from now on.  Locks held keep
 * their tokens.
 */
Datum
lockfence_advance_tokens(PG_FUNCTION_ARGS)
{
	int64		min_token;
	uint32		band;

	lockfence_check_loaded();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the minimum token must not be null")));
	min_token = PG_GETARG_INT64(0);
	if (min_token < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the minimum token must not be negative")));
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to advance fence tokens"),
				 errdetail("Only superusers may advance fence tokens.")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot advance fence tokens during recovery")));
	PreventCommandIfReadOnly("lockfence.advance_tokens()");

	if (!settle_band(((uint64) min_token >> LOCKFENCE_SEQ_BITS) + 1, &band))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("lockfence's objects in this database are older than version 0.2"),
				 errhint("Run ALTER EXTENSION lockfence UPDATE.")));

	/* every backend works its band out again before its next grant */
	pg_atomic_fetch_add_u32(&lockfence_shared->tokens.state.band_generation, 1);
	PG_RETURN_INT64((int64) band << LOCKFENCE_SEQ_BITS);
}
