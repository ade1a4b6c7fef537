/*-------------------------------------------------------------------------
 *
 * lockfence.c
 *	  Module entry point: settings and hook installation.
 *
 * lockfence must be loaded through shared_preload_libraries, because its
 * lock table lives in shared memory sized at server start.  Loaded any
 * other way, _PG_init does nothing and every SQL function reports how to
 * fix that.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "lockfence.h"

PG_MODULE_MAGIC;

/*---- GUC variables ----*/

int			lockfence_max_locks = 10000;
int			lockfence_default_lease_ms = 60000;
int			lockfence_wait_timeout_ms = 0;
int			lockfence_max_locks_per_role = 0;
int			lockfence_token_block_size = 1 << 24;

static MemoryContext session_context = NULL;

void		_PG_init(void);

/*
 * The memory context of this backend's long-lived lockfence state (its locks
 * and pins, the triggers' and row locks' caches), a child of
 * TopMemoryContext that pg_backend_memory_contexts shows by name.
 */
MemoryContext
lockfence_session_context(void)
{
	if (session_context == NULL)
		session_context = AllocSetContextCreate(TopMemoryContext,
												"lockfence session state",
												ALLOCSET_SMALL_SIZES);
	return session_context;
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

	DefineCustomIntVariable("lockfence.max_locks",
							"Maximum number of locks held at once, over all databases.",
							"Each lock slot takes shared memory; changing this needs a restart.",
							&lockfence_max_locks,
							10000,
							LOCKFENCE_MIN_MAX_LOCKS,
							10000000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("lockfence.default_lease",
							"Lease used when a lock is acquired without one.",
							NULL,
							&lockfence_default_lease_ms,
							60000,
							1,
							INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("lockfence.wait_timeout",
							"Longest wait for a lock when acquire is called without a timeout.",
							"Zero waits without a limit.",
							&lockfence_wait_timeout_ms,
							0,
							0,
							INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("lockfence.max_locks_per_role",
							"Maximum number of locks one role may hold at once.",
							"Zero means no limit other than lockfence.max_locks.",
							&lockfence_max_locks_per_role,
							0,
							0,
							10000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("lockfence.token_block_size",
							"Fence tokens made durable at a time (a developer option, for tests).",
							"Each block costs one write and fsync of the state file.",
							&lockfence_token_block_size,
							1 << 24,
							16,
							1 << 30,
							PGC_POSTMASTER,
							GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("lockfence");

	lockfence_shmem_install_hooks();
	lockfence_expiry_register_worker();
}
