/*-------------------------------------------------------------------------
 *
 * views.c
 *	  The set-returning functions behind the lockfence.locks and
 *	  lockfence.stats views.
 *
 * lockfence.locks shows the live locks of the current database only, and
 * a lock's token only to roles with the privileges of the role that holds it
 * (and to superusers and lockfence_admin): a token is the capability to
 * renew or release a lease.  The
 * entries are copied under all partition locks (taken in order, protocol
 * rule 2), so the rows are one consistent picture; tuples are built after
 * the locks are released.
 *
 * lockfence.stats sums the per-partition counters without locks: each
 * counter is a 64-bit word read atomically, and the sum is a snapshot that
 * may be a few events behind.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "lockfence.h"

PG_FUNCTION_INFO_V1(lockfence_lock_status);
PG_FUNCTION_INFO_V1(lockfence_stats);

#define LOCK_STATUS_COLS 8
#define STATS_COLS 10

#if PG_VERSION_NUM < 150000
/* InitMaterializedSRF() appeared in PostgreSQL 15. */
static void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcontext;
	TupleDesc	tupdesc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("materialize mode required, but it is not allowed in this context")));

	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = tupdesc;
	MemoryContextSwitchTo(oldcontext);
}
#endif

Datum
lockfence_lock_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LockfenceEntry *rows;
	int			nrows = 0;
	int			maxrows = 64;
	HASH_SEQ_STATUS status;
	LockfenceEntry *entry;
	TimestampTz now;
	bool		sees_all_tokens;

	lockfence_check_loaded();
	InitMaterializedSRF(fcinfo, 0);

	rows = palloc(maxrows * sizeof(LockfenceEntry));

	for (int i = 0; i < LOCKFENCE_NUM_PARTITIONS; i++)
		LWLockAcquire(lockfence_partition_lock_by_index(i), LW_SHARED);

	now = GetCurrentTimestamp();
	hash_seq_init(&status, lockfence_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dbid != MyDatabaseId ||
			!lockfence_entry_is_live(entry, now))
			continue;
		if (nrows == maxrows)
		{
			maxrows *= 2;
			rows = repalloc(rows, maxrows * sizeof(LockfenceEntry));
		}
		rows[nrows++] = *entry;
	}

	for (int i = LOCKFENCE_NUM_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(lockfence_partition_lock_by_index(i));

	sees_all_tokens = lockfence_is_admin();

	for (int r = 0; r < nrows; r++)
	{
		Datum		values[LOCK_STATUS_COLS];
		bool		nulls[LOCK_STATUS_COLS] = {0};
		LockfenceEntry *row = &rows[r];

		values[0] = CStringGetTextDatum(row->key.name);
		if (sees_all_tokens || has_privs_of_role(GetUserId(), row->holder_role))
			values[1] = Int64GetDatum((int64) row->token);
		else
			nulls[1] = true;
		values[2] = Int32GetDatum(row->holder_pid);
		values[3] = BoolGetDatum(row->scope == LF_SCOPE_SESSION);
		values[4] = TimestampTzGetDatum(row->acquired_at);
		if (row->scope == LF_SCOPE_XACT)
			nulls[5] = true;
		else
			values[5] = TimestampTzGetDatum(row->expires_at);
		values[6] = Int32GetDatum(row->nwaiters);
		values[7] = Int32GetDatum(row->pins);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	return (Datum) 0;
}

Datum
lockfence_stats(PG_FUNCTION_ARGS)
{
	LockfencePartitionStats sum = {0};
	TupleDesc	tupdesc;
	Datum		values[STATS_COLS];
	bool		nulls[STATS_COLS] = {0};
	int64		used;

	lockfence_check_loaded();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	for (int i = 0; i < LOCKFENCE_NUM_PARTITIONS; i++)
	{
		volatile LockfencePartitionStats *part = &lockfence_shared->stats[i].counters;

		sum.grants += part->grants;
		sum.releases += part->releases;
		sum.renewals += part->renewals;
		sum.expiries += part->expiries;
		sum.waits += part->waits;
		sum.wait_timeouts += part->wait_timeouts;
	}
	used = (int64) hash_get_num_entries(lockfence_hash);

	values[0] = Int64GetDatum((int64) sum.grants);
	values[1] = Int64GetDatum((int64) sum.releases);
	values[2] = Int64GetDatum((int64) sum.renewals);
	values[3] = Int64GetDatum((int64) sum.expiries);
	values[4] = Int64GetDatum((int64) sum.waits);
	values[5] = Int64GetDatum((int64) sum.wait_timeouts);
	values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&lockfence_shared->monotonic_rejections));
	values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&lockfence_shared->lease_rejections));
	values[8] = Int64GetDatum(used);
	values[9] = Int64GetDatum(Max((int64) lockfence_max_locks - used, 0));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
