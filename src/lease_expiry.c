/*-------------------------------------------------------------------------
 *
 * lease_expiry.c
 *	  Finding expired leases without walking the lock table: a timing wheel
 *	  per partition, and the background worker that turns it.
 *
 * Every entry of the lock table is on exactly one list of its partition:
 * a lease that ends within one turn of the wheel (LOCKFENCE_WHEEL_SLOTS
 * ticks of LOCKFENCE_TICK_US) on the wheel slot of the tick in which it
 * ends; a longer lease on the partition's far list; anything else (a
 * transaction lock, a new entry) on its list of entries without an end.
 * Granting, renewing and freeing an entry move it between lists in O(1),
 * under the partition lock that covers the entry anyway (protocol rule 1).
 *
 * Reclaiming expired leases visits only the slots whose tick has passed,
 * one slot at a time under its partition lock alone.  A slot holds only
 * leases of its own turn, so this costs in proportion to the leases that
 * ended, never to the size of the table.  The reclaimer worker does it
 * every tick; a request that finds the table full or its role at its quota
 * does it once itself, in case the worker is behind.  The worker also moves
 * far leases onto the wheel as their end comes within a turn: it looks at
 * every far lease once per half turn, a slice of the far list per tick, so
 * that work is spread evenly and never done by a request.
 *
 * Every entry is also on its partition's members list from its creation to
 * its removal, in creation order, whatever its lease does: the lock view
 * walks that list in slices (views.c), and an entry that stays in place is
 * neither missed nor seen twice when others move between wheel slots.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "lock_table_internal.h"

PGDLLEXPORT void lockfence_reclaimer_main(Datum main_arg);

/* The wait event of the reclaimer between ticks (PostgreSQL 17+). */
static uint32 reclaimer_wait_event = 0;

static inline int64
tick_of(TimestampTz t)
{
	return t / LOCKFENCE_TICK_US;
}

static inline LockfencePartitionLists *
partition_lists(int partition)
{
	return &lockfence_shared->lists[partition].lists;
}

/* Partition lists of a new shared state; every list starts empty. */
void
lockfence_expiry_init(void)
{
	for (int p = 0; p < LOCKFENCE_NUM_PARTITIONS; p++)
	{
		LockfencePartitionLists *lists = partition_lists(p);

		dlist_init(&lists->no_end);
		dlist_init(&lists->far);
		lists->nfar = 0;
		for (int s = 0; s < LOCKFENCE_WHEEL_SLOTS; s++)
			dlist_init(&lists->wheel[s]);
		lists->done_tick = 0;
		dlist_init(&lists->members);
		lists->next_member_seq = 0;
	}
}

/*
 * A new entry: on the list without an end until it is granted, and at the
 * end of the members list.
 */
void
lockfence_expiry_add(LockfenceEntry *entry, uint32 hashcode)
{
	LockfencePartitionLists *lists =
		partition_lists(hashcode % LOCKFENCE_NUM_PARTITIONS);

	entry->on_far_list = false;
	dlist_push_tail(&lists->no_end, &entry->expiry_link);
	entry->member_seq = lists->next_member_seq++;
	dlist_push_tail(&lists->members, &entry->member_link);
}

/* Does a lease that ends at expires_at belong on the far list at now? */
static inline bool
is_far(TimestampTz expires_at, TimestampTz now)
{
	return tick_of(expires_at) - tick_of(now) >= LOCKFENCE_WHEEL_SLOTS - 1;
}

/* Take entry off its list. */
static void
unlink_entry(LockfencePartitionLists *lists, LockfenceEntry *entry)
{
	if (entry->on_far_list)
	{
		lists->nfar--;
		entry->on_far_list = false;
	}
	dlist_delete(&entry->expiry_link);
}

/* Put entry on the list its holder's lease end calls for. */
void
lockfence_expiry_track(LockfenceEntry *entry, uint32 hashcode, TimestampTz now)
{
	LockfencePartitionLists *lists =
		partition_lists(hashcode % LOCKFENCE_NUM_PARTITIONS);

	unlink_entry(lists, entry);
	if (entry->token == 0 || entry->scope == LF_SCOPE_XACT)
		dlist_push_tail(&lists->no_end, &entry->expiry_link);
	else if (is_far(entry->expires_at, now))
	{
		dlist_push_tail(&lists->far, &entry->expiry_link);
		entry->on_far_list = true;
		lists->nfar++;
	}
	else
		dlist_push_tail(&lists->wheel[tick_of(entry->expires_at) % LOCKFENCE_WHEEL_SLOTS],
						&entry->expiry_link);
}

/* entry is being removed from the table. */
void
lockfence_expiry_remove(LockfenceEntry *entry, uint32 hashcode)
{
	unlink_entry(partition_lists(hashcode % LOCKFENCE_NUM_PARTITIONS), entry);
	dlist_delete(&entry->member_link);
}

/*
 * Reclaim the expired leases of one partition whose ticks have passed: at
 * most one turn of the wheel, one slot per hold of the partition lock.
 * Returns how many entries it freed.
 */
static int
reclaim_partition(int partition, TimestampTz now)
{
	LockfencePartitionLists *lists = partition_lists(partition);
	LWLock	   *lock = lockfence_partition_lock_by_index(partition);
	int64		now_tick = tick_of(now);
	int			freed = 0;
	int		   *wake = NULL;
	int			maxwake = 0;
	bool		last_visited = false;

	/*
	 * Nothing to do when the slots are done up to the last tick and the
	 * current tick's slot is empty.  Read without the lock: a stale answer
	 * only means that a lease that ended in this very tick waits for the
	 * next visit.
	 */
	if (((volatile LockfencePartitionLists *) lists)->done_tick >= now_tick - 1)
	{
		volatile dlist_head *slot = &lists->wheel[now_tick % LOCKFENCE_WHEEL_SLOTS];

		/* an empty dlist_head points at itself (or is zeroed) */
		if (slot->head.next == NULL || slot->head.next == &slot->head)
			return 0;
	}

	for (int turn = 0; turn <= LOCKFENCE_WHEEL_SLOTS; turn++)
	{
		int64		tick;
		dlist_mutable_iter iter;
		int			nwake = 0;

		LWLockAcquire(lock, LW_EXCLUSIVE);
		if (lists->done_tick == 0 || lists->done_tick < now_tick - LOCKFENCE_WHEEL_SLOTS)
			lists->done_tick = now_tick - LOCKFENCE_WHEEL_SLOTS;
		if (lists->done_tick >= now_tick || (last_visited && turn > 0))
		{
			LWLockRelease(lock);
			break;
		}
		/*
		 * The slot of the tick after the last one done.  The current tick's
		 * slot is visited too, for the leases that ended in it so far, but it
		 * is not done until the tick has passed.
		 */
		tick = lists->done_tick + 1;
		last_visited = (tick == now_tick);
		dlist_foreach_modify(iter, &lists->wheel[tick % LOCKFENCE_WHEEL_SLOTS])
		{
			LockfenceEntry *entry = dlist_container(LockfenceEntry, expiry_link,
													iter.cur);
			uint32		hashcode;

			if (lockfence_entry_is_live(entry, now))
				continue;		/* a later turn's, or pinned */
			if (nwake + MAX_WAKE_PER_FREE > maxwake)
			{
				maxwake = Max(64, 2 * maxwake);
				wake = wake ? repalloc(wake, maxwake * sizeof(int)) :
					palloc(maxwake * sizeof(int));
			}
			hashcode = lockfence_key_hash(&entry->key);
			/* a hand-off moves the entry to another slot: iter allows it */
			lockfence_entry_expire(entry, hashcode, now, wake, &nwake);
			freed++;
		}
		if (tick < now_tick)
			lists->done_tick = tick;
		LWLockRelease(lock);
		lockfence_wake_procs(wake, nwake);
	}
	if (wake)
		pfree(wake);
	return freed;
}

/*
 * Move the far leases of one partition whose end has come within a turn
 * onto the wheel, looking at a slice of the far list: enough that every far
 * lease is looked at once per half turn.  A far lease that ended meanwhile
 * (the worker was stopped) is freed.  One hold of the partition lock.
 */
static void
bring_near_partition(int partition, TimestampTz now)
{
	LockfencePartitionLists *lists = partition_lists(partition);
	LWLock	   *lock = lockfence_partition_lock_by_index(partition);
	int			wake[MAX_WAKE_PER_FREE];
	int64		slice;

	/* read without the lock: a far lease added meanwhile waits a tick */
	if (((volatile LockfencePartitionLists *) lists)->nfar == 0)
		return;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	slice = lists->nfar / (LOCKFENCE_WHEEL_SLOTS / 2) + 1;
	for (int64 i = 0; i < slice && !dlist_is_empty(&lists->far); i++)
	{
		LockfenceEntry *entry = dlist_container(LockfenceEntry, expiry_link,
												dlist_head_node(&lists->far));
		uint32		hashcode = lockfence_key_hash(&entry->key);
		int			nwake = 0;

		if (!lockfence_entry_is_live(entry, now))
		{
			lockfence_entry_expire(entry, hashcode, now, wake, &nwake);
			if (nwake > 0)
			{
				/* rare: wake the new holder now, without the lock */
				LWLockRelease(lock);
				lockfence_wake_procs(wake, nwake);
				LWLockAcquire(lock, LW_EXCLUSIVE);
			}
			continue;
		}
		/* near now: onto the wheel; still far: to the back of the list */
		lockfence_expiry_track(entry, hashcode, now);
	}
	LWLockRelease(lock);
}

/* Every partition's slice of far leases (the reclaimer, every tick). */
void
lockfence_expiry_bring_near(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int p = 0; p < LOCKFENCE_NUM_PARTITIONS; p++)
		bring_near_partition(p, now);
}

/* Reclaim the expired leases of every partition, one partition at a time. */
int
lockfence_expiry_reclaim(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			freed = 0;

	for (int p = 0; p < LOCKFENCE_NUM_PARTITIONS; p++)
		freed += reclaim_partition(p, now);
	return freed;
}

/*---- The reclaimer worker ----*/

void
lockfence_expiry_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_PostmasterStart;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "lockfence");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "lockfence_reclaimer_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "lockfence lease reclaimer");
	snprintf(worker.bgw_type, BGW_MAXLEN, "lockfence lease reclaimer");
	RegisterBackgroundWorker(&worker);
}

/*
 * Every tick, free the leases that ended in it.  Holds one partition lock
 * at a time, for one wheel slot; sleeps on its latch in between.
 */
void
lockfence_reclaimer_main(Datum main_arg)
{
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	for (;;)
	{
		TimestampTz now;
		long		sleep_ms;

		if (ShutdownRequestPending)
			proc_exit(0);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		(void) lockfence_expiry_reclaim();
		lockfence_expiry_bring_near();
		/* keep durable tokens ahead of the hand-offs at commit */
		if (!RecoveryInProgress())
			(void) lockfence_token_try_reserve_ahead();

		/* until just after the current tick ends */
		now = GetCurrentTimestamp();
		sleep_ms = (LOCKFENCE_TICK_US - now % LOCKFENCE_TICK_US) / 1000 + 1;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms,
						 lockfence_compat_wait_event("LockfenceReclaimerMain",
													 &reclaimer_wait_event));
		ResetLatch(MyLatch);
	}
}
