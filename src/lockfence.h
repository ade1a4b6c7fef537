/*-------------------------------------------------------------------------
 *
 * lockfence.h
 *	  What every module of the lockfence extension may use: lock keys, the
 *	  operations of the lock table (each takes a lock's key), settings and
 *	  the SQL-facing helpers.  The lock table's shared state itself is in
 *	  lock_table_internal.h, for the modules that keep it.
 *
 * lockfence keeps leased named locks in a shared-memory hash table.  Every
 * grant of a lock carries a fence token: a bigint that strictly increases
 * over all grants for the whole life of the data directory.
 *
 * Module map (one concern per file):
 *	  lockfence.c		_PG_init, settings, hook installation
 *	  lock_key.c		a lock's key: built, checked and hashed
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
 * An acquire, a fenced UPDATE and its commit: sql_api.c takes the lock with
 * lock_table.c; the trigger, fence_check.c, has backend_locks.c pin the
 * lease in lock_table.c; at commit backend_locks.c drops the pin there.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LOCKFENCE_H
#define LOCKFENCE_H

#include "datatype/timestamp.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

#include "compat.h"

/* Longest lock name accepted, in bytes (not counting the terminator). */
#define LOCKFENCE_NAME_MAXLEN		200

/* Smallest lockfence.max_locks: one entry per freelist of the dynahash. */
#define LOCKFENCE_MIN_MAX_LOCKS		32

/* Longest lease and wait timeout accepted (365 days), in microseconds. */
#define LOCKFENCE_MAX_INTERVAL_US	(INT64CONST(365) * USECS_PER_DAY)

/*
 * A fence token is (band << LOCKFENCE_SEQ_BITS) | sequence number: the
 * database's band (token_band.c) above the server's sequence number
 * (fence_token.c).  Bit 63 stays clear, so tokens are positive bigints.
 */
#define LOCKFENCE_SEQ_BITS			48
#define LOCKFENCE_MAX_BAND			((1U << 15) - 1)

/* How a lock is held. */
typedef enum LockfenceScope
{
	LF_SCOPE_LEASE,				/* owned by its token until the lease ends */
	LF_SCOPE_SESSION,			/* lease that also ends when its backend exits */
	LF_SCOPE_XACT				/* held until the acquiring transaction ends */
} LockfenceScope;

/*
 * A lock's key, built by lock_key.c only.  The bytes after the name's
 * terminator are always zero; the hash and compare functions only look at
 * the name up to its terminator, but dynahash copies the whole key.
 */
typedef struct LockfenceKey
{
	Oid			dbid;			/* locks are scoped per database */
	char		name[LOCKFENCE_NAME_MAXLEN + 1];
} LockfenceKey;

/* lockfence.c: settings */
extern int	lockfence_max_locks;
extern int	lockfence_default_lease_ms;
extern int	lockfence_wait_timeout_ms;
extern int	lockfence_max_locks_per_role;
extern int	lockfence_token_block_size;

/* lockfence.c */
extern MemoryContext lockfence_session_context(void);

/* lock_key.c */
extern void lockfence_check_name_length(int len);
extern void lockfence_key_start(LockfenceKey *key, int *len);
extern void lockfence_key_append(LockfenceKey *key, int *len,
								 const char *bytes, int n);
extern uint32 lockfence_key_finish(const LockfenceKey *key, int len);
extern uint32 lockfence_make_key(LockfenceKey *key, const char *name, int len);
extern uint32 lockfence_key_hash(const LockfenceKey *key);
extern uint32 lockfence_key_hash_callback(const void *key, Size keysize);
extern int	lockfence_key_match_callback(const void *key1, const void *key2,
										 Size keysize);

/* shmem.c */
extern void lockfence_shmem_install_hooks(void);
extern void lockfence_check_loaded(void);



/* token_band.c */
extern uint32 lockfence_token_band(void);

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
extern LockfenceAttempt lockfence_check_turn(const LockfenceKey *key,
											 uint32 hashcode,
											 TimestampTz deadline,
											 uint64 *token,
											 TimestampTz *wake_at);
extern void lockfence_give_up_turn(const LockfenceKey *key, uint32 hashcode);

/* role_quota.c, lease_expiry.c: what the SQL functions and _PG_init need */
extern void lockfence_report_role_quota(Oid role);
extern int	lockfence_expiry_reclaim(void);
extern void lockfence_expiry_register_worker(void);

/* views.c */
extern void lockfence_count_fence_rejection(bool lease_mode);

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
extern void lockfence_pin_or_reject(const LockfenceKey *key, uint32 hashcode,
									int64 token, Relation rel);
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

#endif							/* LOCKFENCE_H */
