/*-------------------------------------------------------------------------
 *
 * role_quota.c
 *	  Per-role accounting of lock-table slots (lockfence.max_locks_per_role).
 *
 * Every entry with a holder is charged to the role that holds it, so one
 * role cannot fill the table for everybody else.  The counters live in a
 * small open-addressing table of atomics keyed by role OID: a slot is
 * claimed for a role once, by compare-and-swap, and never given back (there
 * are few roles), so charging and uncharging need no lock.  If the table
 * is ever full, roles that found no slot are simply not counted.
 *
 * The quota is checked when a lock is granted directly or when a request
 * queues; a hand-off to a queued waiter is always accepted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "storage/shmem.h"

#include "lockfence.h"

#define ROLE_SLOTS 4096			/* power of 2 */

/*
 * Slot i counts role[i]'s locks in held[i].  The owners are written once and
 * then only read, so they are kept apart from the counts, which every grant
 * and release writes: finding a role's slot then reads cache lines that
 * other CPUs do not keep invalidating.
 */
typedef struct RoleCounters
{
	pg_atomic_uint32 role[ROLE_SLOTS];	/* InvalidOid while free */
	pg_atomic_uint32 held[ROLE_SLOTS];
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
		{
			pg_atomic_init_u32(&role_counters->role[i], InvalidOid);
			pg_atomic_init_u32(&role_counters->held[i], 0);
		}
	}
}

/* The role's count, claiming a free slot when claim is set. */
static pg_atomic_uint32 *
find_counter(Oid role, bool claim)
{
	uint32		start = murmurhash32((uint32) role) & (ROLE_SLOTS - 1);

	for (uint32 i = 0; i < ROLE_SLOTS; i++)
	{
		uint32		slot = (start + i) & (ROLE_SLOTS - 1);
		uint32		owner = pg_atomic_read_u32(&role_counters->role[slot]);

		if (owner == role)
			return &role_counters->held[slot];
		if (owner == InvalidOid)
		{
			uint32		expected = InvalidOid;

			if (!claim)
				return NULL;
			if (pg_atomic_compare_exchange_u32(&role_counters->role[slot],
											   &expected, role) ||
				expected == role)
				return &role_counters->held[slot];
		}
	}
	return NULL;
}

/*
 * Count one more slot for role.  With enforce, refuse (and count nothing)
 * when that would exceed lockfence.max_locks_per_role.
 */
bool
lockfence_role_charge(Oid role, bool enforce)
{
	pg_atomic_uint32 *count = find_counter(role, true);
	uint32		held;

	if (count == NULL)
		return true;
	held = pg_atomic_add_fetch_u32(count, 1);
	if (enforce && lockfence_max_locks_per_role > 0 &&
		held > (uint32) lockfence_max_locks_per_role)
	{
		pg_atomic_sub_fetch_u32(count, 1);
		return false;
	}
	return true;
}

void
lockfence_role_uncharge(Oid role)
{
	pg_atomic_uint32 *count;

	if (!OidIsValid(role))
		return;
	count = find_counter(role, false);
	if (count != NULL)
		pg_atomic_sub_fetch_u32(count, 1);
}

/* Would one more slot put role over its quota? */
bool
lockfence_role_at_quota(Oid role)
{
	pg_atomic_uint32 *count;

	if (lockfence_max_locks_per_role <= 0)
		return false;
	count = find_counter(role, false);
	return count != NULL &&
		pg_atomic_read_u32(count) >= (uint32) lockfence_max_locks_per_role;
}

void
lockfence_report_role_quota(Oid role)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("role holds too many lockfence locks"),
			 errdetail("The role already holds %d locks, the limit set by lockfence.max_locks_per_role.",
					   lockfence_max_locks_per_role),
			 errhint("Release locks, or increase lockfence.max_locks_per_role.")));
}
