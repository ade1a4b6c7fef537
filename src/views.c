/*-------------------------------------------------------------------------
 *
 * views.c
 *	  The set-returning functions behind the lockfence.locks and
 *	  lockfence.stats views.
 *
 * lockfence.locks shows the live locks of the current database only, and
 * a lock's token only to roles with the privileges of the role that holds it
 * (and to superusers and lockfence_admin): a token is the capability to
 * renew or release a lease.  It reads one partition at a time, in slices
 * (see walk_partition).
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
#include "storage/ipc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "lock_table_internal.h"

PG_FUNCTION_INFO_V1(lockfence_lock_status);
PG_FUNCTION_INFO_V1(lockfence_stats);

#define LOCK_STATUS_COLS 8
#define STATS_COLS 10

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

/*
 * Entries looked at per hold of a partition lock: bounds how long the view
 * holds up the lock calls of one partition (about 10 us), whatever the
 * table's size.
 */
#define VIEW_SLICE_ENTRIES	256

/*
 * The partition whose members list holds this backend's cursor between two
 * slices of a walk, or -1.  The cursor itself is a list node in this
 * backend's waiter slot, so that it lives in shared memory with the list.
 */
static int	cursor_partition = -1;

static dlist_node *
my_cursor(void)
{
	return &lockfence_shared->waiters[lockfence_my_procno()].view_cursor;
}

/* Is node some backend's cursor rather than an entry? */
static bool
is_cursor(const dlist_node *node)
{
	const char *first = (const char *) &lockfence_shared->waiters[0];
	const char *end = (const char *) &lockfence_shared->waiters[lockfence_waiter_slots()];

	return (const char *) node >= first && (const char *) node < end;
}

/*
 * After an error or at exit in the middle of a walk: take this backend's
 * cursor off the list it is on, if any.  (Between slices, walk_partition
 * moves the cursor itself, under the lock it holds anyway.)
 */
static void
unlink_cursor(int code, Datum arg)
{
	LWLock	   *lock;

	if (cursor_partition < 0)
		return;
	lock = lockfence_partition_lock_by_index(cursor_partition);
	LWLockAcquire(lock, LW_EXCLUSIVE);
	dlist_delete(my_cursor());
	cursor_partition = -1;
	LWLockRelease(lock);
}

/* Copy what the view shows of entry into row. */
static void
copy_row(const LockfenceEntry *entry, LockRow *row)
{
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

/* Append the copied rows to the view's result. */
static void
put_rows(ReturnSetInfo *rsinfo, const LockRow *rows, int nrows,
		 bool sees_all_tokens)
{
	for (int r = 0; r < nrows; r++)
	{
		Datum		values[LOCK_STATUS_COLS];
		bool		nulls[LOCK_STATUS_COLS] = {0};
		const LockRow *row = &rows[r];

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

/*
 * Walk one partition's members list, VIEW_SLICE_ENTRIES entries per hold of
 * its lock, putting the live locks of this database into the result between
 * holds.  Between two holds the cursor marks the place: entries before it
 * may be removed and new ones appended meanwhile, and the list moves
 * nothing else.  Only entries that existed when the walk of the partition
 * began are shown, so a lock that stays held throughout shows exactly once,
 * and a name released and taken again meanwhile at most once.  Moving the
 * cursor changes the list, so the walk takes the lock in exclusive mode.
 */
static void
walk_partition(int partition, ReturnSetInfo *rsinfo, LockRow *rows,
			   bool sees_all_tokens)
{
	LockfencePartitionLists *lists = &lockfence_shared->lists[partition].lists;
	LWLock	   *lock = lockfence_partition_lock_by_index(partition);
	dlist_node *end = &lists->members.head;
	dlist_node *cursor = my_cursor();
	uint64		end_seq = 0;
	bool		started = false;
	bool		done = false;

	while (!done)
	{
		dlist_node *node;
		TimestampTz now;
		int			nrows = 0;

		CHECK_FOR_INTERRUPTS();
		LWLockAcquire(lock, LW_EXCLUSIVE);
		now = GetCurrentTimestamp();
		if (!started)
		{
			end_seq = lists->next_member_seq;
			node = end->next;
			started = true;
		}
		else
		{
			node = cursor->next;
			dlist_delete(cursor);
			cursor_partition = -1;
		}

		for (int visited = 0; node != end && visited < VIEW_SLICE_ENTRIES;
			 visited++, node = node->next)
		{
			LockfenceEntry *entry;

			if (is_cursor(node))
				continue;		/* another backend's walk */
			entry = dlist_container(LockfenceEntry, member_link, node);
			if (entry->member_seq >= end_seq)
			{
				node = end;		/* the rest came after the walk began */
				break;
			}
			if (entry->key.dbid == MyDatabaseId &&
				lockfence_entry_is_live(entry, now))
				copy_row(entry, &rows[nrows++]);
		}

		if (node == end)
			done = true;
		else
		{
			dlist_insert_before(node, cursor);
			cursor_partition = partition;
		}
		LWLockRelease(lock);

		put_rows(rsinfo, rows, nrows, sees_all_tokens);
	}
}

/*
 * Count a write the fence trigger or pin() rejected: in monotonic mode (an
 * older token than the row's) or for a lock not held (lease mode).
 */
void
lockfence_count_fence_rejection(bool lease_mode)
{
	pg_atomic_fetch_add_u64(lease_mode ? &lockfence_shared->lease_rejections :
							&lockfence_shared->monotonic_rejections, 1);
}

/*
 * lockfence.locks, read one partition at a time and each partition in
 * slices (walk_partition): no lock call waits for the view longer than one
 * slice takes, and the rows go into the tuplestore, which spills to disk
 * past work_mem, so the view never needs memory for the whole table.  The
 * rows are not a picture of the whole table at one instant: each row was
 * true when its slice was read.
 */
Datum
lockfence_lock_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LockRow    *rows;
	bool		sees_all_tokens;

	lockfence_check_loaded();
	InitMaterializedSRF(fcinfo, 0);
	sees_all_tokens = lockfence_is_admin();
	rows = palloc(VIEW_SLICE_ENTRIES * sizeof(LockRow));

	Assert(cursor_partition < 0);
	PG_ENSURE_ERROR_CLEANUP(unlink_cursor, (Datum) 0);
	{
		for (int p = 0; p < LOCKFENCE_NUM_PARTITIONS; p++)
			walk_partition(p, rsinfo, rows, sees_all_tokens);
	}
	PG_END_ENSURE_ERROR_CLEANUP(unlink_cursor, (Datum) 0);
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
