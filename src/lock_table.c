/*-------------------------------------------------------------------------
 *
 * lock_table.c
 *	  Grant, release, renew and hand-off on entries of the lock table.
 *
 * Every function here follows the protocol stated in shmem.c: it takes the
 * partition lock of the key's hash code, looks at or changes the entry, and
 * sets the latches of the backends it handed the lock to only after
 * releasing the partition lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/timestamp.h"

#include "lock_table_internal.h"

static void waiter_dequeue(LockfenceEntry *entry, int procno);
static bool first_waiter_must_watch(const LockfenceEntry *entry);
static TimestampTz waiter_wake_at(const LockfenceEntry *entry, int procno);
static void entry_free(LockfenceEntry *entry, uint32 hashcode,
					   TimestampTz now, int *wake, int *nwake);

/*
 * Held by someone: a transaction lock, a pinned lease, or a lease that has
 * not run out.  A live entry may be being released (release_pending).
 */
bool
lockfence_entry_is_live(const LockfenceEntry *entry, TimestampTz now)
{
	if (entry->token == 0)
		return false;
	if (entry->scope == LF_SCOPE_XACT || entry->pins > 0)
		return true;
	return now < entry->expires_at;
}

/*
 * May caller act on a lease held by holder_role?  Decides only what needs no
 * catalog access (see LockfenceCaller); partition lock held.
 */
static bool
caller_may_act(LockfenceCaller *caller, Oid holder_role)
{
	if (caller == NULL || holder_role == caller->role ||
		holder_role == caller->trusted_role)
		return true;
	caller->undecided_role = holder_role;
	return false;
}

/* token is the live holder, no release is pending, and caller may use it. */
static bool
entry_held_by(const LockfenceEntry *entry, uint64 token, TimestampTz now,
			  LockfenceCaller *caller)
{
	return entry != NULL && entry->token == token &&
		!entry->release_pending && lockfence_entry_is_live(entry, now) &&
		caller_may_act(caller, entry->holder_role);
}

/* No holder: the fields of a new entry, or of one left free with waiters. */
static void
entry_clear_holder(LockfenceEntry *entry)
{
	entry->token = 0;
	entry->holder_role = InvalidOid;
	entry->holder_pid = 0;
	entry->holder_procno = LOCKFENCE_NO_PROC;
	entry->pins = 0;
	entry->release_pending = false;
}

/*
 * Make (pid, procno) the holder with a new token of the given band (that of
 * the database: token_band.c), charging the slot to role.
 * A grant to the calling request itself (for_self) may write the token
 * state file and so raise an error; a hand-off to a waiter takes a token
 * from the durable reserve only.  Returns 0, changing nothing, when
 * enforce_quota is set and role is at its lockfence.max_locks_per_role, or
 * when a hand-off finds the reserve empty.  Partition lock held.
 */
static uint64
entry_grant(LockfenceEntry *entry, uint32 hashcode, int pid, int procno,
			Oid role, uint32 band, bool enforce_quota, bool for_self,
			LockfenceScope scope, int64 lease_us, TimestampTz now)
{
	uint64		token;

	/* the only steps that can fail; nothing is changed before them */
	if (for_self)
		token = lockfence_token_next(band);
	else if (!lockfence_token_next_reserved(band, &token))
		return 0;
	if (!lockfence_role_charge(role, enforce_quota))
		return 0;
	if (entry->token != 0)
		lockfence_role_uncharge(entry->holder_role);
	entry->holder_role = role;
	entry->token = token;
	entry->holder_pid = pid;
	entry->holder_procno = procno;
	entry->scope = scope;
	entry->pins = 0;
	entry->release_pending = false;
	entry->acquired_at = now;
	entry->expires_at = (scope == LF_SCOPE_XACT) ? DT_NOEND : now + lease_us;
	lockfence_expiry_track(entry, hashcode, now);
	lockfence_partition_stats(hashcode)->grants++;
	return token;
}

static void
waiter_enqueue(LockfenceEntry *entry, int procno)
{
	LockfenceWaiter *w = &lockfence_shared->waiters[procno];

	w->prev = entry->waiters_tail;
	w->next = LOCKFENCE_NO_PROC;
	if (entry->waiters_tail == LOCKFENCE_NO_PROC)
		entry->waiters_head = procno;
	else
		lockfence_shared->waiters[entry->waiters_tail].next = procno;
	entry->waiters_tail = procno;
	entry->nwaiters++;
	w->entry = entry;
	w->queued = true;
}

static void
waiter_dequeue(LockfenceEntry *entry, int procno)
{
	LockfenceWaiter *w = &lockfence_shared->waiters[procno];

	Assert(w->queued && w->entry == entry);
	if (w->prev == LOCKFENCE_NO_PROC)
		entry->waiters_head = w->next;
	else
		lockfence_shared->waiters[w->prev].next = w->next;
	if (w->next == LOCKFENCE_NO_PROC)
		entry->waiters_tail = w->prev;
	else
		lockfence_shared->waiters[w->next].prev = w->prev;
	w->prev = w->next = LOCKFENCE_NO_PROC;
	w->queued = false;
	entry->nwaiters--;
	/* charged when it queued; a hand-off charges it again as holder */
	lockfence_role_uncharge(w->role);
}

/*
 * Must the first waiter be woken to watch the holder's lease?  A waiter that
 * was not first sleeps until its own wait ends (lock_wait.c); as first
 * waiter it must also wake when the lease ends, to take the lock.  Only a
 * lease that can end before the waiter's wait does needs that: a
 * transaction lock or a pinned lease cannot run out (their release or unpin
 * wakes the first waiter), and a waiter whose wait ends first just times
 * out.  Skipping the other wake-ups saves every hand-off on a busy lock a
 * context switch.  Partition lock held.
 */
static bool
first_waiter_must_watch(const LockfenceEntry *entry)
{
	const LockfenceWaiter *w;

	if (entry->waiters_head == LOCKFENCE_NO_PROC || entry->token == 0)
		return false;
	if (entry->scope == LF_SCOPE_XACT || entry->pins > 0)
		return false;
	w = &lockfence_shared->waiters[entry->waiters_head];
	return w->deadline == 0 || entry->expires_at < w->deadline;
}

/*
 * When must the waiter procno wake up by itself (0: only when woken)?  At
 * its own deadline, or, as first waiter that must watch the holder's lease,
 * when that lease ends.  Partition lock held.
 */
static TimestampTz
waiter_wake_at(const LockfenceEntry *entry, int procno)
{
	if (entry->waiters_head == procno &&
		first_waiter_must_watch(entry))
		return entry->expires_at;
	return lockfence_shared->waiters[procno].deadline;
}

/*
 * Hand the lock to its first waiter, and wake the new first waiter if it
 * must watch the new holder's lease.
 */
static void
grant_to_first_waiter(LockfenceEntry *entry, uint32 hashcode, TimestampTz now,
					  int *wake, int *nwake)
{
	int			procno = entry->waiters_head;
	LockfenceWaiter *w = &lockfence_shared->waiters[procno];
	uint64		token;

	token = entry_grant(entry, hashcode, w->pid, procno, w->role, w->band,
						false, procno == lockfence_my_procno(), w->scope,
						w->lease_us, now);
	if (token == 0)
	{
		/*
		 * The durable token reserve is used up, and this may be a commit
		 * or an exit, where writing the state file must not be tried: leave
		 * the lock free and wake its first waiter, which takes it in its
		 * own request (lock_wait.c).
		 */
		if (entry->token != 0)
			lockfence_role_uncharge(entry->holder_role);
		entry_clear_holder(entry);
		lockfence_expiry_track(entry, hashcode, now);
		wake[(*nwake)++] = procno;
		return;
	}
	waiter_dequeue(entry, procno);
	w->token = token;
	w->granted = true;
	wake[(*nwake)++] = procno;
	if (first_waiter_must_watch(entry))
		wake[(*nwake)++] = entry->waiters_head;
}

/*
 * The holder is gone (released, expired, force-released): hand the lock to
 * the first waiter, or remove the entry when nobody waits.  Waiters whose
 * own wait has ended are taken out of the queue instead: a waiter that is
 * late to notice its timeout (paused, say) must not be handed a lock it
 * has given up on.  Their own timers wake them.  The entry must not be used
 * after this returns.
 */
static void
entry_free(LockfenceEntry *entry, uint32 hashcode, TimestampTz now,
		   int *wake, int *nwake)
{
	while (entry->nwaiters > 0)
	{
		int			first = entry->waiters_head;
		TimestampTz deadline = lockfence_shared->waiters[first].deadline;

		if (deadline == 0 || now < deadline)
			break;
		waiter_dequeue(entry, first);
		lockfence_partition_stats(hashcode)->wait_timeouts++;
	}

	if (entry->nwaiters > 0)
		grant_to_first_waiter(entry, hashcode, now, wake, nwake);
	else
	{
		if (entry->token != 0)
			lockfence_role_uncharge(entry->holder_role);
		lockfence_expiry_remove(entry, hashcode);
		hash_search_with_hash_value(lockfence_hash, &entry->key, hashcode,
									HASH_REMOVE, NULL);
	}
}

/*
 * An entry found not live: count the end of its holder's lease, if it had
 * one, and free it (entry_free).  Partition lock held exclusively.
 */
void
lockfence_entry_expire(LockfenceEntry *entry, uint32 hashcode,
					   TimestampTz now, int *wake, int *nwake)
{
	Assert(!lockfence_entry_is_live(entry, now));
	if (entry->token != 0)
		lockfence_partition_stats(hashcode)->expiries++;
	entry_free(entry, hashcode, now, wake, nwake);
}

/* Set the latches of backends handed a lock; call without LWLocks held. */
void
lockfence_wake_procs(const int *procnos, int n)
{
	for (int i = 0; i < n; i++)
		SetLatch(&GetPGProcByNumber(procnos[i])->procLatch);
}

static void
report_table_full(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("lockfence lock table is full"),
			 errdetail("All %d lock slots are in use.", lockfence_max_locks),
			 errhint("Release locks, or increase \"lockfence.max_locks\" and restart the server.")));
}

/*
 * Take the lock for this backend if it is free.  Otherwise report who has it
 * and, when queue_if_busy, link this backend into the lock's FIFO queue and
 * set *wake_at (see waiter_wake_at); the caller then sleeps in
 * lockfence_acquire_or_wait() without taking the partition lock again.
 */
LockfenceAttempt
lockfence_try_grant(const LockfenceKey *key, uint32 hashcode,
					LockfenceScope scope, int64 lease_us,
					bool queue_if_busy, TimestampTz deadline, uint64 *token,
					TimestampTz *wake_at)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			myprocno = lockfence_my_procno();
	int			wake[MAX_WAKE_PER_FREE];
	int			nwake = 0;
	LockfenceEntry *entry;
	LockfenceAttempt result;
	TimestampTz now;
	bool		found;
	bool		pinned_here;
	uint64		pinned_token;
	uint32		band;

	/* work that may read a table or write a file: before the lock */
	band = lockfence_token_band();
	lockfence_token_prepare();
	pinned_here = lockfence_pinned_token(key, hashcode, &pinned_token);

	LWLockAcquire(lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(lockfence_hash, key, hashcode,
										HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		/*
		 * The table is full: free the leases that ended (in case the
		 * reclaimer is behind; it costs what has ended, not the table's
		 * size), then try once more.
		 */
		LWLockRelease(lock);
		(void) lockfence_expiry_reclaim();
		LWLockAcquire(lock, LW_EXCLUSIVE);
		entry = hash_search_with_hash_value(lockfence_hash, key, hashcode,
											HASH_ENTER_NULL, &found);
		if (entry == NULL)
		{
			LWLockRelease(lock);
			report_table_full();
		}
	}
	if (!found)
	{
		entry_clear_holder(entry);
		entry->waiters_head = entry->waiters_tail = LOCKFENCE_NO_PROC;
		entry->nwaiters = 0;
		lockfence_expiry_add(entry, hashcode);
	}

	now = GetCurrentTimestamp();
	if (!lockfence_entry_is_live(entry, now))
	{
		if (entry->token != 0)
			lockfence_partition_stats(hashcode)->expiries++;
		if (entry->nwaiters == 0)
		{
			*token = entry_grant(entry, hashcode, MyProcPid, myprocno,
								 GetUserId(), band, true, true, scope,
								 lease_us, now);
			if (*token == 0)
			{
				/* over quota: leave nothing behind, not even an empty entry */
				entry_free(entry, hashcode, now, wake, &nwake);
				LWLockRelease(lock);
				Assert(nwake == 0);
				return LF_ATTEMPT_OVER_QUOTA;
			}
			LWLockRelease(lock);
			return LF_ATTEMPT_GRANTED;
		}
		/* the queue came first */
		grant_to_first_waiter(entry, hashcode, now, wake, &nwake);
	}

	/*
	 * A plain lease belongs to its token, not to the backend that took it:
	 * through a transaction pooler another client's statement may run here,
	 * and it waits for the lease like anyone else, as the lease ends by its
	 * token (from any connection) or by running out.  What could end only
	 * when this backend goes on, it never waits for: its own transaction
	 * lock or session lease, and a lease its transaction pinned.
	 */
	if (pinned_here && pinned_token == entry->token)
		result = LF_ATTEMPT_SELF_PINNED;
	else if (entry->holder_procno == myprocno && entry->holder_pid == MyProcPid &&
			 entry->scope != LF_SCOPE_LEASE)
		result = LF_ATTEMPT_SELF_HELD;
	else if (!queue_if_busy)
		result = LF_ATTEMPT_BUSY;
	else if (!lockfence_role_charge(GetUserId(), true))
		result = LF_ATTEMPT_OVER_QUOTA;	/* a waiter counts as it queues */
	else
	{
		LockfenceWaiter *me = &lockfence_shared->waiters[myprocno];

		me->pid = MyProcPid;
		me->role = GetUserId();
		me->band = band;
		me->scope = scope;
		me->lease_us = lease_us;
		me->deadline = deadline;
		me->granted = false;
		me->token = 0;
		waiter_enqueue(entry, myprocno);
		lockfence_partition_stats(hashcode)->waits++;
		*wake_at = waiter_wake_at(entry, myprocno);
		result = LF_ATTEMPT_QUEUED;
	}
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
	return result;
}

/*
 * Free the lock if token is its live holder.  Transaction locks are released
 * only at transaction end (from_xact_end) or by force.  A pinned lock is
 * freed when its last pin drops.
 */
bool
lockfence_release_token(const LockfenceKey *key, uint32 hashcode,
						uint64 token, bool from_xact_end,
						LockfenceCaller *caller)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			wake[MAX_WAKE_PER_FREE];
	int			nwake = 0;
	LockfenceEntry *entry;
	TimestampTz now;
	bool		released = false;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(lockfence_hash, key, hashcode,
										HASH_FIND, NULL);
	if (entry != NULL && entry->token == token)
	{
		now = GetCurrentTimestamp();
		if (!lockfence_entry_is_live(entry, now))
		{
			/* the lease ran out: the caller had lost the lock already */
			lockfence_entry_expire(entry, hashcode, now, wake, &nwake);
		}
		else if (entry->release_pending)
		{
			/* released already; it only waits for its pins to drop */
		}
		else if (!caller_may_act(caller, entry->holder_role))
		{
			/* another role's lease: as if the token were wrong */
		}
		else if (entry->scope == LF_SCOPE_XACT && !from_xact_end)
		{
			LWLockRelease(lock);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("lock \"%s\" is a transaction lock", key->name),
					 errdetail("Transaction locks are released when the transaction that took them ends.")));
		}
		else
		{
			lockfence_partition_stats(hashcode)->releases++;
			if (entry->pins > 0)
				entry->release_pending = true;
			else
				entry_free(entry, hashcode, now, wake, &nwake);
			released = true;
		}
	}
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
	return released;
}

/* Extend the lease of token's lock to now + lease_us. */
bool
lockfence_renew_token(const LockfenceKey *key, uint32 hashcode,
					  uint64 token, int64 lease_us, LockfenceCaller *caller)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			wake[MAX_WAKE_PER_FREE];
	int			nwake = 0;
	LockfenceEntry *entry;
	TimestampTz now;
	bool		renewed = false;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(lockfence_hash, key, hashcode,
										HASH_FIND, NULL);
	if (entry != NULL && entry->token == token)
	{
		now = GetCurrentTimestamp();
		if (!lockfence_entry_is_live(entry, now))
			lockfence_entry_expire(entry, hashcode, now, wake, &nwake);
		else if (entry->release_pending)
		{
			/* released already: too late to renew */
		}
		else if (!caller_may_act(caller, entry->holder_role))
		{
			/* another role's lease: as if the token were wrong */
		}
		else if (entry->scope == LF_SCOPE_XACT)
		{
			LWLockRelease(lock);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot renew transaction lock \"%s\"", key->name),
					 errdetail("Transaction locks have no lease; they are held until their transaction ends.")));
		}
		else
		{
			TimestampTz old_expiry = entry->expires_at;

			entry->expires_at = now + lease_us;
			lockfence_expiry_track(entry, hashcode, now);
			/* a shorter lease: the first waiter may have to re-arm its timer */
			if (entry->expires_at < old_expiry &&
				first_waiter_must_watch(entry))
				wake[nwake++] = entry->waiters_head;
			lockfence_partition_stats(hashcode)->renewals++;
			renewed = true;
		}
	}
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
	return renewed;
}

bool
lockfence_token_is_held(const LockfenceKey *key, uint32 hashcode, uint64 token,
						LockfenceCaller *caller)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	LockfenceEntry *entry;
	bool		held;

	LWLockAcquire(lock, LW_SHARED);
	entry = hash_search_with_hash_value(lockfence_hash, key, hashcode,
										HASH_FIND, NULL);
	held = entry_held_by(entry, token, GetCurrentTimestamp(), caller);
	LWLockRelease(lock);
	return held;
}

/* Free the lock whoever holds it.  False when it was not held. */
bool
lockfence_force_release_key(const LockfenceKey *key, uint32 hashcode)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			wake[MAX_WAKE_PER_FREE];
	int			nwake = 0;
	LockfenceEntry *entry;
	bool		released = false;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(lockfence_hash, key, hashcode,
										HASH_FIND, NULL);
	if (entry != NULL)
	{
		TimestampTz now = GetCurrentTimestamp();

		released = lockfence_entry_is_live(entry, now) &&
			!entry->release_pending;
		if (released)
			lockfence_partition_stats(hashcode)->releases++;
		else if (entry->token != 0 && !entry->release_pending)
			lockfence_partition_stats(hashcode)->expiries++;
		if (entry->pins > 0)
			entry->release_pending = true;	/* freed when unpinned */
		else
			entry_free(entry, hashcode, now, wake, &nwake);
	}
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
	return released;
}

/*
 * Pin token's lease for a writing transaction: from now until the matching
 * lockfence_unpin_entry() it cannot expire, pass to anyone else or be freed,
 * so the entry stays where it is.  Returns the entry, or NULL when token is
 * not the live holder or caller may not use it.  *holder_token and
 * *holder_role are the live holder's, or 0 and InvalidOid when it is free.
 */
LockfenceEntry *
lockfence_pin_token(const LockfenceKey *key, uint32 hashcode, uint64 token,
					LockfenceCaller *caller, uint64 *holder_token,
					Oid *holder_role)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			wake[MAX_WAKE_PER_FREE];
	int			nwake = 0;
	LockfenceEntry *entry;
	TimestampTz now;
	bool		pinned;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(lockfence_hash, key, hashcode,
										HASH_FIND, NULL);
	now = GetCurrentTimestamp();
	pinned = entry_held_by(entry, token, now, caller);
	if (pinned)
	{
		entry->pins++;
		*holder_token = token;
		*holder_role = entry->holder_role;
	}
	else
	{
		*holder_token = 0;
		*holder_role = InvalidOid;
		if (entry != NULL && lockfence_entry_is_live(entry, now))
		{
			if (!entry->release_pending)
			{
				*holder_token = entry->token;
				*holder_role = entry->holder_role;
			}
		}
		else if (entry != NULL)
		{
			/* an expired lease: reclaim it while we are here */
			lockfence_entry_expire(entry, hashcode, now, wake, &nwake);
		}
	}
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
	return pinned ? entry : NULL;
}

/*
 * Drop a pin at the end of the writing transaction.  The last pin frees a
 * lock that was released, or whose lease ran out, meanwhile.
 *
 * entry is what lockfence_pin_token() returned: a pinned entry is never
 * freed, so it needs no second hash lookup (which, in a large table, costs
 * cache misses on every fenced transaction).  The token check only guards
 * against a broken caller.
 */
void
lockfence_unpin_entry(LockfenceEntry *entry, uint32 hashcode, uint64 token)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			wake[MAX_WAKE_PER_FREE];
	int			nwake = 0;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	Assert(entry->token == token && entry->pins > 0);
	if (entry->token == token && entry->pins > 0 && --entry->pins == 0)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (entry->release_pending)
			entry_free(entry, hashcode, now, wake, &nwake);
		else if (!lockfence_entry_is_live(entry, now))
			lockfence_entry_expire(entry, hashcode, now, wake, &nwake);
		else if (first_waiter_must_watch(entry))
		{
			/* the first waiter slept without a lease timer while pinned */
			wake[nwake++] = entry->waiters_head;
		}
	}
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
}

/*---- The steps of a wait in a lock's queue (lock_wait.c sleeps between) ----*/

/*
 * Unlink this backend from the queue.  If it was the first waiter, the next
 * one may have to take over watching the lease; the lock is freed (handed
 * on) if the lease has already run out.  Partition lock held exclusively.
 */
static void
leave_queue(LockfenceEntry *entry, uint32 hashcode, int myprocno,
			TimestampTz now, int *wake, int *nwake)
{
	bool		was_first = (entry->waiters_head == myprocno);

	waiter_dequeue(entry, myprocno);
	if (!lockfence_entry_is_live(entry, now))
		lockfence_entry_expire(entry, hashcode, now, wake, nwake);
	else if (was_first && first_waiter_must_watch(entry))
		wake[(*nwake)++] = entry->waiters_head;
}

/*
 * After a sleep in the queue of key (see lockfence_try_grant): was the lock
 * handed to this backend, or may it take it now (the lease ran out while it
 * was first in line, or a hand-off left the lock free for it)?  Then
 * LF_ATTEMPT_GRANTED with *token set.  Did its wait end (deadline, 0 for
 * none)?  Then LF_ATTEMPT_BUSY, out of the queue.  Otherwise
 * LF_ATTEMPT_QUEUED, with *wake_at set to when to look again.
 */
LockfenceAttempt
lockfence_check_turn(const LockfenceKey *key, uint32 hashcode,
					 TimestampTz deadline, uint64 *token, TimestampTz *wake_at)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			myprocno = lockfence_my_procno();
	LockfenceWaiter *me = &lockfence_shared->waiters[myprocno];
	int			wake[MAX_WAKE_PER_FREE];
	int			nwake = 0;
	LockfenceEntry *entry;
	LockfenceAttempt result = LF_ATTEMPT_QUEUED;
	TimestampTz now;

	/* in case we take the lock ourselves below: tokens ready, no lock */
	lockfence_token_prepare();
	LWLockAcquire(lock, LW_EXCLUSIVE);
	now = GetCurrentTimestamp();
	entry = me->entry;
	if (me->granted)
	{
		/* handed over before our deadline, even if we notice it late */
		*token = me->token;
		me->granted = false;
		result = LF_ATTEMPT_GRANTED;
	}
	else if (!me->queued)
	{
		/* a releaser found our deadline passed and skipped us */
		result = LF_ATTEMPT_BUSY;
	}
	else if (deadline != 0 && now >= deadline)
	{
		leave_queue(entry, hashcode, myprocno, now, wake, &nwake);
		lockfence_partition_stats(hashcode)->wait_timeouts++;
		result = LF_ATTEMPT_BUSY;
	}
	else if (entry->waiters_head == myprocno &&
			 !lockfence_entry_is_live(entry, now))
	{
		/*
		 * The holder's lease ran out while we were first in line, or a
		 * hand-off left the lock free for us to take (fence_token.c).
		 */
		lockfence_entry_expire(entry, hashcode, now, wake, &nwake);
		Assert(me->granted);
		*token = me->token;
		me->granted = false;
		result = LF_ATTEMPT_GRANTED;
	}
	else
		*wake_at = waiter_wake_at(entry, myprocno);
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
	return result;
}

/*
 * After an error or at exit during a wait for key: leave its queue, or give
 * back the lock if it was handed to this backend but never reached the
 * caller.  No LWLock held.
 */
void
lockfence_give_up_turn(const LockfenceKey *key, uint32 hashcode)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			myprocno = lockfence_my_procno();
	LockfenceWaiter *me = &lockfence_shared->waiters[myprocno];
	int			wake[MAX_WAKE_PER_FREE];
	int			nwake = 0;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (me->queued)
		leave_queue(me->entry, hashcode, myprocno, GetCurrentTimestamp(),
					wake, &nwake);
	else if (me->granted)
	{
		LockfenceEntry *entry;

		me->granted = false;
		entry = hash_search_with_hash_value(lockfence_hash, key, hashcode,
											HASH_FIND, NULL);
		if (entry != NULL && entry->token == me->token)
		{
			lockfence_partition_stats(hashcode)->releases++;
			entry_free(entry, hashcode, GetCurrentTimestamp(), wake, &nwake);
		}
	}
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
}
