/*-------------------------------------------------------------------------
 *
 * sql_api.c
 *	  SQL-callable lock functions and the checks on their arguments.
 *
 * The functions are declared CALLED ON NULL INPUT so that a NULL argument
 * gets a clear error instead of a silent NULL result.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "lockfence.h"

PG_FUNCTION_INFO_V1(lockfence_acquire);
PG_FUNCTION_INFO_V1(lockfence_try_acquire);
PG_FUNCTION_INFO_V1(lockfence_acquire_session);
PG_FUNCTION_INFO_V1(lockfence_try_acquire_session);
PG_FUNCTION_INFO_V1(lockfence_acquire_xact);
PG_FUNCTION_INFO_V1(lockfence_try_acquire_xact);
PG_FUNCTION_INFO_V1(lockfence_release);
PG_FUNCTION_INFO_V1(lockfence_renew);
PG_FUNCTION_INFO_V1(lockfence_is_held);
PG_FUNCTION_INFO_V1(lockfence_force_release);
PG_FUNCTION_INFO_V1(lockfence_pin);

/* Superusers and members of lockfence_admin administer every lock. */
bool
lockfence_is_admin(void)
{
	Oid			admin_role = get_role_oid("lockfence_admin", true);

	return superuser() ||
		(OidIsValid(admin_role) && has_privs_of_role(GetUserId(), admin_role));
}

/*
 * May the current user act on, and see the token of, a lease held by role?
 * The same rule as the token column of lockfence.locks.
 */
bool
lockfence_may_act_for(Oid role)
{
	return role == GetUserId() || has_privs_of_role(GetUserId(), role) ||
		lockfence_is_admin();
}

void
lockfence_caller_init(LockfenceCaller *caller)
{
	caller->role = GetUserId();
	caller->trusted_role = InvalidOid;
	caller->undecided_role = InvalidOid;
}

/*
 * After a lock-table call answered no: if it met a holder's role that it
 * could not decide and the caller may act for that role, trust the role and
 * return true, so that the call is made once more.  Tokens are never reused,
 * so the second call meets the same role or none.
 */
bool
lockfence_caller_admits(LockfenceCaller *caller)
{
	Oid			role = caller->undecided_role;

	caller->undecided_role = InvalidOid;
	if (!OidIsValid(role) || role == caller->trusted_role ||
		!lockfence_may_act_for(role))
		return false;
	caller->trusted_role = role;
	return true;
}

/*---- Argument checks ----*/

/* The lock name argument as a hash key of the current database. */
static void
get_lock_key(FunctionCallInfo fcinfo, int argno, LockfenceKey *key,
			 uint32 *hashcode)
{
	text	   *name;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lock name must not be null")));
	name = PG_GETARG_TEXT_PP(argno);
	*hashcode = lockfence_make_key(key, VARDATA_ANY(name),
								   VARSIZE_ANY_EXHDR(name));
}

static uint64
get_token(FunctionCallInfo fcinfo, int argno)
{
	int64		token;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("fence token must not be null")));
	token = PG_GETARG_INT64(argno);
	if (token <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("fence token must be positive"),
				 errdetail("Fence tokens returned by lockfence are always greater than zero.")));
	return (uint64) token;
}

/*
 * An interval in microseconds, counting a month as 30 days like interval
 * arithmetic does.  Out-of-range values (including infinite intervals)
 * come back as PG_INT64_MAX or PG_INT64_MIN.
 */
static int64
interval_to_usecs(const Interval *span)
{
	int64		days = (int64) span->month * DAYS_PER_MONTH + span->day;
	int64		usecs;

	if (pg_mul_s64_overflow(days, USECS_PER_DAY, &usecs))
		return days > 0 ? PG_INT64_MAX : PG_INT64_MIN;
	if (pg_add_s64_overflow(usecs, span->time, &usecs))
		return span->time > 0 ? PG_INT64_MAX : PG_INT64_MIN;
	return usecs;
}

/* The lease argument, or lockfence.default_lease when NULL. */
static int64
get_lease_usecs(FunctionCallInfo fcinfo, int argno)
{
	int64		usecs;

	if (PG_ARGISNULL(argno))
		return (int64) lockfence_default_lease_ms * 1000;

	usecs = interval_to_usecs(PG_GETARG_INTERVAL_P(argno));
	if (usecs <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be greater than zero")));
	if (usecs > LOCKFENCE_MAX_INTERVAL_US)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must not exceed 365 days")));
	return usecs;
}

/* A wait timeout in microseconds, checked: 0 (no limit) to 365 days. */
int64
lockfence_timeout_usecs(const Interval *span)
{
	int64		usecs = interval_to_usecs(span);

	if (usecs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	if (usecs > LOCKFENCE_MAX_INTERVAL_US)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not exceed 365 days"),
				 errhint("A timeout of 0 waits without a limit.")));
	return usecs;
}

/* The timeout argument, or lockfence.wait_timeout when NULL; 0: no limit. */
static int64
get_timeout_usecs(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		return (int64) lockfence_wait_timeout_ms * 1000;
	return lockfence_timeout_usecs(PG_GETARG_INTERVAL_P(argno));
}

/*---- Taking locks ----*/

/*
 * Take a lock, waiting up to timeout_us when wait is set.  Returns false
 * (without waiting) when try-acquiring a lock that is held.
 */
static bool
take_lock(const LockfenceKey *key, uint32 hashcode, LockfenceScope scope,
		  int64 lease_us, bool wait, int64 timeout_us, uint64 *token)
{
	LockfenceAttempt result;

	/* room to remember the lock must exist before it is granted */
	lockfence_remember_reserve();

	for (int attempt = 0;; attempt++)
	{
		if (wait)
			result = lockfence_acquire_or_wait(key, hashcode, scope, lease_us,
											   timeout_us, token);
		else
			result = lockfence_try_grant(key, hashcode, scope, lease_us, false,
										 0, token, NULL);
		if (result != LF_ATTEMPT_OVER_QUOTA)
			break;
		/*
		 * The role's own expired leases may be what it is charged for, if
		 * the reclaimer is behind: free what has ended, then try once more.
		 */
		if (attempt > 0)
			lockfence_report_role_quota(GetUserId());
		(void) lockfence_expiry_reclaim();
	}

	switch (result)
	{
		case LF_ATTEMPT_GRANTED:
			if (scope != LF_SCOPE_LEASE)
				lockfence_remember(key, hashcode, *token, scope);
			return true;
		case LF_ATTEMPT_SELF_HELD:
			if (wait)
				ereport(ERROR,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("lock \"%s\" is already held by this session",
								key->name),
						 errdetail("A transaction lock or session lease ends only with its transaction or session, so this session would wait for itself."),
						 errhint("Use the token it already has, or release the lock first.")));
			return false;
		case LF_ATTEMPT_SELF_PINNED:
			if (wait)
				ereport(ERROR,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("lock \"%s\" is pinned by this transaction",
								key->name),
						 errdetail("This transaction wrote with the lease's token, so the lease cannot end before the transaction does."),
						 errhint("Acquire the lock again after the transaction ends.")));
			return false;
		case LF_ATTEMPT_BUSY:
			if (wait)
				ereport(ERROR,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("could not obtain lock \"%s\"", key->name),
						 errdetail("The lock was still held after waiting %s ms.",
								   psprintf(INT64_FORMAT, timeout_us / 1000))));
			return false;
		case LF_ATTEMPT_QUEUED:
		case LF_ATTEMPT_OVER_QUOTA:
			break;
	}
	elog(ERROR, "unexpected lock attempt result %d", (int) result);
	return false;				/* keep compiler quiet */
}

/* acquire[_session](name, lease, timeout) */
static Datum
acquire_lease(FunctionCallInfo fcinfo, LockfenceScope scope)
{
	LockfenceKey key;
	uint32		hashcode;
	int64		lease_us;
	int64		timeout_us;
	uint64		token;

	lockfence_check_loaded();
	get_lock_key(fcinfo, 0, &key, &hashcode);
	lease_us = get_lease_usecs(fcinfo, 1);
	timeout_us = get_timeout_usecs(fcinfo, 2);

	(void) take_lock(&key, hashcode, scope, lease_us, true, timeout_us, &token);
	PG_RETURN_INT64((int64) token);
}

/* try_acquire[_session](name, lease) */
static Datum
try_acquire_lease(FunctionCallInfo fcinfo, LockfenceScope scope)
{
	LockfenceKey key;
	uint32		hashcode;
	int64		lease_us;
	uint64		token;

	lockfence_check_loaded();
	get_lock_key(fcinfo, 0, &key, &hashcode);
	lease_us = get_lease_usecs(fcinfo, 1);

	if (!take_lock(&key, hashcode, scope, lease_us, false, 0, &token))
		PG_RETURN_NULL();
	PG_RETURN_INT64((int64) token);
}

Datum
lockfence_acquire(PG_FUNCTION_ARGS)
{
	return acquire_lease(fcinfo, LF_SCOPE_LEASE);
}

Datum
lockfence_try_acquire(PG_FUNCTION_ARGS)
{
	return try_acquire_lease(fcinfo, LF_SCOPE_LEASE);
}

/* The lease also ends when this backend exits. */
Datum
lockfence_acquire_session(PG_FUNCTION_ARGS)
{
	return acquire_lease(fcinfo, LF_SCOPE_SESSION);
}

Datum
lockfence_try_acquire_session(PG_FUNCTION_ARGS)
{
	return try_acquire_lease(fcinfo, LF_SCOPE_SESSION);
}

/* acquire_xact(name, timeout) */
Datum
lockfence_acquire_xact(PG_FUNCTION_ARGS)
{
	LockfenceKey key;
	uint32		hashcode;
	int64		timeout_us;
	uint64		token;

	lockfence_check_loaded();
	get_lock_key(fcinfo, 0, &key, &hashcode);
	timeout_us = get_timeout_usecs(fcinfo, 1);

	(void) take_lock(&key, hashcode, LF_SCOPE_XACT, 0, true, timeout_us,
					 &token);
	PG_RETURN_INT64((int64) token);
}

/* try_acquire_xact(name) */
Datum
lockfence_try_acquire_xact(PG_FUNCTION_ARGS)
{
	LockfenceKey key;
	uint32		hashcode;
	uint64		token;

	lockfence_check_loaded();
	get_lock_key(fcinfo, 0, &key, &hashcode);

	if (!take_lock(&key, hashcode, LF_SCOPE_XACT, 0, false, 0, &token))
		PG_RETURN_NULL();
	PG_RETURN_INT64((int64) token);
}

/*---- Using tokens ----*/

/* release(name, token) */
Datum
lockfence_release(PG_FUNCTION_ARGS)
{
	LockfenceKey key;
	uint32		hashcode;
	uint64		token;
	bool		released;
	LockfenceCaller caller;

	lockfence_check_loaded();
	get_lock_key(fcinfo, 0, &key, &hashcode);
	token = get_token(fcinfo, 1);

	lockfence_caller_init(&caller);
	do
		released = lockfence_release_token(&key, hashcode, token, false,
										   &caller);
	while (!released && lockfence_caller_admits(&caller));
	if (released)
		lockfence_forget(token);
	PG_RETURN_BOOL(released);
}

/* renew(name, token, lease) */
Datum
lockfence_renew(PG_FUNCTION_ARGS)
{
	LockfenceKey key;
	uint32		hashcode;
	uint64		token;
	int64		lease_us;
	bool		renewed;
	LockfenceCaller caller;

	lockfence_check_loaded();
	get_lock_key(fcinfo, 0, &key, &hashcode);
	token = get_token(fcinfo, 1);
	lease_us = get_lease_usecs(fcinfo, 2);

	lockfence_caller_init(&caller);
	do
		renewed = lockfence_renew_token(&key, hashcode, token, lease_us,
										&caller);
	while (!renewed && lockfence_caller_admits(&caller));
	PG_RETURN_BOOL(renewed);
}

/* is_held(name, token) */
Datum
lockfence_is_held(PG_FUNCTION_ARGS)
{
	LockfenceKey key;
	uint32		hashcode;
	uint64		token;
	bool		held;
	LockfenceCaller caller;

	lockfence_check_loaded();
	get_lock_key(fcinfo, 0, &key, &hashcode);
	token = get_token(fcinfo, 1);

	lockfence_caller_init(&caller);
	do
		held = lockfence_token_is_held(&key, hashcode, token, &caller);
	while (!held && lockfence_caller_admits(&caller));
	PG_RETURN_BOOL(held);
}

/* force_release(name): superusers and members of lockfence_admin only */
Datum
lockfence_force_release(PG_FUNCTION_ARGS)
{
	LockfenceKey key;
	uint32		hashcode;

	lockfence_check_loaded();

	if (!lockfence_is_admin())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to force-release a lockfence lock"),
				 errdetail("Only superusers and members of role \"%s\" may force-release locks.",
						   "lockfence_admin")));

	get_lock_key(fcinfo, 0, &key, &hashcode);
	PG_RETURN_BOOL(lockfence_force_release_key(&key, hashcode));
}

/*
 * pin(name, token): raise LF001 unless token holds the lock; otherwise pin
 * its lease until this transaction ends, as an accepted fenced write does.
 */
Datum
lockfence_pin(PG_FUNCTION_ARGS)
{
	LockfenceKey key;
	uint32		hashcode;
	uint64		token;

	lockfence_check_loaded();
	get_lock_key(fcinfo, 0, &key, &hashcode);
	token = get_token(fcinfo, 1);

	lockfence_pin_or_reject(&key, hashcode, (int64) token, NULL);
	PG_RETURN_VOID();
}
