/*-------------------------------------------------------------------------
 *
 * lock_wait.c
 *	  Sleeping in the FIFO queue of a lock until it is handed over.
 *
 * A waiter sleeps on its own latch; it never polls.  It is woken when:
 *	- a releasing backend hands it the lock (its slot's granted flag is set);
 *	- it became the first waiter, or the holder's lease changed, and the
 *	  lease can now end before the waiter's own wait does, so it must re-arm
 *	  its timer (lock_table.c decides);
 *	- its timer fires: the first waiter's timer is set to the end of the
 *	  holder's lease, after which it takes the lock itself; every waiter's
 *	  timer is also capped by its own wait deadline;
 *	- an interrupt arrives (cancel, statement_timeout, terminate).
 *
 * This file only sleeps: each step under the partition lock (queueing,
 * checking its turn, leaving) is an operation of lock_table.c.  An error or
 * exit while queued (or after being handed the lock but before returning it
 * to the caller) is cleaned up by lockfence_abandon_wait(), which the
 * transaction-abort and backend-exit callbacks call.
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
		sleep_until(wake_at);
		result = lockfence_check_turn(key, hashcode, deadline, token, &wake_at);
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
	if (!wait_pending)
		return;
	wait_pending = false;
	lockfence_give_up_turn(&pending_key, pending_hashcode);
}
