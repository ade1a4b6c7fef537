/*-------------------------------------------------------------------------
 *
 * row_locks.c
 *	  Pessimistic row locking: SELECT ... FOR UPDATE with a bounded wait, and
 *	  many rows in primary-key order so that callers never deadlock.
 *
 *	  lock_row(rel, key, timeout, mode)    -> boolean
 *	  lock_rows(rel, keys, timeout, mode)  -> bigint
 *
 * Each (table, key type, mode) gets three cached plans:
 *	  try:   SELECT 1 FROM t WHERE pk = $1 FOR <mode> SKIP LOCKED
 *	  probe: SELECT ctid, tableoid FROM t WHERE pk = $1
 *	  wait:  SELECT 1 FROM t WHERE pk = $1 FOR <mode>
 * An uncontended row is locked by the first.  Otherwise the probe tells
 * whether the row exists and which transactions hold it, and the third
 * waits, under the caller's timeout, which is installed as lock_timeout for
 * that one query only (a GUC nest level undoes it, as a function's SET
 * clause would).  The holders found by the probe name the blocking
 * processes if the wait times out.
 *
 * Identifiers are quoted, the key is always a parameter, and the mode is
 * one of four keywords, so no argument reaches the query text unchecked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/multixact.h"
#include "access/subtrans.h"
#include "access/table.h"
#include "access/transam.h"
#include "catalog/pg_am.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "parser/parse_coerce.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "lockfence.h"

PG_FUNCTION_INFO_V1(lockfence_lock_row);
PG_FUNCTION_INFO_V1(lockfence_lock_rows);

/* Cached plans for one table, key type and lock mode. */
typedef struct RowLockPlanKey
{
	Oid			relid;
	Oid			keytype;
	int			mode;
} RowLockPlanKey;

typedef struct RowLockPlans
{
	RowLockPlanKey key;			/* hash key; must be first */
	bool		valid;			/* false once the table changed */
	char	   *relname;		/* for messages */
	SPIPlanPtr	try_plan;
	SPIPlanPtr	probe_plan;
	SPIPlanPtr	wait_plan;
	SPIPlanPtr	sort_plan;		/* lock_rows: the keys that exist, in order */
	SPIPlanPtr	exact_plan;		/* a key that does not convert exactly */
	SPIPlanPtr	exact_array_plan;	/* the same for an array of keys */
} RowLockPlans;

static const char *const lock_mode_clauses[] = {
	"FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"
};
static const char *const lock_mode_names[] = {
	"update", "no key update", "share", "key share"
};

static HTAB *plan_cache = NULL;

/* Forget plans of a table whose definition changed. */
static void
invalidate_plans(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	RowLockPlans *plans;

	if (plan_cache == NULL)
		return;
	hash_seq_init(&status, plan_cache);
	while ((plans = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || plans->key.relid == relid)
			plans->valid = false;
}

static int
parse_lock_mode(FunctionCallInfo fcinfo, int argno)
{
	char	   *mode;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lock mode must not be null")));
	mode = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	for (int i = 0; i < (int) lengthof(lock_mode_names); i++)
		if (pg_strcasecmp(mode, lock_mode_names[i]) == 0)
			return i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unrecognized row lock mode \"%s\"", mode),
			 errhint("Valid modes are \"update\", \"no key update\", \"share\" and \"key share\".")));
	return 0;					/* keep compiler quiet */
}

static SPIPlanPtr
prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);
	int			rc;

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	rc = SPI_keepplan(plan);
	if (rc != 0)
		elog(ERROR, "SPI_keepplan failed: %s", SPI_result_code_string(rc));
	return plan;
}

/* OPERATOR(schema.=), the equality operator of type, for query text. */
static char *
equality_operator(Oid type)
{
	TypeCacheEntry *typentry = lookup_type_cache(type, TYPECACHE_EQ_OPR);
	HeapTuple	tuple;
	Oid			namespace;

	if (!OidIsValid(typentry->eq_opr))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("could not identify an equality operator for type %s",
						format_type_be(type))));
	tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(typentry->eq_opr));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for operator %u", typentry->eq_opr);
	namespace = ((Form_pg_operator) GETSTRUCT(tuple))->oprnamespace;
	ReleaseSysCache(tuple);
	return psprintf("OPERATOR(%s.=)",
					quote_identifier(get_namespace_name(namespace)));
}

/* Is every value of type from converted exactly by a cast to type to? */
static bool
cast_is_exact(Oid from, Oid to)
{
	return from == to ||
		(from == INT2OID && (to == INT4OID || to == INT8OID)) ||
		(from == INT4OID && to == INT8OID);
}

/*
 * The query that returns a key (as text, and as it would be cast) when the
 * cast to the primary key's type is not exact: when the column's type
 * modifier cuts it (char(n), varchar(n), numeric(p,s), bit(n),
 * timestamp(p)), or when a key of another non-string type does not come back
 * equal from the column's type (1.7 -> integer 2).  A string key is parsed
 * in the column type's syntax, which is not a loss.  NULL when no key can
 * lose anything.  over_array: the keys come as an array.
 */
static char *
exact_check_sql(Oid argtype, Oid pktype, int32 pktypmod, bool over_array)
{
	const char *key = over_array ? "k" : "$1";
	char	   *full = format_type_extended(pktype, pktypmod,
											FORMAT_TYPE_TYPEMOD_GIVEN |
											FORMAT_TYPE_FORCE_QUALIFY);
	char	   *base = format_type_extended(pktype, -1,
											FORMAT_TYPE_TYPEMOD_GIVEN |
											FORMAT_TYPE_FORCE_QUALIFY);
	bool		typmod_cuts = pktypmod >= 0;
	bool		round_trip = !cast_is_exact(argtype, pktype) &&
		TypeCategory(argtype) != TYPCATEGORY_STRING;
	StringInfoData sql;

	if (!typmod_cuts && !round_trip)
		return NULL;
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT CAST(%s AS pg_catalog.text), CAST(CAST(%s AS %s) AS pg_catalog.text)",
					 key, key, full);
	if (over_array)
		appendStringInfo(&sql, " FROM pg_catalog.unnest($1) AS k WHERE k IS NOT NULL AND");
	else
		appendStringInfoString(&sql, " WHERE");
	appendStringInfoString(&sql, " NOT (true");
	if (typmod_cuts)
		appendStringInfo(&sql, " AND CAST(%s AS %s) %s CAST(%s AS %s)",
						 key, full, equality_operator(pktype), key, base);
	if (round_trip)
		appendStringInfo(&sql, " AND CAST(CAST(%s AS %s) AS %s) %s %s",
						 key, base,
						 format_type_extended(argtype, -1,
											  FORMAT_TYPE_TYPEMOD_GIVEN |
											  FORMAT_TYPE_FORCE_QUALIFY),
						 equality_operator(argtype), key);
	appendStringInfoString(&sql, ") LIMIT 1");
	return sql.data;
}

/* Build the plans for a table: it must have a one-column primary key. */
static void
build_plans(RowLockPlans *plans)
{
	Relation	rel;
	Oid			pkindex;
	Relation	index;
	AttrNumber	pkattnum;
	Oid			pktype;
	int32		pktypmod;
	char	   *exact_sql;
	char	   *table;
	char	   *column;
	char	   *typname;
	StringInfoData sql;
	Oid			argtype = plans->key.keytype;
	Oid			arraytype;
	const char *clause = lock_mode_clauses[plans->key.mode];

	rel = table_open(plans->key.relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));

	pkindex = lockfence_compat_primary_key_index(rel);
	if (!OidIsValid(pkindex))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no primary key",
						RelationGetRelationName(rel)),
				 errhint("lockfence.lock_row() finds rows by a single-column primary key.")));
	index = index_open(pkindex, AccessShareLock);
	if (index->rd_index->indnkeyatts != 1 || index->rd_index->indkey.values[0] == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("primary key of table \"%s\" has more than one column",
						RelationGetRelationName(rel)),
				 errhint("lockfence.lock_row() finds rows by a single-column primary key; lock such rows with SELECT ... FOR UPDATE.")));
	pkattnum = index->rd_index->indkey.values[0];
	index_close(index, AccessShareLock);

	pktype = TupleDescAttr(RelationGetDescr(rel), pkattnum - 1)->atttypid;
	pktypmod = TupleDescAttr(RelationGetDescr(rel), pkattnum - 1)->atttypmod;
	table = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									   RelationGetRelationName(rel));
	column = pstrdup(quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
															pkattnum - 1)->attname)));
	/* with its type modifier: "character" alone would mean char(1) */
	typname = format_type_extended(pktype, pktypmod,
								   FORMAT_TYPE_TYPEMOD_GIVEN |
								   FORMAT_TYPE_FORCE_QUALIFY);
	plans->relname = MemoryContextStrdup(lockfence_session_context(),
										 RelationGetRelationName(rel));
	table_close(rel, AccessShareLock);

	/* the key is cast to the column's type, so the primary key index is used */
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT 1 FROM %s WHERE %s OPERATOR(pg_catalog.=) $1::%s %s SKIP LOCKED",
					 table, column, typname, clause);
	plans->try_plan = prepare_kept(sql.data, 1, &argtype);

	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT ctid, tableoid FROM %s WHERE %s OPERATOR(pg_catalog.=) $1::%s",
					 table, column, typname);
	plans->probe_plan = prepare_kept(sql.data, 1, &argtype);

	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT 1 FROM %s WHERE %s OPERATOR(pg_catalog.=) $1::%s %s",
					 table, column, typname, clause);
	plans->wait_plan = prepare_kept(sql.data, 1, &argtype);

	exact_sql = exact_check_sql(argtype, pktype, pktypmod, false);
	if (exact_sql != NULL)
		plans->exact_plan = prepare_kept(exact_sql, 1, &argtype);

	arraytype = get_array_type(argtype);
	if (OidIsValid(arraytype))
	{
		resetStringInfo(&sql);
		/*
		 * Sorted by the column itself (every caller, whatever its key type,
		 * locks in the same order); keys come back in the caller's type,
		 * for the other plans.
		 */
		appendStringInfo(&sql,
						 "SELECT CAST(t.%s AS %s) FROM %s AS t WHERE t.%s OPERATOR(pg_catalog.=) ANY ($1::%s[]) ORDER BY t.%s",
						 column, format_type_be_qualified(argtype), table,
						 column, typname, column);
		plans->sort_plan = prepare_kept(sql.data, 1, &arraytype);

		exact_sql = exact_check_sql(argtype, pktype, pktypmod, true);
		if (exact_sql != NULL)
			plans->exact_array_plan = prepare_kept(exact_sql, 1, &arraytype);
	}
	pfree(sql.data);
}

static RowLockPlans *
get_plans(Oid relid, Oid keytype, int mode)
{
	RowLockPlanKey key;
	RowLockPlans *plans;
	bool		found;

	if (plan_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(RowLockPlanKey);
		ctl.entrysize = sizeof(RowLockPlans);
		ctl.hcxt = lockfence_session_context();
		plan_cache = hash_create("lockfence row lock plans", 16, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(invalidate_plans, (Datum) 0);
	}

	memset(&key, 0, sizeof(key));
	key.relid = relid;
	key.keytype = keytype;
	key.mode = mode;
	plans = hash_search(plan_cache, &key, HASH_ENTER, &found);
	if (found && plans->valid)
		return plans;
	if (found)
	{
		SPI_freeplan(plans->try_plan);
		SPI_freeplan(plans->probe_plan);
		SPI_freeplan(plans->wait_plan);
		if (plans->sort_plan)
			SPI_freeplan(plans->sort_plan);
		if (plans->exact_plan)
			SPI_freeplan(plans->exact_plan);
		if (plans->exact_array_plan)
			SPI_freeplan(plans->exact_array_plan);
		pfree(plans->relname);
	}
	plans->valid = false;
	plans->try_plan = plans->probe_plan = plans->wait_plan = NULL;
	plans->sort_plan = plans->exact_plan = plans->exact_array_plan = NULL;
	plans->relname = NULL;

	PG_TRY();
	{
		build_plans(plans);
	}
	PG_CATCH();
	{
		hash_search(plan_cache, &key, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	plans->valid = true;
	return plans;
}

/* Run a cached read-only or locking plan; return how many rows it found. */
static uint64
run_plan(SPIPlanPtr plan, Datum *values, bool read_only)
{
	int			rc = SPI_execute_plan(plan, values, NULL, read_only, 1);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/* Refuse a key that plan (exact_plan or exact_array_plan) finds inexact. */
static void
check_keys_exact(RowLockPlans *plans, SPIPlanPtr plan, Datum keys)
{
	Datum		values[1] = {keys};

	if (plan == NULL)
		return;
	if (run_plan(plan, values, true) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key \"%s\" does not convert exactly to the primary key of table \"%s\"",
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
						plans->relname),
				 errdetail("As the primary key's type it would be \"%s\".",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)),
				 errhint("Pass the key in the primary key's type.")));
}

/* Add the process holding xid, if it is still running, to pids. */
static void
add_blocker(StringInfo pids, int *count, TransactionId xid)
{
	int			pid;

	if (!TransactionIdIsInProgress(xid))
		return;
	pid = BackendXidGetPid(SubTransGetTopmostTransaction(xid));
	if (pid != 0 && pid != MyProcPid)
	{
		appendStringInfo(pids, "%s%d", pids->len > 0 ? ", " : "", pid);
		(*count)++;
	}
}

/*
 * The processes whose transactions hold a lock on the row version at tid
 * (from its xmax, which may be a MultiXact of several lockers).
 */
static char *
row_blockers(Oid relid, ItemPointer tid, int *count)
{
	StringInfoData pids;
	Relation	rel;
	HeapTupleData tuple;
	Buffer		buffer;

	initStringInfo(&pids);
	*count = 0;
	rel = table_open(relid, AccessShareLock);
	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
	{
		table_close(rel, AccessShareLock);
		return pids.data;
	}

	tuple.t_self = *tid;
	if (heap_fetch(rel, SnapshotAny, &tuple, &buffer, false))
	{
		uint16		infomask;
		TransactionId xmax;

		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		infomask = tuple.t_data->t_infomask;
		xmax = HeapTupleHeaderGetRawXmax(tuple.t_data);
		LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
		ReleaseBuffer(buffer);

		if (!(infomask & HEAP_XMAX_INVALID))
		{
			if (infomask & HEAP_XMAX_IS_MULTI)
			{
				MultiXactMember *members;
				int			n = GetMultiXactIdMembers(xmax, &members, false,
													  HEAP_XMAX_IS_LOCKED_ONLY(infomask));

				for (int i = 0; i < n; i++)
					add_blocker(&pids, count, members[i].xid);
			}
			else
				add_blocker(&pids, count, xmax);
		}
	}
	table_close(rel, AccessShareLock);
	return pids.data;
}

/*
 * The timeout argument in ms; *given is false for NULL (lock_timeout).  It
 * becomes lock_timeout, an int of milliseconds: at most about 24.8 days.
 */
static int64
get_timeout_ms(FunctionCallInfo fcinfo, int argno, bool *given)
{
	int64		timeout_ms;

	*given = !PG_ARGISNULL(argno);
	if (!*given)
		return 0;
	/* lock_timeout counts milliseconds; round a positive timeout up */
	timeout_ms = (lockfence_timeout_usecs(PG_GETARG_INTERVAL_P(argno)) + 999) / 1000;
	if (timeout_ms > INT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("row lock timeout must not exceed %d ms (about 24 days)",
						INT_MAX),
				 errhint("A timeout of 0 waits without a limit.")));
	return timeout_ms;
}

/* Lock one row; false when there is no row with that key. */
static bool
lock_one_row(RowLockPlans *plans, Datum key, bool timeout_given,
			 int64 timeout_ms)
{
	Datum		values[1] = {key};
	char	   *blockers;
	int			nblockers;
	Oid			relid;
	ItemPointerData tid;
	bool		isnull;
	bool		locked;
	int			nestlevel;
	MemoryContext cxt = CurrentMemoryContext;

	/*
	 * Every result is freed at once: lock_rows calls this for each of its
	 * rows within one SPI connection.
	 */

	/* uncontended: one query */
	locked = run_plan(plans->try_plan, values, false) == 1;
	SPI_freetuptable(SPI_tuptable);
	if (locked)
		return true;

	/* absent, or held by others: find out which, and by whom */
	if (run_plan(plans->probe_plan, values, true) == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return false;
	}
	tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc,
													   1, &isnull));
	relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);
	blockers = row_blockers(relid, &tid, &nblockers);

	nestlevel = NewGUCNestLevel();
	if (timeout_given)
	{
		char		setting[32];

		snprintf(setting, sizeof(setting), INT64_FORMAT, timeout_ms);
		(void) set_config_option("lock_timeout", setting, PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	}

	PG_TRY();
	{
		locked = run_plan(plans->wait_plan, values, false) == 1;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("could not lock row in relation \"%s\"", plans->relname),
				 nblockers > 0 ?
				 errdetail_plural("Blocked by process %s.",
								  "Blocked by processes %s.",
								  nblockers, blockers) :
				 errdetail("The row was locked by another transaction.")));
	}
	PG_END_TRY();

	AtEOXact_GUC(true, nestlevel);
	SPI_freetuptable(SPI_tuptable);
	pfree(blockers);
	return locked;
}

static Oid
get_relid_arg(FunctionCallInfo fcinfo)
{
	Oid			relid;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation must not be null")));
	relid = PG_GETARG_OID(0);
	/* a regclass made from a number need not name a relation */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	return relid;
}

/* lock_row(rel regclass, key anyelement, timeout interval, mode text) */
Datum
lockfence_lock_row(PG_FUNCTION_ARGS)
{
	Oid			relid = get_relid_arg(fcinfo);
	Oid			keytype = get_fn_expr_argtype(fcinfo->flinfo, 1);
	bool		timeout_given;
	int64		timeout_ms = get_timeout_ms(fcinfo, 2, &timeout_given);
	int			mode = parse_lock_mode(fcinfo, 3);
	RowLockPlans *plans;
	bool		locked;
	int			rc;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("key must not be null")));
	if (keytype == UNKNOWNOID)
		keytype = TEXTOID;

	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));
	plans = get_plans(relid, keytype, mode);
	check_keys_exact(plans, plans->exact_plan, PG_GETARG_DATUM(1));
	locked = lock_one_row(plans, PG_GETARG_DATUM(1), timeout_given, timeout_ms);
	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed: %s", SPI_result_code_string(rc));

	PG_RETURN_BOOL(locked);
}

/* How many sorted keys lock_rows holds in memory at a time. */
#define LOCK_ROWS_BATCH 1000

/*
 * lock_rows(rel regclass, keys anyarray, timeout interval, mode text)
 *
 * The timeout bounds the whole call: each wait gets what is left of it.
 * The existing keys come sorted from a cursor, a batch at a time, and each
 * row's results are freed at once, so memory does not grow with the number
 * of rows beyond the keys array itself.
 */
Datum
lockfence_lock_rows(PG_FUNCTION_ARGS)
{
	Oid			relid = get_relid_arg(fcinfo);
	Oid			arraytype = get_fn_expr_argtype(fcinfo->flinfo, 1);
	Oid			keytype = get_element_type(arraytype);
	bool		timeout_given;
	int64		timeout_ms = get_timeout_ms(fcinfo, 2, &timeout_given);
	int			mode = parse_lock_mode(fcinfo, 3);
	TimestampTz deadline = 0;
	RowLockPlans *plans;
	Datum		values[1];
	Portal		cursor;
	int64		nlocked = 0;
	int			rc;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("keys must not be null")));
	if (!OidIsValid(keytype))
		elog(ERROR, "lock_rows called with a non-array key argument");
	if (timeout_given && timeout_ms > 0)
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));
	plans = get_plans(relid, keytype, mode);
	if (plans->sort_plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("keys of type %s cannot be passed as an array",
						format_type_be(keytype))));
	check_keys_exact(plans, plans->exact_array_plan, PG_GETARG_DATUM(1));

	/* the existing keys, sorted: every caller locks in the same order */
	values[0] = PG_GETARG_DATUM(1);
	cursor = SPI_cursor_open(NULL, plans->sort_plan, values, NULL, true);
	for (;;)
	{
		SPITupleTable *batch;
		uint64		nkeys;

		SPI_cursor_fetch(cursor, true, LOCK_ROWS_BATCH);
		batch = SPI_tuptable;
		nkeys = SPI_processed;
		if (nkeys == 0)
		{
			SPI_freetuptable(batch);
			break;
		}
		for (uint64 i = 0; i < nkeys; i++)
		{
			bool		isnull;
			Datum		key = SPI_getbinval(batch->vals[i], batch->tupdesc, 1,
											&isnull);

			CHECK_FOR_INTERRUPTS();
			if (deadline != 0)
			{
				long		secs;
				int			usecs;

				/* what is left of the timeout; at least 1 ms (0: no limit) */
				TimestampDifference(GetCurrentTimestamp(), deadline,
									&secs, &usecs);
				timeout_ms = Max(1, (int64) secs * 1000 + (usecs + 999) / 1000);
			}
			if (lock_one_row(plans, key, timeout_given, timeout_ms))
				nlocked++;
		}
		SPI_freetuptable(batch);
	}
	SPI_cursor_close(cursor);
	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed: %s", SPI_result_code_string(rc));

	PG_RETURN_INT64(nlocked);
}
