/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  What differs between the PostgreSQL major versions lockfence supports,
 *	  15 to 18, in one place: the other files use these names and test no
 *	  version themselves.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LOCKFENCE_COMPAT_H
#define LOCKFENCE_COMPAT_H

#if PG_VERSION_NUM < 150000
#error "lockfence needs PostgreSQL 15 or later"
#endif

#include "storage/proc.h"
#include "utils/relcache.h"
#include "utils/wait_event.h"

/* 16 moved the varlena macros (VARSIZE_ANY_EXHDR, ...) out of postgres.h. */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/* This backend's PGPROC number, or -1 before it has one. */
static inline int
lockfence_compat_my_procno(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProcNumber;		/* 17 */
#else
	return MyProc ? MyProc->pgprocno : -1;
#endif
}

/*
 * The relation's primary key index.  18 asks whether a deferrable primary
 * key will do; before 18 it always did, and so it does here.
 */
static inline Oid
lockfence_compat_primary_key_index(Relation rel)
{
#if PG_VERSION_NUM >= 180000
	return RelationGetPrimaryKeyIndex(rel, true);
#else
	return RelationGetPrimaryKeyIndex(rel);
#endif
}

/*
 * The wait event a wait of lockfence reports in pg_stat_activity: from 17
 * one of its own name (looked up once per backend, in *cached), before
 * that the generic "Extension".
 */
static inline uint32
lockfence_compat_wait_event(const char *name, uint32 *cached)
{
#if PG_VERSION_NUM >= 170000
	if (*cached == 0)
		*cached = WaitEventExtensionNew(name);
	return *cached;
#else
	(void) name;
	(void) cached;
	return PG_WAIT_EXTENSION;
#endif
}

#endif							/* LOCKFENCE_COMPAT_H */
