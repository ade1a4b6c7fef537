/*-------------------------------------------------------------------------
 *
 * views.c
 *	  The set-returning functions behind the lockfence.locks and
 *	  lockfence.stats views.
 *
 * lockfence.locks shows the live locks of the current database only, and
 * a lock's token only to roles with the privileges of the role that holds it
 * (and to superusers and lockfence_admin): a token is the capability to
 * renew or release a lease.  It reads one partition at a time (see
 * lockfence_lock_status).
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

/* What lockfence.locks shows of one entry, copied under its partition lock. */
typedef struct LockRow
{
	char		name[LOCKFENCE_NAME_MAXLEN + 1];
	uint64		token;
	Oid			holder_role;
	int			holder_pid;
	LockfenceScope scope;
	TimestampTz acquired_at;
	TimestampTz expires_at;
	int			nwaiters;
	int			pins;
} LockRow;

/* Copy the live entries of this database on list into *rows. */
static void
copy_rows(dlist_head *list, TimestampTz now, LockRow **rows, int *nrows,
		  int *maxrows)
{
	dlist_iter	iter;

	dlist_foreach(iter, list)
	{
		LockfenceEntry *entry = dlist_container(LockfenceEntry, expiry_link,
												iter.cur);
		LockRow    *row;

		if (entry->key.dbid != MyDatabaseId ||
			!lockfence_entry_is_live(entry, now))
			continue;
		if (*nrows == *maxrows)
		{
			*maxrows *= 2;
			*rows = repalloc(*rows, *maxrows * sizeof(LockRow));
		}
		row = &(*rows)[(*nrows)++];
		memcpy(row->name, entry->key.name, sizeof(row->name));	/* same size */
		row->token = entry->token;
		row->holder_role = entry->holder_role;
		row->holder_pid = entry->holder_pid;
		row->scope = entry->scope;
		row->acquired_at = entry->acquired_at;
		row->expires_at = entry->expires_at;
		row->nwaiters = entry->nwaiters;
		row->pins = entry->pins;
	}
}

/*
 * lockfence.locks, read one partition at a time: each partition's live
 * entries are copied (the output columns only) under that partition's lock
 * alone, and its rows go into the tuplestore, which spills to disk past
 * work_mem, before the next partition is read.  So the view holds up no
 * more than 1/LOCKFENCE_NUM_PARTITIONS of the lock calls at a time, and
 * never needs memory for the whole table.  The rows are a consistent
 * picture of each partition, not of the whole table at one instant.
 */
Datum
lockfence_lock_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LockRow    *rows;
	int			maxrows = 64;
	bool		sees_all_tokens;

	lockfence_check_loaded();
	InitMaterializedSRF(fcinfo, 0);
	sees_all_tokens = lockfence_is_admin();
	rows = palloc(maxrows * sizeof(LockRow));

	for (int p = 0; p < LOCKFENCE_NUM_PARTITIONS; p++)
	{
		LockfencePartitionLists *lists = &lockfence_shared->lists[p].lists;
		LWLock	   *lock = lockfence_partition_lock_by_index(p);
		TimestampTz now;
		int			nrows = 0;

		CHECK_FOR_INTERRUPTS();
		LWLockAcquire(lock, LW_SHARED);
		now = GetCurrentTimestamp();
		copy_rows(&lists->no_end, now, &rows, &nrows, &maxrows);
		copy_rows(&lists->far, now, &rows, &nrows, &maxrows);
		for (int slot = 0; slot < LOCKFENCE_WHEEL_SLOTS; slot++)
			copy_rows(&lists->wheel[slot], now, &rows, &nrows, &maxrows);
		LWLockRelease(lock);

		for (int r = 0; r < nrows; r++)
		{
			Datum		values[LOCK_STATUS_COLS];
			bool		nulls[LOCK_STATUS_COLS] = {0};
			LockRow    *row = &rows[r];

			values[0] = CStringGetTextDatum(row->name);
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
	}
	pfree(rows);

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
