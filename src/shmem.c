/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared-memory layout of lockfence and the protocol for touching it.
 *
 * Shared state (allocated once per postmaster start, and again after every
 * crash-restart, which also forgets every lock):
 *
 *	- the lock table: a dynahash of LockfenceEntry keyed by (database, name),
 *	  created with a hard size of lockfence.max_locks entries and split into
 *	  LOCKFENCE_NUM_PARTITIONS partitions by the key's hash code;
 *	- LOCKFENCE_NUM_PARTITIONS partition LWLocks, one token LWLock and one
 *	  role LWLock, from the named tranche "lockfence";
 *	- one LockfenceWaiter slot per backend, indexed by procno;
 *	- the fence token generator (fence_token.c) and per-partition counters,
 *	  each in a cache line of its own;
 *	- per partition, the lists that hold every entry of the partition: a
 *	  timing wheel of lease ends and a list of the rest (lease_expiry.c);
 *	- per-role slot counters (role_quota.c), atomics; only giving a role its
 *	  first slot or taking back its last one takes the role lock.
 *
 * Locking protocol:
 *
 *	1. An entry, and the waiter slots linked into its queue, are read under
 *	   the entry's partition lock in shared mode and changed only under it
 *	   in exclusive mode.  This covers inserting and removing the entry, the
 *	   holder fields, the queue links, a waiter's granted/token fields, and
 *	   the partition's counters in LockfenceShared.stats.
 *
 *	2. A backend holds at most one partition lock at a time.  Walks over
 *	   the table (the reclaimer, the lock view) take one partition lock at a
 *	   time too, through the partition's own lists (lease_expiry.c), so no
 *	   request ever waits for work proportional to the whole table.  So
 *	   partition locks never deadlock.
 *
 *	3. The token lock is taken only to initialise the token generator or to
 *	   make a new block of tokens durable; it may be taken while holding
 *	   partition locks, never the other way round.  Handing out a token from
 *	   a durable block needs no lock: it is one atomic fetch-and-add.
 *
 *	3a. The role lock is taken only to give a role a counter slot or take it
 *	   back (role_quota.c); it may be taken while holding a partition lock,
 *	   and no other lock is taken while holding it.
 *
 *	4. A backend's own waiter slot fields that are not about a queue (pid,
 *	   scope, lease) are written by the owner before it links the slot into a
 *	   queue, under the partition lock; others read them under the same lock.
 *
 *	5. Nobody sleeps while holding an LWLock.  A waiter links its slot into
 *	   the queue, releases the partition lock and sleeps on its own latch.  A
 *	   backend that frees a lock with waiters hands it to the first waiter
 *	   directly (sets its token and granted flag) under the partition lock,
 *	   and sets the waiter's latch after releasing it.  A lock is therefore
 *	   never free while it has waiters, and arrivals cannot overtake them.
 *
 *	6. An expired lease is recognised by whoever looks at it (lazily); the
 *	   first waiter of a queue sleeps only until the holder's lease ends and
 *	   then takes the lock.  To free the slots of leases nobody looks at, the
 *	   reclaimer worker visits, every tick, the timing-wheel slot of leases
 *	   that ended in it (lease_expiry.c); a request that finds the table full
 *	   or its role at its quota does the same once itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/pg_bitutils.h"
#include "postmaster/autovacuum.h"
#include "postmaster/postmaster.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"

#include "lock_table_internal.h"

/* Largest segment of the lock table's bucket array (see below). */
#define LOCKFENCE_MAX_SEGMENT_BUCKETS	(1L << 16)

/*---- Shared state (pointers are process-local) ----*/

LockfenceShared *lockfence_shared = NULL;
HTAB	   *lockfence_hash = NULL;

/*
 * Copies of what LockfenceShared fixes at startup, read on every call: the
 * shared originals would share a cache line with data other CPUs write.
 */
static LWLockPadded *partition_locks = NULL;
static int	nwaiter_slots = 0;

/*---- Saved hook values ----*/

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Number of waiter slots: one per backend that can run SQL. */
static int
waiter_slot_count(void)
{
	return MaxBackends;
}

static Size
shared_struct_size(void)
{
	return add_size(offsetof(LockfenceShared, waiters),
					mul_size(waiter_slot_count(), sizeof(LockfenceWaiter)));
}

static Size
lockfence_shmem_size(void)
{
	return add_size(add_size(shared_struct_size(),
							 lockfence_role_quota_shmem_size()),
					hash_estimate_size(lockfence_max_locks,
									   sizeof(LockfenceEntry)));
}

static void
lockfence_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(lockfence_shmem_size());
	RequestNamedLWLockTranche("lockfence", LOCKFENCE_NUM_PARTITIONS + 2);
}

/*
 * Buckets per segment of the lock table.  dynahash finds a bucket through a
 * directory of segments; with its default of 256 buckets per segment, a
 * large table's directory (64 kB for a million slots) is itself one more
 * cache and TLB miss on every lookup.  Fewer, larger segments keep the
 * directory within a few cache lines.  Never more than the table's bucket
 * count (max_locks rounded up to a power of 2), so the buckets take exactly
 * the memory hash_estimate_size() reserved for them.
 */
static long
bucket_segment_size(void)
{
	long		nbuckets = pg_nextpower2_32((uint32) lockfence_max_locks);

	return Min(nbuckets, LOCKFENCE_MAX_SEGMENT_BUCKETS);
}

/*
 * Create or attach to the shared state.  Runs in the postmaster at startup
 * and after every crash-restart, so it resets the process-local pointers
 * first.
 */
static void
lockfence_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	lockfence_shared = NULL;
	lockfence_hash = NULL;
	partition_locks = NULL;
	nwaiter_slots = 0;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	lockfence_shared = ShmemInitStruct("lockfence", shared_struct_size(),
									   &found);
	if (!found)
	{
		int			nslots = waiter_slot_count();

		memset(lockfence_shared, 0, shared_struct_size());
		lockfence_shared->locks = GetNamedLWLockTranche("lockfence");
		pg_atomic_init_u64(&lockfence_shared->tokens.state.next_seq, 0);
		pg_atomic_init_u64(&lockfence_shared->tokens.state.seq_limit, 0);
		pg_atomic_init_u32(&lockfence_shared->tokens.state.band_generation, 0);
		pg_atomic_init_u64(&lockfence_shared->monotonic_rejections, 0);
		pg_atomic_init_u64(&lockfence_shared->lease_rejections, 0);
		lockfence_shared->tokens.state.ready = false;
		lockfence_shared->nwaiter_slots = nslots;
		for (int i = 0; i < nslots; i++)
		{
			lockfence_shared->waiters[i].prev = LOCKFENCE_NO_PROC;
			lockfence_shared->waiters[i].next = LOCKFENCE_NO_PROC;
		}
		lockfence_expiry_init();
	}
	partition_locks = lockfence_shared->locks;
	nwaiter_slots = lockfence_shared->nwaiter_slots;

	/*
	 * HASH_FIXED_SIZE makes max_locks a hard limit.  A partitioned table
	 * gives each of its 32 freelists at least one entry, so the limit is
	 * exact only for max_locks >= LOCKFENCE_MIN_MAX_LOCKS, the setting's
	 * minimum.
	 */
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(LockfenceKey);
	info.entrysize = sizeof(LockfenceEntry);
	info.hash = lockfence_key_hash_callback;
	info.match = lockfence_key_match_callback;
	info.num_partitions = LOCKFENCE_NUM_PARTITIONS;
	info.ssize = bucket_segment_size();
	lockfence_hash = ShmemInitHash("lockfence lock table",
								   lockfence_max_locks, lockfence_max_locks,
								   &info,
								   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE |
								   HASH_PARTITION | HASH_SEGMENT |
								   HASH_FIXED_SIZE);
	lockfence_role_quota_shmem_init();

	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
lockfence_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = lockfence_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = lockfence_shmem_startup;
}

/* Every SQL-callable function starts here. */
void
lockfence_check_loaded(void)
{
	if (lockfence_shared == NULL || lockfence_hash == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("lockfence must be loaded via \"shared_preload_libraries\""),
				 errhint("Add lockfence to \"shared_preload_libraries\" in postgresql.conf and restart the server.")));
}

LWLock *
lockfence_partition_lock(uint32 hashcode)
{
	return &partition_locks[hashcode % LOCKFENCE_NUM_PARTITIONS].lock;
}

LWLock *
lockfence_partition_lock_by_index(int partition)
{
	Assert(partition >= 0 && partition < LOCKFENCE_NUM_PARTITIONS);
	return &partition_locks[partition].lock;
}

LWLock *
lockfence_token_lock(void)
{
	return &partition_locks[LOCKFENCE_NUM_PARTITIONS].lock;
}

LWLock *
lockfence_role_lock(void)
{
	return &partition_locks[LOCKFENCE_NUM_PARTITIONS + 1].lock;
}

LockfencePartitionStats *
lockfence_partition_stats(uint32 hashcode)
{
	return &lockfence_shared->stats[hashcode % LOCKFENCE_NUM_PARTITIONS].counters;
}

/* Number of waiter slots, one per backend that can run SQL. */
int
lockfence_waiter_slots(void)
{
	return nwaiter_slots;
}

/* This backend's index into the waiter slots. */
int
lockfence_my_procno(void)
{
	int			procno = lockfence_compat_my_procno();

	if (procno < 0 || procno >= nwaiter_slots)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("lockfence locks cannot be used by this process")));
	return procno;
}
