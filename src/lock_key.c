/*-------------------------------------------------------------------------
 *
 * lock_key.c
 *	  The key of a lock: a name in the current database.  Built, checked and
 *	  hashed here, and nowhere else.
 *
 * A key is built in place, piece by piece (the fence trigger builds
 * prefix || key column for every row without a palloc), then finished:
 * finishing checks the name's length (empty and overlong names are refused
 * everywhere with the same errors) and computes the hash code, which picks
 * the partition (shmem.c) and is passed with the key to every lock-table
 * operation.  The bytes after the name's terminator are always zero, so
 * dynahash may copy the whole key.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"

#include "lockfence.h"

/* Names longer than this are refused everywhere. */
void
lockfence_check_name_length(int len)
{
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lock name must not be empty")));
	if (len > LOCKFENCE_NAME_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lock name is too long"),
				 errdetail("The name is %d bytes long; the maximum is %d bytes.",
						   len, LOCKFENCE_NAME_MAXLEN)));
}

/* Start an empty name in the current database; *len counts its bytes. */
void
lockfence_key_start(LockfenceKey *key, int *len)
{
	memset(key, 0, sizeof(LockfenceKey));
	key->dbid = MyDatabaseId;
	*len = 0;
}

/*
 * Append n bytes to the name.  Past the longest name the bytes are only
 * counted, so that lockfence_key_finish() reports the whole length.
 */
void
lockfence_key_append(LockfenceKey *key, int *len, const char *bytes, int n)
{
	if (*len + n <= LOCKFENCE_NAME_MAXLEN)
		memcpy(key->name + *len, bytes, n);
	*len += n;
}

/* Check the name's length and return the key's hash code. */
uint32
lockfence_key_finish(const LockfenceKey *key, int len)
{
	lockfence_check_name_length(len);
	return lockfence_key_hash(key);
}

/* The key of name (len bytes) in the current database, and its hash code. */
uint32
lockfence_make_key(LockfenceKey *key, const char *name, int len)
{
	int			keylen;

	lockfence_key_start(key, &keylen);
	lockfence_key_append(key, &keylen, name, len);
	return lockfence_key_finish(key, keylen);
}

uint32
lockfence_key_hash(const LockfenceKey *key)
{
	uint32		h = hash_bytes((const unsigned char *) key->name,
							   strlen(key->name));

	return hash_combine(h, murmurhash32((uint32) key->dbid));
}

/* dynahash callbacks: hash and compare the name only up to its terminator */
uint32
lockfence_key_hash_callback(const void *key, Size keysize)
{
	return lockfence_key_hash((const LockfenceKey *) key);
}

int
lockfence_key_match_callback(const void *key1, const void *key2, Size keysize)
{
	const LockfenceKey *k1 = key1;
	const LockfenceKey *k2 = key2;

	if (k1->dbid != k2->dbid)
		return 1;
	return strcmp(k1->name, k2->name);
}
