/*-------------------------------------------------------------------------
 *
 * lock_table_internal.h
 *	  The lock table's shared state, for the modules that keep it: shmem.c,
 *	  lock_table.c, lease_expiry.c, fence_token.c, token_band.c,
 *	  backend_locks.c (pins), role_quota.c and views.c.  Every other module
 *	  uses the operations of lockfence.h, which take a lock's key.
 *
 * The locking protocol for everything here is written once, in the header
 * comment of shmem.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LOCK_TABLE_INTERNAL_H
#define LOCK_TABLE_INTERNAL_H

#include "lib/ilist.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"

#include "lockfence.h"

/*
 * Number of LWLock partitions of the lock table; must be a power of 2.
 * Walks over the table (the lock view) hold one partition lock at a time,
 * so this also bounds how long such a walk holds up the grants of one
 * partition: at 10,000,000 locks, 39,000 entries.
 */
#define LOCKFENCE_NUM_PARTITIONS	256


/* A hand-off wakes at most the new holder and the new first waiter. */
#define MAX_WAKE_PER_FREE			2

/* No procno (used to terminate the waiter lists). */
#define LOCKFENCE_NO_PROC			(-1)


/*
 * One lock.  An entry exists while the lock is held or has waiters; an entry
 * whose token is 0 is free and may be removed by whoever holds its partition
 * lock exclusively.  Waiters are linked through the waiter slots (see
 * LockfenceWaiter) in FIFO order.
 *
 * A pinned lease (pins > 0) is held by a transaction whose write the fence
 * trigger accepted: it does not expire, and a release or force-release only
 * sets release_pending, until the last pin is dropped at transaction end.
 */
typedef struct LockfenceEntry
{
	LockfenceKey key;			/* hash key; must be first */
	/* what every check of a token reads, together, after the key */
	uint64		token;			/* holder's fence token, 0 when free */
	TimestampTz expires_at;		/* DT_NOEND for transaction locks */
	LockfenceScope scope;
	int			pins;			/* writing transactions that pinned the lease */
	bool		release_pending;	/* released while pinned: free at unpin */
	TimestampTz acquired_at;
	int			holder_pid;		/* backend that was granted the lock */
	int			holder_procno;
	Oid			holder_role;	/* charged for this slot (role_quota.c) */
	int			waiters_head;	/* procno of the first waiter */
	int			waiters_tail;	/* procno of the last waiter */
	int			nwaiters;
	dlist_node	expiry_link;	/* on one list of its partition (lease_expiry.c) */
	bool		on_far_list;	/* that list is the partition's far list */
	dlist_node	member_link;	/* on its partition's members list */
	uint64		member_seq;		/* its place there: creation order */
} LockfenceEntry;

/*
 * A backend's waiting slot, indexed by its procno.  A backend waits for at
 * most one lock at a time.  Fields are protected by the partition lock of
 * the entry the backend waits for.
 */
typedef struct LockfenceWaiter
{
	int			prev;			/* neighbours in the entry's queue */
	int			next;
	bool		queued;			/* in some entry's queue */
	bool		granted;		/* set by the backend that handed the lock */
	uint64		token;			/* valid when granted */
	uint32		band;			/* of its database's tokens (token_band.c) */
	int			pid;
	Oid			role;
	LockfenceScope scope;		/* what the waiter asked for */
	int64		lease_us;
	TimestampTz deadline;		/* end of its wait, 0 for none */
	LockfenceEntry *entry;		/* the entry whose queue holds this slot */
	dlist_node	view_cursor;	/* where its lock-view walk resumes (views.c) */
} LockfenceWaiter;

/* Counters kept per partition, updated under the partition lock. */
typedef struct LockfencePartitionStats
{
	uint64		grants;
	uint64		releases;
	uint64		renewals;
	uint64		expiries;
	uint64		waits;
	uint64		wait_timeouts;
} LockfencePartitionStats;

/* Fence token generator state (fence_token.c). */
typedef struct LockfenceTokenState
{
	pg_atomic_uint64 next_seq;	/* next sequence number to hand out */
	pg_atomic_uint64 seq_limit; /* first sequence number not yet made durable */
	pg_atomic_uint32 band_generation;	/* moved by advance_tokens() */
	bool		ready;			/* state file read and bumped since startup */
} LockfenceTokenState;

/*
 * The token state is written by every grant, and each partition's counters
 * by every grant and release in that partition, from every CPU: each gets a
 * cache line of its own, so that they do not slow down readers of their
 * neighbours (false sharing).
 */
typedef union LockfenceTokenStatePadded
{
	LockfenceTokenState state;
	char		pad[PG_CACHE_LINE_SIZE];
} LockfenceTokenStatePadded;

typedef union LockfencePartitionStatsPadded
{
	LockfencePartitionStats counters;
	char		pad[PG_CACHE_LINE_SIZE];
} LockfencePartitionStatsPadded;

/*
 * The lists of one partition (lease_expiry.c): its leases by the tick in
 * which they end, on a wheel of LOCKFENCE_WHEEL_SLOTS slots, and its other
 * entries; and, for the lock view, all its entries in the order they were
 * created, which never changes while they exist.  Changed under the
 * partition lock.
 */
#define LOCKFENCE_TICK_US		INT64CONST(100000)	/* 100 ms */
#define LOCKFENCE_WHEEL_SLOTS	512 /* one turn: 51.2 s */

typedef struct LockfencePartitionLists
{
	dlist_head	no_end;			/* transaction locks, new entries */
	dlist_head	far;			/* leases ending after one turn or more */
	int64		nfar;			/* entries on far */
	int64		done_tick;		/* the wheel's slots are done up to here */
	dlist_head	wheel[LOCKFENCE_WHEEL_SLOTS];
	dlist_head	members;		/* every entry, oldest first; view cursors */
	uint64		next_member_seq;	/* member_seq of the next entry */
} LockfencePartitionLists;

typedef union LockfencePartitionListsPadded
{
	LockfencePartitionLists lists;
	char		pad[CACHELINEALIGN(sizeof(LockfencePartitionLists))];
} LockfencePartitionListsPadded;

/*
 * The whole shared state, allocated once by shmem.c (cache-line aligned, as
 * all shared memory is).
 */
typedef struct LockfenceShared
{
	LockfenceTokenStatePadded tokens;
	LockfencePartitionStatsPadded stats[LOCKFENCE_NUM_PARTITIONS];
	/* set at startup; backends use their own copies (shmem.c) */
	LWLockPadded *locks;		/* the partition locks, then the token lock */
	int			nwaiter_slots;
	/* rare events */
	pg_atomic_uint64 monotonic_rejections;	/* fence trigger, counted */
	pg_atomic_uint64 lease_rejections;	/* without a lock */
	LockfencePartitionListsPadded lists[LOCKFENCE_NUM_PARTITIONS];
	LockfenceWaiter waiters[FLEXIBLE_ARRAY_MEMBER];
} LockfenceShared;

/* shmem.c */
extern LockfenceShared *lockfence_shared;
extern HTAB *lockfence_hash;
extern LWLock *lockfence_partition_lock(uint32 hashcode);
extern LWLock *lockfence_partition_lock_by_index(int partition);
extern LWLock *lockfence_token_lock(void);
extern LWLock *lockfence_role_lock(void);
extern LockfencePartitionStats *lockfence_partition_stats(uint32 hashcode);
extern int	lockfence_my_procno(void);
extern int	lockfence_waiter_slots(void);

/* role_quota.c */
extern Size lockfence_role_quota_shmem_size(void);
extern void lockfence_role_quota_shmem_init(void);
extern bool lockfence_role_charge(Oid role, bool enforce);
extern void lockfence_role_uncharge(Oid role);

/* fence_token.c */
extern void lockfence_refuse_grant_in_recovery(void);
extern void lockfence_token_prepare(void);
extern bool lockfence_token_try_reserve_ahead(void);
extern uint64 lockfence_token_next(uint32 band);
extern bool lockfence_token_next_reserved(uint32 band, uint64 *token);

/* lock_table.c: operations on an entry, partition lock held */
extern LockfenceEntry *lockfence_pin_token(const LockfenceKey *key,
										   uint32 hashcode, uint64 token,
										   LockfenceCaller *caller,
										   uint64 *holder_token,
										   Oid *holder_role);
extern void lockfence_unpin_entry(LockfenceEntry *entry, uint32 hashcode,
								  uint64 token);
extern bool lockfence_entry_is_live(const LockfenceEntry *entry, TimestampTz now);
extern void lockfence_entry_expire(LockfenceEntry *entry, uint32 hashcode,
								   TimestampTz now, int *wake, int *nwake);
extern void lockfence_wake_procs(const int *procnos, int n);

/* lease_expiry.c */
extern void lockfence_expiry_init(void);
extern void lockfence_expiry_add(LockfenceEntry *entry, uint32 hashcode);
extern void lockfence_expiry_track(LockfenceEntry *entry, uint32 hashcode,
									TimestampTz now);
extern void lockfence_expiry_remove(LockfenceEntry *entry, uint32 hashcode);
extern void lockfence_expiry_bring_near(void);

#endif							/* LOCK_TABLE_INTERNAL_H */
