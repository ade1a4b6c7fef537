/*-------------------------------------------------------------------------
 *
 * lockfence.h
 *	  Declarations shared by the modules of the lockfence extension.
 *
 * lockfence keeps leased named locks in a shared-memory hash table.  Every
 * grant of a lock carries a fence token: a bigint that strictly increases
 * over all grants for the whole life of the data directory.
 *
 * Module map (one concern per file):
 *	  lockfence.c		_PG_init, settings, hook installation
 *	  shmem.c			shared-memory layout and the locking protocol
 *	  fence_token.c		the token generator and its durable state file
 *	  token_band.c		a database's token band, carried across moves
 *	  lock_table.c		grant, release, renew and hand-off on hash entries
 *	  lock_wait.c		sleeping in the FIFO queue of a lock
 *	  backend_locks.c	session and transaction locks, and pins, of this backend
 *	  sql_api.c			SQL-callable functions and argument checks
 *	  fence_check.c		the fence-check trigger and LF001
 *	  row_locks.c		pessimistic row locks with bounded waits
 *	  lock_version.c	the optimistic lock_version trigger
 *	  lease_expiry.c	the timing wheel of lease ends and the reclaimer worker
 *	  views.c			the lockfence.locks and lockfence.stats views
 *	  role_quota.c		per-role slot accounting
 *	  compat.h			what differs between PostgreSQL 15 and 18
 *
 *-------------------------------------------------------------------------
 */
#ifndef LOCKFENCE_H
#define LOCKFENCE_H

#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "utils/timestamp.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"
#include "utils/relcache.h"

#include "compat.h"

/* Longest lock name accepted, in bytes (not counting the terminator). */
#define LOCKFENCE_NAME_MAXLEN		200

/*
 * Number of LWLock partitions of the lock table; must be a power of 2.
 * Walks over the table (the lock view) hold one partition lock at a time,
 * so this also bounds how long such a walk holds up the grants of one
 * partition: at 10,000,000 locks, 39,000 entries.
 */
#define LOCKFENCE_NUM_PARTITIONS	256

/* Smallest lockfence.max_locks: one entry per freelist of the dynahash. */
#define LOCKFENCE_MIN_MAX_LOCKS		32

/* Longest lease and wait timeout accepted (365 days), in microseconds. */
#define LOCKFENCE_MAX_INTERVAL_US	(INT64CONST(365) * USECS_PER_DAY)

/* A hand-off wakes at most the new holder and the new first waiter. */
#define MAX_WAKE_PER_FREE			2

/* No procno (used to terminate the waiter lists). */
#define LOCKFENCE_NO_PROC			(-1)

/* How a lock is held. */
typedef enum LockfenceScope
{
	LF_SCOPE_LEASE,				/* owned by its token until the lease ends */
	LF_SCOPE_SESSION,			/* lease that also ends when its backend exits */
	LF_SCOPE_XACT				/* held until the acquiring transaction ends */
} LockfenceScope;

/*
 * Hash key.  Zeroed before filling so that the bytes after the name's
 * terminator are always zero; the hash and compare functions only look at
 * the name up to its terminator, but dynahash copies the whole key.
 */
typedef struct LockfenceKey
{
	Oid			dbid;			/* locks are scoped per database */
	char		name[LOCKFENCE_NAME_MAXLEN + 1];
} LockfenceKey;

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
 * A fence token is (band << LOCKFENCE_SEQ_BITS) | sequence number: the
 * database's band (token_band.c) above the server's sequence number
 * (fence_token.c).  Bit 63 stays clear, so tokens are positive bigints.
 */
#define LOCKFENCE_SEQ_BITS			48
#define LOCKFENCE_MAX_BAND			((1U << 15) - 1)

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

/* lockfence.c: settings */
extern int	lockfence_max_locks;
extern int	lockfence_default_lease_ms;
extern int	lockfence_wait_timeout_ms;
extern int	lockfence_max_locks_per_role;
extern int	lockfence_token_block_size;

/* lockfence.c */
extern MemoryContext lockfence_session_context(void);

/* shmem.c */
extern LockfenceShared *lockfence_shared;
extern HTAB *lockfence_hash;
extern void lockfence_shmem_install_hooks(void);
extern void lockfence_check_loaded(void);
extern uint32 lockfence_key_hash(const LockfenceKey *key);
extern uint32 lockfence_key_hash_callback(const void *key, Size keysize);
extern int	lockfence_key_match_callback(const void *key1, const void *key2,
										 Size keysize);
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
extern void lockfence_report_role_quota(Oid role);

/* fence_token.c */
extern void lockfence_token_prepare(void);
extern bool lockfence_token_try_reserve_ahead(void);
extern uint64 lockfence_token_next(uint32 band);
extern bool lockfence_token_next_reserved(uint32 band, uint64 *token);

/* token_band.c */
extern uint32 lockfence_token_band(void);
extern bool lockfence_token_band_known(uint32 *band);

/*
 * Who presents a token.  A lease belongs to the role that took it; roles
 * with that role's privileges (pg_has_role(..., 'USAGE')) and the admin may
 * act on it too, and nobody else: to any other role a token behaves as a
 * wrong one.  Membership is read from the catalogs, which must not happen
 * under a partition lock, so the lock table accepts only role and
 * trusted_role, and reports any other holder's role in undecided_role; the
 * caller decides it with lockfence_caller_admits() and retries.  A NULL
 * caller is this backend's own bookkeeping, which may act on every lease.
 */
typedef struct LockfenceCaller
{
	Oid			role;			/* GetUserId() when the call began */
	Oid			trusted_role;	/* another role the caller may act for */
	Oid			undecided_role; /* out: a holder's role not yet decided */
} LockfenceCaller;

/* lock_table.c */
typedef enum LockfenceAttempt
{
	LF_ATTEMPT_GRANTED,			/* the caller now holds the lock */
	LF_ATTEMPT_BUSY,			/* held by a live holder, caller not queued */
	LF_ATTEMPT_QUEUED,			/* caller queued behind the holder */
	LF_ATTEMPT_SELF_HELD,		/* this backend holds it as a transaction lock
								 * or session lease */
	LF_ATTEMPT_SELF_PINNED,		/* this transaction pinned the live lease */
	LF_ATTEMPT_OVER_QUOTA		/* the role holds lockfence.max_locks_per_role */
} LockfenceAttempt;

extern void lockfence_make_key(LockfenceKey *key, const char *name, int len);
extern LockfenceAttempt lockfence_try_grant(const LockfenceKey *key, uint32 hashcode,
											LockfenceScope scope, int64 lease_us,
											bool queue_if_busy, TimestampTz deadline,
											uint64 *token, TimestampTz *wake_at);
extern bool lockfence_release_token(const LockfenceKey *key, uint32 hashcode,
									uint64 token, bool from_xact_end,
									LockfenceCaller *caller);
extern bool lockfence_renew_token(const LockfenceKey *key, uint32 hashcode,
								  uint64 token, int64 lease_us,
								  LockfenceCaller *caller);
extern bool lockfence_token_is_held(const LockfenceKey *key, uint32 hashcode,
									uint64 token, LockfenceCaller *caller);
extern bool lockfence_force_release_key(const LockfenceKey *key, uint32 hashcode);
extern LockfenceEntry *lockfence_pin_token(const LockfenceKey *key,
										   uint32 hashcode, uint64 token,
										   LockfenceCaller *caller,
										   uint64 *holder_token,
										   Oid *holder_role);
extern void lockfence_unpin_entry(LockfenceEntry *entry, uint32 hashcode,
								  uint64 token);
extern bool lockfence_entry_is_live(const LockfenceEntry *entry, TimestampTz now);
extern bool lockfence_first_waiter_must_watch(const LockfenceEntry *entry);
extern TimestampTz lockfence_waiter_wake_at(const LockfenceEntry *entry,
											int procno);
extern void lockfence_entry_free(LockfenceEntry *entry, uint32 hashcode,
								 TimestampTz now, int *wake, int *nwake);
extern void lockfence_entry_expire(LockfenceEntry *entry, uint32 hashcode,
								   TimestampTz now, int *wake, int *nwake);
extern void lockfence_waiter_dequeue(LockfenceEntry *entry, int procno);
extern void lockfence_wake_procs(const int *procnos, int n);

/* lease_expiry.c */
extern void lockfence_expiry_init(void);
extern void lockfence_expiry_add(LockfenceEntry *entry, uint32 hashcode);
extern void lockfence_expiry_track(LockfenceEntry *entry, uint32 hashcode,
									TimestampTz now);
extern void lockfence_expiry_remove(LockfenceEntry *entry, uint32 hashcode);
extern int	lockfence_expiry_reclaim(void);
extern void lockfence_expiry_bring_near(void);
extern void lockfence_expiry_register_worker(void);

/* lock_wait.c */
extern LockfenceAttempt lockfence_acquire_or_wait(const LockfenceKey *key,
												  uint32 hashcode,
												  LockfenceScope scope,
												  int64 lease_us,
												  int64 timeout_us,
												  uint64 *token);
extern void lockfence_abandon_wait(void);

/* backend_locks.c */
extern void lockfence_remember_reserve(void);
extern void lockfence_remember(const LockfenceKey *key, uint32 hashcode,
							   uint64 token, LockfenceScope scope);
extern void lockfence_forget(uint64 token);
extern bool lockfence_pinned_token(const LockfenceKey *key, uint32 hashcode,
								   uint64 *token);
extern bool lockfence_pin_for_xact(const LockfenceKey *key, uint32 hashcode,
								   uint64 token, LockfenceCaller *caller,
								   uint64 *holder_token, Oid *holder_role);

/* sql_api.c */
extern bool lockfence_is_admin(void);
extern bool lockfence_may_act_for(Oid role);
extern void lockfence_caller_init(LockfenceCaller *caller);
extern bool lockfence_caller_admits(LockfenceCaller *caller);
extern int64 lockfence_timeout_usecs(const Interval *span);

/* fence_check.c */
#define ERRCODE_LOCKFENCE_STALE_TOKEN	MAKE_SQLSTATE('L','F','0','0','1')
extern void lockfence_check_name_length(int len);
extern void lockfence_fence_token(const LockfenceKey *key, uint32 hashcode,
								  int64 token, Relation rel);

#endif							/* LOCKFENCE_H */
