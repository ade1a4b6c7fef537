/*-------------------------------------------------------------------------
 *
 * role_quota.c
 *	  Per-role accounting of lock-table slots (lockfence.max_locks_per_role).
 *
 * Every entry with a holder, and every queued waiter, is charged to its
 * role, so one role cannot fill the table for everybody else.  A waiter is
 * charged when it queues and uncharged when it leaves the queue; the
 * hand-off charges it as holder, so the count does not change when it is
 * granted the lock.
 *
 * The counters live in an open-addressing table keyed by role OID, one
 * 64-bit atomic per slot holding (role, count).  A role has a slot exactly
 * while its count is above zero, so every role is counted exactly and slots
 * are given back.  Raising a count that is already above zero, or lowering
 * one that stays above zero, is one compare-and-swap.  Giving a role a slot
 * (count 0 -> 1) or taking it away (1 -> 0) happens under the role lock, so
 * no role ever has two slots; a slot given back becomes a tombstone, so the
 * probe for a role placed after it still finds it.  The role lock is taken
 * while holding a partition lock, never the other way round.  When all
 * ROLE_SLOTS slots belong to roles that hold locks, a new role is refused.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "lock_table_internal.h"

#define ROLE_SLOTS 4096			/* power of 2 */

/* A slot's word: the role in the high half, its count in the low half. */
#define SLOT_EMPTY		UINT64CONST(0)	/* never used: ends a probe */
#define SLOT_TOMBSTONE	UINT64CONST(0xFFFFFFFF)	/* role 0, count ~0 */
#define SLOT_WORD(role, count)	(((uint64) (role) << 32) | (uint32) (count))
#define SLOT_ROLE(word)		((Oid) ((word) >> 32))
#define SLOT_COUNT(word)	((uint32) (word))

typedef struct RoleCounters
{
	pg_atomic_uint64 slot[ROLE_SLOTS];
} RoleCounters;

static RoleCounters *role_counters = NULL;

Size
lockfence_role_quota_shmem_size(void)
{
	return sizeof(RoleCounters);
}

/* Runs in the postmaster with AddinShmemInitLock held. */
void
lockfence_role_quota_shmem_init(void)
{
	bool		found;

	role_counters = ShmemInitStruct("lockfence role quotas",
									lockfence_role_quota_shmem_size(),
									&found);
	if (!found)
	{
		for (int i = 0; i < ROLE_SLOTS; i++)
			pg_atomic_init_u64(&role_counters->slot[i], SLOT_EMPTY);
	}
}

static inline uint32
probe_start(Oid role)
{
	return murmurhash32((uint32) role) & (ROLE_SLOTS - 1);
}

/* The slot of role (count above zero), or NULL. */
static pg_atomic_uint64 *
find_slot(Oid role)
{
	uint32		start = probe_start(role);

	for (uint32 i = 0; i < ROLE_SLOTS; i++)
	{
		pg_atomic_uint64 *slot = &role_counters->slot[(start + i) & (ROLE_SLOTS - 1)];
		uint64		word = pg_atomic_read_u64(slot);

		if (word == SLOT_EMPTY)
			return NULL;
		if (word != SLOT_TOMBSTONE && SLOT_ROLE(word) == role)
			return slot;
	}
	return NULL;
}

/*
 * Add delta to role's count while it is above zero and the result stays so
 * (and, with limit > 0, at most limit).  Returns 1 when done, 0 when the
 * limit refused it, -1 when role has no slot or the count would reach zero.
 */
static int
adjust_existing(Oid role, int delta, uint32 limit)
{
	pg_atomic_uint64 *slot = find_slot(role);
	uint64		word;

	if (slot == NULL)
		return -1;
	word = pg_atomic_read_u64(slot);
	for (;;)
	{
		uint32		count;

		if (word == SLOT_TOMBSTONE || word == SLOT_EMPTY ||
			SLOT_ROLE(word) != role)
			return -1;			/* given back meanwhile */
		count = SLOT_COUNT(word);
		if ((int64) count + delta <= 0)
			return -1;
		if (delta > 0 && limit > 0 && count + delta > limit)
			return 0;
		if (pg_atomic_compare_exchange_u64(slot, &word,
										   SLOT_WORD(role, count + delta)))
			return 1;
	}
}

/*
 * Count one more slot for role.  With enforce, refuse (and count nothing)
 * when that would exceed lockfence.max_locks_per_role.  Also refused when
 * every role slot belongs to another role that holds locks.
 */
bool
lockfence_role_charge(Oid role, bool enforce)
{
	uint32		limit = (enforce && lockfence_max_locks_per_role > 0) ?
		(uint32) lockfence_max_locks_per_role : 0;
	int			done;
	uint32		start;
	pg_atomic_uint64 *free_slot = NULL;
	bool		charged = false;

	done = adjust_existing(role, 1, limit);
	if (done >= 0)
		return done == 1;

	/* the role's first slot: give it one, unless another backend just did */
	LWLockAcquire(lockfence_role_lock(), LW_EXCLUSIVE);
	done = adjust_existing(role, 1, limit);
	if (done >= 0)
		charged = (done == 1);
	else
	{
		start = probe_start(role);
		for (uint32 i = 0; i < ROLE_SLOTS; i++)
		{
			pg_atomic_uint64 *slot = &role_counters->slot[(start + i) & (ROLE_SLOTS - 1)];
			uint64		word = pg_atomic_read_u64(slot);

			if (word == SLOT_TOMBSTONE || word == SLOT_EMPTY)
			{
				free_slot = slot;
				break;
			}
		}
		if (free_slot != NULL)
		{
			/* only the role lock turns a free slot into a used one */
			pg_atomic_write_u64(free_slot, SLOT_WORD(role, 1));
			charged = true;
		}
	}
	LWLockRelease(lockfence_role_lock());
	return charged;
}

void
lockfence_role_uncharge(Oid role)
{
	pg_atomic_uint64 *slot;
	uint64		word;

	if (!OidIsValid(role))
		return;
	if (adjust_existing(role, -1, 0) == 1)
		return;

	/* the role's last slot: give the slot back */
	LWLockAcquire(lockfence_role_lock(), LW_EXCLUSIVE);
	if (adjust_existing(role, -1, 0) != 1 && (slot = find_slot(role)) != NULL)
	{
		/* count 1 now; a concurrent charge can only raise it (by CAS) */
		word = SLOT_WORD(role, 1);
		while (!pg_atomic_compare_exchange_u64(slot, &word, SLOT_TOMBSTONE))
		{
			if (adjust_existing(role, -1, 0) == 1)
				break;
			word = SLOT_WORD(role, 1);
		}
	}
	LWLockRelease(lockfence_role_lock());
}

void
lockfence_report_role_quota(Oid role)
{
	/* a charge is refused at the quota, or for a role that got no slot */
	if (find_slot(role) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many roles hold lockfence locks"),
				 errdetail("Locks are held by %d different roles, the most that lockfence counts.",
						   ROLE_SLOTS)));
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("role holds too many lockfence locks"),
			 errdetail("The role already holds or waits for %d locks, the limit set by \"lockfence.max_locks_per_role\".",
					   lockfence_max_locks_per_role),
			 errhint("Release locks, or increase \"lockfence.max_locks_per_role\".")));
}
