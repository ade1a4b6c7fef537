/*-------------------------------------------------------------------------
 *
 * lock_wait.c
 *	  Sleeping in the FIFO queue of a lock until it is handed over.
 *
 * A waiter sleeps on its own latch; it never polls.  It is woken when:
 *	- a releasing backend hands it the lock (its slot's granted flag is set);
 *	- it became the first waiter, or the holder's lease changed, and the
 *	  lease can now end before the waiter's own wait does, so it must re-arm
 *	  its timer (lockfence_first_waiter_must_watch);
 *	- its timer fires: the first waiter's timer is set to the end of the
 *	  holder's lease, after which it takes the lock itself; every waiter's
 *	  timer is also capped by its own wait deadline;
 *	- an interrupt arrives (cancel, statement_timeout, terminate).
 *
 * An error or exit while queued (or after being handed the lock but before
 * returning it to the caller) is cleaned up by lockfence_abandon_wait(),
 * which the transaction-abort and backend-exit callbacks call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "lockfence.h"

/* The wait event of a wait in a lock's queue (PostgreSQL 17+). */
static uint32 lock_wait_event = 0;

/* The wait this backend is in, if any (for cleanup after an error). */
static bool wait_pending = false;
static LockfenceKey pending_key;
static uint32 pending_hashcode;

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

	lockfence_waiter_dequeue(entry, myprocno);
	if (!lockfence_entry_is_live(entry, now))
		lockfence_entry_expire(entry, hashcode, now, wake, nwake);
	else if (was_first && lockfence_first_waiter_must_watch(entry))
		wake[(*nwake)++] = entry->waiters_head;
}

/*
 * Sleep until the latch is set or wake_at (0: no limit) has passed.  An
 * interrupt sets the latch, so it is served as soon as we are back.
 */
static void
sleep_until(TimestampTz wake_at)
{
	int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
	long		sleep_ms = -1;

	if (wake_at != 0)
	{
		TimestampTz now = GetCurrentTimestamp();
		int64		wait_ms = 0;

		/*
		 * Round up, so that we do not wake just before the lease ends.
		 * WaitLatch takes at most INT_MAX ms (24.8 days); a longer wait
		 * simply goes round the caller's loop again.
		 */
		if (wake_at > now)
			wait_ms = (wake_at - now + 999) / 1000;
		sleep_ms = (long) Min(wait_ms, INT_MAX);
		events |= WL_TIMEOUT;
	}
	(void) WaitLatch(MyLatch, events, sleep_ms,
					 lockfence_compat_wait_event("LockfenceLockWait",
												 &lock_wait_event));
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Take the lock, waiting in its queue for at most timeout_us (0: no limit).
 * Returns LF_ATTEMPT_GRANTED with *token set, LF_ATTEMPT_SELF_HELD or
 * LF_ATTEMPT_SELF_PINNED when only this backend could end the holder's grant
 * (see lockfence_try_grant), or LF_ATTEMPT_BUSY when the wait timed out.
 */
LockfenceAttempt
lockfence_acquire_or_wait(const LockfenceKey *key, uint32 hashcode,
						  LockfenceScope scope, int64 lease_us,
						  int64 timeout_us, uint64 *token)
{
	LWLock	   *lock = lockfence_partition_lock(hashcode);
	int			myprocno = lockfence_my_procno();
	LockfenceWaiter *me = &lockfence_shared->waiters[myprocno];
	TimestampTz deadline = 0;
	TimestampTz wake_at = 0;
	LockfenceAttempt result;

	if (timeout_us > 0)
		deadline = GetCurrentTimestamp() + timeout_us;

	/* from here on an error must leave the queue */
	memcpy(&pending_key, key, sizeof(LockfenceKey));
	pending_hashcode = hashcode;
	wait_pending = true;

	/*
	 * Once queued, sleep at once: the queueing step worked out when to wake,
	 * and a hand-off that comes before the sleep leaves the latch set.
	 */
	result = lockfence_try_grant(key, hashcode, scope, lease_us, true,
								 deadline, token, &wake_at);
	while (result == LF_ATTEMPT_QUEUED)
	{
		int			wake[2];
		int			nwake = 0;
		LockfenceEntry *entry;
		TimestampTz now;

		sleep_until(wake_at);

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
			wake_at = lockfence_waiter_wake_at(entry, myprocno);
		LWLockRelease(lock);
		lockfence_wake_procs(wake, nwake);
	}

	wait_pending = false;
	return result;
}

/*
 * After an error or at exit: leave the queue, or give back a lock that was
 * handed to us but never reached the caller.  LWLocks are not held here.
 */
void
lockfence_abandon_wait(void)
{
	int			wake[2];
	int			nwake = 0;
	int			myprocno;
	LockfenceWaiter *me;
	LWLock	   *lock;

	if (!wait_pending)
		return;
	wait_pending = false;

	myprocno = lockfence_my_procno();
	me = &lockfence_shared->waiters[myprocno];
	lock = lockfence_partition_lock(pending_hashcode);

	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (me->queued)
		leave_queue(me->entry, pending_hashcode, myprocno,
					GetCurrentTimestamp(), wake, &nwake);
	else if (me->granted)
	{
		LockfenceEntry *entry;

		me->granted = false;
		entry = hash_search_with_hash_value(lockfence_hash, &pending_key,
											pending_hashcode, HASH_FIND, NULL);
		if (entry != NULL && entry->token == me->token)
		{
			lockfence_partition_stats(pending_hashcode)->releases++;
			lockfence_entry_free(entry, pending_hashcode,
								 GetCurrentTimestamp(), wake, &nwake);
		}
	}
	LWLockRelease(lock);
	lockfence_wake_procs(wake, nwake);
}
