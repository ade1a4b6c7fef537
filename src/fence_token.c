/*-------------------------------------------------------------------------
 *
 * fence_token.c
 *	  The sequence numbers of fence tokens, which strictly increase for the
 *	  life of the data directory.
 *
 * A token packs two fields into a positive bigint:
 *
 *	  bits 62..48  the database's band (token_band.c: promotions and moves
 *				   to a new cluster raise it)
 *	  bits 47..0   sequence number (this file: moves up within a band)
 *
 * The sequence number is handed out by an atomic fetch-and-add.  It may only
 * be handed out once a durable high-water mark above it is on disk: the file
 * lockfence.fence_state in the data directory records "no sequence number at
 * or above this one was ever used".  The first grant after every start (and
 * after every crash-restart, which rebuilds shared memory) reads the mark,
 * continues from it, and makes mark + one block durable before the first
 * token is used.  So there is one fsync per block of grants, none per
 * grant, and no crash or immediate shutdown can make a sequence number
 * repeat.
 *
 * The next block is made durable ahead of need: once half of the current
 * block is used, by the next request that prepares a grant (before it takes
 * a partition lock) or by the reclaimer worker.  A hand-off to a waiter,
 * which can happen at commit or at exit, where an error would be a PANIC or
 * worse, takes only a token from the durable reserve and never writes the
 * file (lockfence_token_next_reserved); if the reserve is empty it leaves
 * the lock free for the waiter, which takes it in its own request.
 *
 * A standby grants nothing.  When it is promoted it switches to a timeline
 * above every timeline the old primary ever used, and so its databases to
 * a higher band: its tokens exceed every earlier token even though its copy
 * of the state file may be old.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "access/xlog.h"
#include "port/pg_crc32c.h"
#include "storage/fd.h"

#include "lock_table_internal.h"

#define LOCKFENCE_STATE_FILE		"lockfence.fence_state"
#define LOCKFENCE_STATE_TMP_FILE	"lockfence.fence_state.tmp"
#define LOCKFENCE_STATE_MAGIC		0x4C4B4645	/* "LKFE" */
#define LOCKFENCE_STATE_VERSION		1

#define LOCKFENCE_SEQ_END			(UINT64CONST(1) << LOCKFENCE_SEQ_BITS)
/* sequence numbers made durable at a time: lockfence.token_block_size */

/* On-disk format of the state file. */
typedef struct LockfenceStateFile
{
	uint32		magic;
	uint32		version;
	uint64		high_water;		/* no sequence number >= this was used */
	uint32		timeline;		/* when it was written; for information only */
	pg_crc32c	crc;			/* of everything above */
} LockfenceStateFile;

static pg_crc32c
state_file_crc(const LockfenceStateFile *state)
{
	pg_crc32c	crc;

	INIT_CRC32C(crc);
	COMP_CRC32C(crc, state, offsetof(LockfenceStateFile, crc));
	FIN_CRC32C(crc);
	return crc;
}

/* Returns the durable high-water mark, 0 when no state file exists yet. */
static uint64
read_high_water(void)
{
	LockfenceStateFile state;
	int			fd;
	int			nread;

	fd = OpenTransientFile(LOCKFENCE_STATE_FILE, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		if (errno == ENOENT)
			return 0;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m",
						LOCKFENCE_STATE_FILE)));
	}

	nread = read(fd, &state, sizeof(state));
	if (nread < 0)
	{
		int			save_errno = errno;

		CloseTransientFile(fd);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m",
						LOCKFENCE_STATE_FILE)));
	}
	CloseTransientFile(fd);

	if (nread != sizeof(state) ||
		state.magic != LOCKFENCE_STATE_MAGIC ||
		state.version != LOCKFENCE_STATE_VERSION ||
		!EQ_CRC32C(state.crc, state_file_crc(&state)))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("fence token state file \"%s\" is corrupt",
						LOCKFENCE_STATE_FILE),
				 errdetail("Without it lockfence cannot prove that new fence tokens exceed all earlier ones, so it grants no locks."),
				 errhint("Restore the file from the data directory's backup.")));

	return state.high_water;
}

/*
 * Make a new high-water mark durable: write, fsync, rename, fsync dir.  A
 * failure is reported at elevel; below ERROR the function then returns
 * false, with nothing held.  (Catching an ERROR instead would be wrong
 * here: error recovery is what gives back LWLocks and files.)
 */
#define RESERVE_HINT \
	"lockfence keeps granting from the fence tokens it made durable before; check the data directory."

static bool
write_high_water(uint64 high_water, uint32 timeline, int elevel)
{
	LockfenceStateFile state;
	int			fd;

	memset(&state, 0, sizeof(state));
	state.magic = LOCKFENCE_STATE_MAGIC;
	state.version = LOCKFENCE_STATE_VERSION;
	state.high_water = high_water;
	state.timeline = timeline;
	state.crc = state_file_crc(&state);

	fd = OpenTransientFile(LOCKFENCE_STATE_TMP_FILE,
						   O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
	{
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m",
						LOCKFENCE_STATE_TMP_FILE),
				 elevel < ERROR ? errhint(RESERVE_HINT) : 0));
		return false;
	}

	errno = 0;
	if (write(fd, &state, sizeof(state)) != sizeof(state))
	{
		int			save_errno = errno ? errno : ENOSPC;

		CloseTransientFile(fd);
		errno = save_errno;
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m",
						LOCKFENCE_STATE_TMP_FILE),
				 elevel < ERROR ? errhint(RESERVE_HINT) : 0));
		return false;
	}
	if (CloseTransientFile(fd) != 0)
	{
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m",
						LOCKFENCE_STATE_TMP_FILE),
				 elevel < ERROR ? errhint(RESERVE_HINT) : 0));
		return false;
	}

	/* fsyncs the file, renames it, and fsyncs the directory */
	return durable_rename(LOCKFENCE_STATE_TMP_FILE, LOCKFENCE_STATE_FILE,
						  elevel) == 0;
}

static uint32
current_timeline(void)
{
	return GetWALInsertionTimeLine();
}

/* A standby grants nothing: its tokens could repeat the primary's. */
void
lockfence_refuse_grant_in_recovery(void)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot grant lockfence locks during recovery"),
				 errhint("Locks are granted by the primary server only.")));
}

/* First use since startup: continue above the durable mark.  Token lock held. */
static void
initialise_tokens(LockfenceTokenState *ts)
{
	uint64		high_water;
	uint64		limit;

	lockfence_refuse_grant_in_recovery();
	high_water = read_high_water();
	limit = high_water + (uint64) lockfence_token_block_size;
	if (limit > LOCKFENCE_SEQ_END)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("lockfence fence tokens are exhausted in this data directory")));
	(void) write_high_water(limit, current_timeline(), ERROR);

	/* token 0 means "free", so never hand out sequence number 0 */
	pg_atomic_write_u64(&ts->next_seq, Max(high_water, 1));
	pg_atomic_write_u64(&ts->seq_limit, limit);
	pg_write_barrier();
	ts->ready = true;
}

/*
 * Make the next block durable.  Token lock held.  A failure is reported at
 * elevel; below ERROR it returns false.
 */
static bool
extend_limit(LockfenceTokenState *ts, uint64 limit, int elevel)
{
	uint64		new_limit = limit + (uint64) lockfence_token_block_size;

	if (new_limit > LOCKFENCE_SEQ_END)
	{
		ereport(elevel,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("lockfence fence tokens are exhausted in this data directory")));
		return false;
	}
	if (!write_high_water(new_limit, current_timeline(), elevel))
		return false;
	pg_atomic_write_u64(&ts->seq_limit, new_limit);
	return true;
}

/* Is less than half a block left in the durable reserve? */
static bool
reserve_low(LockfenceTokenState *ts)
{
	uint64		next = pg_atomic_read_u64(&ts->next_seq);
	uint64		limit = pg_atomic_read_u64(&ts->seq_limit);

	return next >= limit || limit - next < (uint64) lockfence_token_block_size / 2;
}

/*
 * Top up the durable reserve when it runs low, once the generator is
 * initialised.  Holds no partition lock; may write the state file.  A
 * failure to write it is a warning, and the result false: the reserve
 * still holds tokens, and a grant that finds it empty reports the error
 * itself (lockfence_token_next).
 */
bool
lockfence_token_try_reserve_ahead(void)
{
	LockfenceTokenState *ts = &lockfence_shared->tokens.state;
	LWLock	   *token_lock = lockfence_token_lock();
	bool		ok = true;

	if (!((volatile LockfenceTokenState *) ts)->ready)
		return true;
	pg_read_barrier();
	if (!reserve_low(ts))
		return true;

	LWLockAcquire(token_lock, LW_EXCLUSIVE);
	while (ok && reserve_low(ts))
		ok = extend_limit(ts, pg_atomic_read_u64(&ts->seq_limit), WARNING);
	LWLockRelease(token_lock);
	return ok;
}

/*
 * Make sure the generator is initialised and its durable reserve is not
 * low.  Called before taking a partition lock, so that the file I/O of a
 * grant happens without one.
 */
void
lockfence_token_prepare(void)
{
	LockfenceTokenState *ts = &lockfence_shared->tokens.state;
	LWLock	   *token_lock = lockfence_token_lock();

	if (!((volatile LockfenceTokenState *) ts)->ready)
	{
		LWLockAcquire(token_lock, LW_EXCLUSIVE);
		if (!ts->ready)
			initialise_tokens(ts);
		LWLockRelease(token_lock);
	}
	pg_read_barrier();
	if (reserve_low(ts))
		(void) lockfence_token_try_reserve_ahead();
}

/*
 * A token of the given band from the durable reserve, without any I/O:
 * false when the reserve is used up.  Never raises an error, so it is safe
 * at commit.
 */
bool
lockfence_token_next_reserved(uint32 band, uint64 *token)
{
	LockfenceTokenState *ts = &lockfence_shared->tokens.state;
	uint64		seq;

	if (unlikely(!((volatile LockfenceTokenState *) ts)->ready))
		return false;
	pg_read_barrier();

	/* one fetch-and-add; a number past the reserve is simply never used */
	seq = pg_atomic_fetch_add_u64(&ts->next_seq, 1);
	if (unlikely(seq >= pg_atomic_read_u64(&ts->seq_limit)))
		return false;
	*token = ((uint64) band << LOCKFENCE_SEQ_BITS) | seq;
	return true;
}

/*
 * The next fence token of the given band, for a grant to the calling
 * request itself.  May be called with a partition lock held; writes the
 * state file (and may raise an error) only when the reserve was used up
 * since the request's lockfence_token_prepare().
 */
uint64
lockfence_token_next(uint32 band)
{
	LockfenceTokenState *ts = &lockfence_shared->tokens.state;
	LWLock	   *token_lock = lockfence_token_lock();
	uint64		token;

	while (!lockfence_token_next_reserved(band, &token))
	{
		LWLockAcquire(token_lock, LW_EXCLUSIVE);
		if (!ts->ready)
			initialise_tokens(ts);
		else if (pg_atomic_read_u64(&ts->next_seq) >=
				 pg_atomic_read_u64(&ts->seq_limit))
			(void) extend_limit(ts, pg_atomic_read_u64(&ts->seq_limit), ERROR);
		LWLockRelease(token_lock);
	}
	return token;
}
