/*-------------------------------------------------------------------------
 *
 * backend_locks.c
 *	  The session-bound and transaction locks, and the lease pins, of this
 *	  backend.
 *
 * Leases are owned by their token, so the backend that took one does not
 * need to remember it.  Session-bound and transaction locks must also end
 * with their backend or transaction, so they are remembered here, in
 * lockfence_session_context(), and released by the transaction callbacks
 * and by a before_shmem_exit callback.  A remembered lock may have been
 * released by somebody else meanwhile (release from another connection,
 * force_release, lease expiry); releasing it again by its token is then a
 * no-op.
 *
 * Pins are what the fence trigger (or lockfence.pin) took on leases for
 * the current transaction, at most one per lock, so that writing many rows
 * under one lock costs one shared-memory visit.  They are dropped when the
 * top-level transaction ends.  lockfence_pin_or_reject() is the one entry
 * for both callers: it pins, or raises LF001 with a detail that names the
 * holder's token only to roles that may see it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "storage/ipc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "lock_table_internal.h"

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

/*
 * Pins of the current transaction, in the order they were taken.  A pinned
 * entry is never freed (lock_table.c), so its key in shared memory names
 * the pin and may be read without the partition lock: a pin needs no copy
 * of the 200-byte key.  A typical transaction pins one or two leases and
 * finds them by a scan; beyond PIN_SCAN_LIMIT pins, a hash table keyed by
 * lock indexes them, so that a transaction writing rows under thousands of
 * locks does not scan them all for each row.
 */
typedef struct PinnedLease
{
	LockfenceEntry *entry;		/* the pinned entry, which cannot move */
	uint32		hashcode;
	uint64		token;
	Oid			holder_role;	/* the lease's role, which cannot change */
} PinnedLease;

typedef struct PinIndexEntry
{
	LockfenceKey key;			/* hash key; must be first */
	int			pin;			/* position in pins[] */
} PinIndexEntry;

#define PIN_SCAN_LIMIT 8

static PinnedLease *pins = NULL;
static int	npins = 0;
static int	maxpins = 0;
static HTAB *pin_index = NULL;	/* from the (PIN_SCAN_LIMIT + 1)th pin on */

/* The transaction's pin of the lock, or NULL. */
static PinnedLease *
find_pin(const LockfenceKey *key, uint32 hashcode)
{
	if (pin_index != NULL)
	{
		PinIndexEntry *ie = hash_search_with_hash_value(pin_index, key,
														hashcode, HASH_FIND,
														NULL);

		return ie ? &pins[ie->pin] : NULL;
	}
	for (int i = 0; i < npins; i++)
	{
		const LockfenceKey *pinned = &pins[i].entry->key;

		if (pins[i].hashcode == hashcode && pinned->dbid == key->dbid &&
			strcmp(pinned->name, key->name) == 0)
			return &pins[i];
	}
	return NULL;
}

/* Make room in pins[] for one more pin; start the index when it is due. */
static void
pin_reserve(void)
{
	if (npins == PIN_SCAN_LIMIT && pin_index == NULL)
	{
		HASHCTL		ctl;
		HTAB	   *index;

		/* keyed like the shared table, so the caller's hash code serves */
		ctl.keysize = sizeof(LockfenceKey);
		ctl.entrysize = sizeof(PinIndexEntry);
		ctl.hash = lockfence_key_hash_callback;
		ctl.match = lockfence_key_match_callback;
		ctl.hcxt = lockfence_session_context();
		index = hash_create("lockfence pins", 4 * PIN_SCAN_LIMIT, &ctl,
							HASH_ELEM | HASH_FUNCTION | HASH_COMPARE |
							HASH_CONTEXT);
		for (int i = 0; i < npins; i++)
		{
			PinIndexEntry *ie;

			ie = hash_search_with_hash_value(index, &pins[i].entry->key,
											 pins[i].hashcode, HASH_ENTER,
											 NULL);
			ie->pin = i;
		}
		pin_index = index;
	}
	if (npins < maxpins)
		return;
	if (pins == NULL)
	{
		maxpins = PIN_SCAN_LIMIT;
		pins = MemoryContextAlloc(lockfence_session_context(),
								  maxpins * sizeof(PinnedLease));
	}
	else
	{
		maxpins *= 2;
		pins = repalloc(pins, maxpins * sizeof(PinnedLease));
	}
}

/* Drop every pin of the transaction that is ending. */
static void
unpin_all(void)
{
	for (int i = 0; i < npins; i++)
		lockfence_unpin_entry(pins[i].entry, pins[i].hashcode, pins[i].token);
	npins = 0;
	if (pin_index != NULL)
	{
		/* only transactions with many pins had one; give the memory back */
		hash_destroy(pin_index);
		pin_index = NULL;
		pfree(pins);
		pins = NULL;
		maxpins = 0;
	}
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
			(void) lockfence_release_token(&h->key, h->hashcode, h->token, true,
										   NULL);
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
									held[i].token, NULL))
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
		held = MemoryContextAlloc(lockfence_session_context(),
								  maxheld * sizeof(HeldLock));
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
	PinnedLease *pin = find_pin(key, hashcode);

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
					   uint64 token, LockfenceCaller *caller,
					   uint64 *holder_token, Oid *holder_role)
{
	PinnedLease *pin = find_pin(key, hashcode);
	PinIndexEntry *ie = NULL;
	LockfenceEntry *entry;

	if (pin != NULL)
	{
		/*
		 * A pinned lease cannot change hands, so only its token matches; the
		 * current user may have changed since it was pinned, though.
		 */
		*holder_token = pin->token;
		*holder_role = pin->holder_role;
		if (pin->token != token)
			return false;
		if (pin->holder_role == caller->role ||
			pin->holder_role == caller->trusted_role)
			return true;
		caller->undecided_role = pin->holder_role;
		return false;
	}

	/* allocate before pinning, so that remembering the pin cannot fail */
	arm_callbacks();
	pin_reserve();
	if (pin_index != NULL)
		ie = hash_search_with_hash_value(pin_index, key, hashcode, HASH_ENTER,
										 NULL);

	entry = lockfence_pin_token(key, hashcode, token, caller, holder_token,
								holder_role);
	if (entry == NULL)
	{
		if (ie != NULL)
			hash_search_with_hash_value(pin_index, key, hashcode, HASH_REMOVE,
										NULL);
		return false;
	}
	pin = &pins[npins];
	pin->entry = entry;
	pin->hashcode = hashcode;
	pin->token = token;
	pin->holder_role = *holder_role;	/* fixed while pinned */
	if (ie != NULL)
		ie->pin = npins;
	npins++;
	return true;
}

/*
 * Pin token's lease for this transaction, or raise LF001.  rel names the
 * table being written, or is NULL for lockfence.pin().  The detail names the
 * holder's token only to roles that may see it in lockfence.locks.
 */
void
lockfence_pin_or_reject(const LockfenceKey *key, uint32 hashcode, int64 token,
						Relation rel)
{
	uint64		holder = 0;
	Oid			holder_role = InvalidOid;
	LockfenceCaller caller;
	bool		pinned = false;

	/* a token that is not positive was never handed out */
	if (token > 0)
	{
		lockfence_caller_init(&caller);
		do
			pinned = lockfence_pin_for_xact(key, hashcode, (uint64) token,
											&caller, &holder, &holder_role);
		while (!pinned && lockfence_caller_admits(&caller));
		if (pinned)
			return;
	}

	lockfence_count_fence_rejection(true);
	ereport(ERROR,
			(errcode(ERRCODE_LOCKFENCE_STALE_TOKEN),
			 rel ? errmsg("stale fence token for lock \"%s\" in relation \"%s\"",
						  key->name, RelationGetRelationName(rel)) :
			 errmsg("stale fence token for lock \"%s\"", key->name),
			 token <= 0 ?
			 errdetail("Token " INT64_FORMAT " was never handed out: fence tokens are positive.",
					   token) :
			 holder == 0 ?
			 errdetail("Token " INT64_FORMAT " does not hold the lock; the lock is not held.",
					   token) :
			 lockfence_may_act_for(holder_role) ?
			 errdetail("Token " INT64_FORMAT " does not hold the lock; the current holder's token is " INT64_FORMAT ".",
					   token, (int64) holder) :
			 errdetail("Token " INT64_FORMAT " does not hold the lock; a lease of another role holds it.",
					   token),
			 rel ? errtable(rel) : 0));
}
