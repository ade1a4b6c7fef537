/*-------------------------------------------------------------------------
 *
 * backend_locks.c
 *	  The session-bound and transaction locks this backend holds.
 *
 * Leases are owned by their token, so the backend that took one does not
 * need to remember it.  Session-bound and transaction locks must also end
 * with their backend or transaction, so they are remembered here, in
 * TopMemoryContext, and released by the transaction callbacks and by a
 * before_shmem_exit callback.  A remembered lock may have been released by
 * somebody else meanwhile (release from another connection, force_release,
 * lease expiry); releasing it again by its token is then a no-op.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "storage/ipc.h"
#include "utils/memutils.h"

#include "lockfence.h"

typedef struct HeldLock
{
	LockfenceKey key;
	uint32		hashcode;
	uint64		token;
	LockfenceScope scope;
	SubTransactionId subid;		/* transaction locks: the subtransaction */
} HeldLock;

#define MIN_PRUNE_THRESHOLD 64

static HeldLock *held = NULL;
static int	nheld = 0;
static int	maxheld = 0;
static int	prune_threshold = MIN_PRUNE_THRESHOLD;
static bool exit_callback_registered = false;

/* Release the remembered locks that match, and forget them. */
static void
release_remembered(bool session_too, SubTransactionId only_subid)
{
	int			i = 0;

	while (i < nheld)
	{
		HeldLock   *h = &held[i];

		if ((h->scope == LF_SCOPE_XACT || session_too) &&
			(only_subid == InvalidSubTransactionId || h->subid == only_subid))
		{
			(void) lockfence_release_token(&h->key, h->hashcode, h->token, true);
			held[i] = held[--nheld];
		}
		else
			i++;
	}
}

/* Forget remembered locks that are no longer held (released elsewhere). */
static void
prune_remembered(void)
{
	int			i = 0;

	while (i < nheld)
	{
		if (lockfence_token_is_held(&held[i].key, held[i].hashcode,
									held[i].token))
			i++;
		else
			held[i] = held[--nheld];
	}
	prune_threshold = Max(MIN_PRUNE_THRESHOLD, 2 * nheld);
}

static void
lockfence_backend_exit(int code, Datum arg)
{
	if (lockfence_shared == NULL)
		return;
	/* an error may have left one of our partition locks held */
	LWLockReleaseAll();
	lockfence_abandon_wait();
	release_remembered(true, InvalidSubTransactionId);
}

static void
lockfence_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			for (int i = 0; i < nheld; i++)
				if (held[i].scope == LF_SCOPE_XACT)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("cannot PREPARE a transaction that holds lockfence transaction locks")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			lockfence_abandon_wait();
			release_remembered(false, InvalidSubTransactionId);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			release_remembered(false, InvalidSubTransactionId);
			break;
		default:
			break;
	}
}

static void
lockfence_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						   SubTransactionId parentSubid, void *arg)
{
	switch (event)
	{
		case SUBXACT_EVENT_ABORT_SUB:
			lockfence_abandon_wait();
			release_remembered(false, mySubid);
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
			for (int i = 0; i < nheld; i++)
				if (held[i].subid == mySubid)
					held[i].subid = parentSubid;
			break;
		default:
			break;
	}
}

/* Called once from _PG_init. */
void
lockfence_backend_locks_init(void)
{
	RegisterXactCallback(lockfence_xact_callback, NULL);
	RegisterSubXactCallback(lockfence_subxact_callback, NULL);
}

/*
 * Make room to remember one more lock, before it is granted, so that
 * remembering it afterwards cannot fail.  Also arms the exit callback,
 * which must run for waits too.
 */
void
lockfence_remember_reserve(void)
{
	if (!exit_callback_registered)
	{
		before_shmem_exit(lockfence_backend_exit, (Datum) 0);
		exit_callback_registered = true;
	}

	if (nheld >= prune_threshold)
		prune_remembered();

	if (nheld < maxheld)
		return;
	if (held == NULL)
	{
		maxheld = 16;
		held = MemoryContextAlloc(TopMemoryContext, maxheld * sizeof(HeldLock));
	}
	else
	{
		maxheld *= 2;
		held = repalloc(held, maxheld * sizeof(HeldLock));
	}
}

void
lockfence_remember(const LockfenceKey *key, uint32 hashcode, uint64 token,
				   LockfenceScope scope)
{
	HeldLock   *h;

	Assert(scope != LF_SCOPE_LEASE);
	Assert(nheld < maxheld);
	h = &held[nheld++];
	memcpy(&h->key, key, sizeof(LockfenceKey));
	h->hashcode = hashcode;
	h->token = token;
	h->scope = scope;
	h->subid = (scope == LF_SCOPE_XACT) ? GetCurrentSubTransactionId() :
		InvalidSubTransactionId;
}

/* The lock with this token was released explicitly. */
void
lockfence_forget(uint64 token)
{
	for (int i = 0; i < nheld; i++)
	{
		if (held[i].token == token)
		{
			held[i] = held[--nheld];
			return;
		}
	}
}
