/*-------------------------------------------------------------------------
 *
 * backend_locks.c
 *	  The session-bound and transaction locks, and the lease pins, of this
 *	  backend.
 *
 * Leases are owned by their token, so the backend that took one does not
 * need to remember it.  Session-bound and transaction locks must also end
 * with their backend or transaction, so they are remembered here, in
 * TopMemoryContext, and released by the transaction callbacks and by a
 * before_shmem_exit callback.  A remembered lock may have been released by
 * somebody else meanwhile (release from another connection, force_release,
 * lease expiry); releasing it again by its token is then a no-op.
 *
 * Pins are what the fence trigger (or lockfence.pin) took on leases for
 * the current transaction, at most one per lock.  They are kept in a small
 * hash table keyed by lock, so that writing many rows under one lock costs
 * one shared-memory visit, and dropped when the top-level transaction ends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "storage/ipc.h"
#include "utils/hsearch.h"
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
static bool callbacks_registered = false;

/* Pins of the current transaction. */
typedef struct PinnedLease
{
	LockfenceKey key;			/* hash key; must be first */
	uint32		hashcode;
	uint64		token;
	LockfenceEntry *entry;		/* the pinned entry, which cannot move */
} PinnedLease;

static HTAB *pins = NULL;
static long npins = 0;

/* Drop every pin of the transaction that is ending. */
static void
unpin_all(void)
{
	HASH_SEQ_STATUS status;
	PinnedLease *pin;

	if (npins == 0)
		return;
	hash_seq_init(&status, pins);
	while ((pin = hash_seq_search(&status)) != NULL)
	{
		lockfence_unpin_entry(pin->entry, pin->hashcode, pin->token);
		hash_search_with_hash_value(pins, &pin->key, pin->hashcode,
									HASH_REMOVE, NULL);
	}
	npins = 0;
}

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
	unpin_all();
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
			if (npins > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has written with lockfence fence tokens")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			lockfence_abandon_wait();
			unpin_all();
			release_remembered(false, InvalidSubTransactionId);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			/* the transaction's writes are committed: pins may drop now */
			unpin_all();
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

/*
 * Release this backend's locks, pins and wait when its transaction or
 * subtransaction ends, or when it exits.  Registered by the first call that
 * could leave something to release, before it takes anything: sessions that
 * never use lockfence do not run these callbacks at every commit.
 */
static void
arm_callbacks(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(lockfence_xact_callback, NULL);
		RegisterSubXactCallback(lockfence_subxact_callback, NULL);
		before_shmem_exit(lockfence_backend_exit, (Datum) 0);
		callbacks_registered = true;
	}
}

/*
 * Make room to remember one more lock, before it is granted, so that
 * remembering it afterwards cannot fail.  Also arms the callbacks, which
 * must run for waits too.
 */
void
lockfence_remember_reserve(void)
{
	arm_callbacks();

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

/* The token this transaction pinned for the lock, if any. */
bool
lockfence_pinned_token(const LockfenceKey *key, uint32 hashcode,
					   uint64 *token)
{
	PinnedLease *pin;

	if (npins == 0)
		return false;
	pin = hash_search_with_hash_value(pins, key, hashcode, HASH_FIND, NULL);
	if (pin == NULL)
		return false;
	*token = pin->token;
	return true;
}

/*
 * Pin token's lease until this transaction ends.  False when token is not
 * the live holder (*holder_token: the holder's token, or 0 when free).
 */
bool
lockfence_pin_for_xact(const LockfenceKey *key, uint32 hashcode,
					   uint64 token, uint64 *holder_token)
{
	PinnedLease *pin;
	bool		found;

	if (pins == NULL)
	{
		HASHCTL		ctl;

		/* keyed like the shared table, so the caller's hash code serves */
		ctl.keysize = sizeof(LockfenceKey);
		ctl.entrysize = sizeof(PinnedLease);
		ctl.hash = lockfence_key_hash_callback;
		ctl.match = lockfence_key_match_callback;
		ctl.hcxt = TopMemoryContext;
		pins = hash_create("lockfence pins", 16, &ctl,
						   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE |
						   HASH_CONTEXT);
	}
	arm_callbacks();

	/* allocate before pinning, so that remembering the pin cannot fail */
	pin = hash_search_with_hash_value(pins, key, hashcode, HASH_ENTER, &found);
	if (found)
	{
		/* a pinned lease cannot change hands, so only its token matches */
		*holder_token = pin->token;
		return pin->token == token;
	}
	pin->entry = lockfence_pin_token(key, hashcode, token, holder_token);
	if (pin->entry == NULL)
	{
		hash_search_with_hash_value(pins, key, hashcode, HASH_REMOVE, NULL);
		return false;
	}
	pin->hashcode = hashcode;
	pin->token = token;
	npins++;
	return true;
}
