/*-------------------------------------------------------------------------
 *
 * fence_check.c
 *	  The fence-check trigger: writes carrying a stale token are rejected by
 *	  the database that holds the data, atomically with the write.
 *
 *	  CREATE TRIGGER ... BEFORE INSERT OR UPDATE [OR DELETE] ON tbl
 *	    FOR EACH ROW EXECUTE FUNCTION
 *	    lockfence.fence_check(token_column [, lock_prefix [, key_column]]);
 *
 * Monotonic mode (one argument): a row must carry a token, and an UPDATE may
 * not lower the row's token.  A BEFORE ROW trigger of an UPDATE sees the
 * latest committed version of the row (READ COMMITTED re-fetches it after a
 * concurrent update, REPEATABLE READ fails with a serialization error), so
 * the comparison cannot race.
 *
 * Lease mode (a lock prefix is given): in addition, the token must be the
 * live holder of lock_prefix, or of lock_prefix || key_column::text, at the
 * moment of the write; the lease is then pinned until the transaction ends
 * (see lock_table.c), so an accepted write commits while its lock is held.
 * A DELETE is accepted only if the same transaction already showed a live
 * token for the row's lock, by an accepted write or lockfence.pin().
 *
 * Rejections raise SQLSTATE LF001.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "lockfence.h"

PG_FUNCTION_INFO_V1(lockfence_fence_check);

/*
 * A trigger's arguments, resolved.  The trigger manager gives each statement
 * a fresh FmgrInfo, so fn_extra alone would resolve them again for every
 * statement (a catalog lookup of the key column's output function, a search
 * of the column names).  They are kept for the session instead, keyed by
 * trigger OID, and checked against the trigger and the table on each use:
 * CREATE OR REPLACE TRIGGER keeps the OID, and ALTER TABLE may rename, drop
 * or retype the columns.  An entry is rewritten only when they changed.
 */
typedef struct FenceCheckConfig
{
	Oid			tgoid;			/* hash key; must be first */
	bool		valid;
	int			nargs;
	AttrNumber	token_attnum;
	bool		lease_mode;
	/* the prefix, whole when it can name a lock at all (see row_lock_key) */
	char		lock_prefix[LOCKFENCE_NAME_MAXLEN + 1];
	int			lock_prefix_len;
	AttrNumber	key_attnum;		/* 0: the prefix alone names the lock */
	Oid			key_type;
	FmgrInfo	key_output;		/* output function of the key column */
} FenceCheckConfig;

static HTAB *config_cache = NULL;
static FenceCheckConfig *last_config = NULL;	/* entries do not move */

static AttrNumber
config_attnum(Relation rel, const char *colname)
{
	AttrNumber	attnum = SPI_fnumber(RelationGetDescr(rel), colname);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						colname, RelationGetRelationName(rel)),
				 errhint("Check the arguments of trigger using lockfence.fence_check().")));
	return attnum;
}

/* attnum still names a live column colname of type typid. */
static bool
column_unchanged(TupleDesc tupdesc, AttrNumber attnum, const char *colname,
				 Oid typid)
{
	Form_pg_attribute attr;

	if (attnum > tupdesc->natts)
		return false;
	attr = TupleDescAttr(tupdesc, attnum - 1);
	return !attr->attisdropped && attr->atttypid == typid &&
		strcmp(NameStr(attr->attname), colname) == 0;
}

/* config was resolved from this trigger's arguments and this table. */
static bool
config_unchanged(const FenceCheckConfig *config, const Trigger *trigger,
				 TupleDesc tupdesc)
{
	if (!config->valid || config->nargs != trigger->tgnargs ||
		!column_unchanged(tupdesc, config->token_attnum, trigger->tgargs[0],
						  INT8OID))
		return false;
	if (config->lease_mode &&
		(strlen(trigger->tgargs[1]) != (size_t) config->lock_prefix_len ||
		 strncmp(config->lock_prefix, trigger->tgargs[1],
				 LOCKFENCE_NAME_MAXLEN) != 0))
		return false;
	return config->key_attnum == 0 ||
		column_unchanged(tupdesc, config->key_attnum, trigger->tgargs[2],
						 config->key_type);
}

/* Resolve the trigger's arguments into config. */
static void
resolve_config(FenceCheckConfig *config, const Trigger *trigger,
			   Relation rel)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);

	if (trigger->tgnargs < 1 || trigger->tgnargs > 3)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on relation \"%s\" has %d arguments",
						trigger->tgname, RelationGetRelationName(rel),
						trigger->tgnargs),
				 errhint("lockfence.fence_check() takes a token column, optionally a lock prefix, and optionally a key column.")));

	/* an error below leaves the entry invalid, to be resolved again */
	config->valid = false;
	config->nargs = trigger->tgnargs;
	config->token_attnum = config_attnum(rel, trigger->tgargs[0]);
	if (TupleDescAttr(tupdesc, config->token_attnum - 1)->atttypid != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("fence token column \"%s\" of relation \"%s\" must be of type bigint",
						trigger->tgargs[0], RelationGetRelationName(rel))));

	config->lease_mode = trigger->tgnargs >= 2;
	config->lock_prefix_len = 0;
	config->key_attnum = 0;
	if (config->lease_mode)
	{
		int			kept;

		config->lock_prefix_len = strlen(trigger->tgargs[1]);
		kept = Min(config->lock_prefix_len, LOCKFENCE_NAME_MAXLEN);
		memcpy(config->lock_prefix, trigger->tgargs[1], kept);
		config->lock_prefix[kept] = '\0';
		if (trigger->tgnargs == 3)
		{
			Oid			typoutput;
			bool		typisvarlena;

			config->key_attnum = config_attnum(rel, trigger->tgargs[2]);
			config->key_type = TupleDescAttr(tupdesc, config->key_attnum - 1)->atttypid;
			/* a BEFORE trigger sees a generated column's old value */
			if (TupleDescAttr(tupdesc, config->key_attnum - 1)->attgenerated)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("key column \"%s\" of relation \"%s\" must not be a generated column",
								trigger->tgargs[2], RelationGetRelationName(rel)),
						 errdetail("A BEFORE trigger sees a generated column's value from before the write."),
						 errhint("Name the column it is computed from as the key column of trigger \"%s\".",
								 trigger->tgname)));
			getTypeOutputInfo(config->key_type, &typoutput, &typisvarlena);
			fmgr_info_cxt(typoutput, &config->key_output,
						  lockfence_session_context());
		}
		else
			lockfence_check_name_length(config->lock_prefix_len);
	}
	config->valid = true;
}

/* Check how the trigger is declared, and find its resolved arguments. */
static FenceCheckConfig *
get_config(FunctionCallInfo fcinfo, TriggerData *trigdata)
{
	FenceCheckConfig *config = fcinfo->flinfo->fn_extra;
	Trigger    *trigger = trigdata->tg_trigger;
	Relation	rel = trigdata->tg_relation;
	bool		found;

	/* the rest of this statement's rows */
	if (config != NULL && config->tgoid == trigger->tgoid)
		return config;

	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on relation \"%s\" must be a BEFORE ... FOR EACH ROW trigger",
						trigger->tgname, RelationGetRelationName(rel)),
				 errdetail("lockfence.fence_check() must check each row before it is written.")));

	if (config_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(FenceCheckConfig);
		ctl.hcxt = lockfence_session_context();
		config_cache = hash_create("lockfence fence_check triggers", 16, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (last_config != NULL && last_config->tgoid == trigger->tgoid)
		config = last_config;
	else
	{
		config = hash_search(config_cache, &trigger->tgoid, HASH_ENTER,
							 &found);
		if (!found)
			config->valid = false;
		last_config = config;
	}
	if (!config_unchanged(config, trigger, RelationGetDescr(rel)))
		resolve_config(config, trigger, rel);

	fcinfo->flinfo->fn_extra = config;
	return config;
}

/*
 * The lock that guards this row: the prefix, or prefix || key::text.  Runs
 * for every row, so the name is built in the key itself.
 */
static void
row_lock_key(FenceCheckConfig *config, Relation rel, HeapTuple tuple,
			 LockfenceKey *key, uint32 *hashcode)
{
	int			len;

	lockfence_key_start(key, &len);
	lockfence_key_append(key, &len, config->lock_prefix,
						 config->lock_prefix_len);
	if (config->key_attnum > 0)
	{
		char		intbuf[21];	/* "-9223372036854775808" */
		char	   *keytext;
		bool		isnull;
		Datum		value = heap_getattr(tuple, config->key_attnum,
										 RelationGetDescr(rel), &isnull);

		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("lock key column \"%s\" of relation \"%s\" is null",
							NameStr(TupleDescAttr(RelationGetDescr(rel),
												  config->key_attnum - 1)->attname),
							RelationGetRelationName(rel)),
					 errdetail("lockfence.fence_check() names the row's lock after this column."),
					 errtable(rel)));
		/* integer keys, the usual case, are formatted without fmgr or palloc */
		switch (config->key_type)
		{
			case INT2OID:
				pg_itoa(DatumGetInt16(value), intbuf);
				keytext = intbuf;
				break;
			case INT4OID:
				pg_ltoa(DatumGetInt32(value), intbuf);
				keytext = intbuf;
				break;
			case INT8OID:
				pg_lltoa(DatumGetInt64(value), intbuf);
				keytext = intbuf;
				break;
			default:
				keytext = OutputFunctionCall(&config->key_output, value);
				break;
		}
		lockfence_key_append(key, &len, keytext, strlen(keytext));
		if (keytext != intbuf)
			pfree(keytext);
	}
	*hashcode = lockfence_key_finish(key, len);
}

/*
 * A write that carries no token for this lock (a DELETE, or an UPDATE that
 * moves a row away from it) needs the transaction to have pinned the lock
 * already, with an accepted write or lockfence.pin().
 */
static void
require_pinned(Relation rel, const LockfenceKey *key, uint32 hashcode,
			   bool is_delete)
{
	uint64		pinned_token;

	if (lockfence_pinned_token(key, hashcode, &pinned_token))
		return;

	lockfence_count_fence_rejection(true);
	ereport(ERROR,
			(errcode(ERRCODE_LOCKFENCE_STALE_TOKEN),
			 is_delete ?
			 errmsg("delete in relation \"%s\" is not fenced by lock \"%s\"",
					RelationGetRelationName(rel), key->name) :
			 errmsg("update moving a row in relation \"%s\" is not fenced by lock \"%s\"",
					RelationGetRelationName(rel), key->name),
			 errdetail("This transaction has not shown a live fence token for the lock."),
			 errhint("Write with the token, or call lockfence.pin(lock, token), earlier in the same transaction."),
			 errtable(rel)));
}

/*
 * The key column holds the same bytes in both versions of the row, so they
 * name the same lock (the typical UPDATE): no need to build the old name.
 */
static bool
key_column_unchanged(FenceCheckConfig *config, TupleDesc tupdesc,
					 HeapTuple oldtuple, HeapTuple newtuple)
{
	Form_pg_attribute attr = TupleDescAttr(tupdesc, config->key_attnum - 1);
	bool		old_isnull;
	bool		new_isnull;
	Datum		old_value = heap_getattr(oldtuple, config->key_attnum, tupdesc,
										 &old_isnull);
	Datum		new_value = heap_getattr(newtuple, config->key_attnum, tupdesc,
										 &new_isnull);

	if (old_isnull || new_isnull)
		return false;			/* row_lock_key() reports the null */
	return datum_image_eq(old_value, new_value, attr->attbyval, attr->attlen);
}

static void
reject_monotonic(Relation rel, AttrNumber attnum, bool token_missing,
				 int64 new_token, int64 old_token)
{
	const char *colname = NameStr(TupleDescAttr(RelationGetDescr(rel),
												attnum - 1)->attname);
	bool		from_elsewhere;

	lockfence_count_fence_rejection(false);
	if (token_missing)
		ereport(ERROR,
				(errcode(ERRCODE_LOCKFENCE_STALE_TOKEN),
				 errmsg("missing fence token in column \"%s\" of relation \"%s\"",
						colname, RelationGetRelationName(rel)),
				 errdetail("Rows written to this table must carry the fence token of the lock holder."),
				 errtablecol(rel, attnum)));

	/*
	 * A row token in a band above every band this database grants in was
	 * not granted by this database's history: its data came from another
	 * cluster without lockfence's record (token_band.c).
	 */
	from_elsewhere =
		((uint64) old_token >> LOCKFENCE_SEQ_BITS) > lockfence_token_band();
	ereport(ERROR,
			(errcode(ERRCODE_LOCKFENCE_STALE_TOKEN),
			 errmsg("stale fence token in column \"%s\" of relation \"%s\"",
					colname, RelationGetRelationName(rel)),
			 from_elsewhere ?
			 errdetail("Token " INT64_FORMAT " is older than the row's current token " INT64_FORMAT ", which is above every token this database grants.",
					   new_token, old_token) :
			 errdetail("Token " INT64_FORMAT " is older than the row's current token " INT64_FORMAT ".",
					   new_token, old_token),
			 from_elsewhere ?
			 errhint("The row was probably copied from another cluster without lockfence's token history, as logical replication does. A superuser can run SELECT lockfence.advance_tokens(" INT64_FORMAT ") once; then take the lock again.",
					 old_token) : 0,
			 errtablecol(rel, attnum)));
}

Datum
lockfence_fence_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	FenceCheckConfig *config;
	Relation	rel;
	TupleDesc	tupdesc;
	HeapTuple	newtuple;
	Datum		value;
	bool		isnull;
	int64		token;
	LockfenceKey key;
	uint32		hashcode;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"fence_check\" was not called by trigger manager")));
	lockfence_check_loaded();

	trigdata = (TriggerData *) fcinfo->context;
	config = get_config(fcinfo, trigdata);
	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);

	if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		if (!config->lease_mode)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("trigger \"%s\" on relation \"%s\" cannot fence DELETE without a lock",
							trigdata->tg_trigger->tgname,
							RelationGetRelationName(rel)),
					 errhint("Give lockfence.fence_check() a lock prefix to fence deletes, or fire it on INSERT OR UPDATE only.")));
		row_lock_key(config, rel, trigdata->tg_trigtuple, &key, &hashcode);
		require_pinned(rel, &key, hashcode, true);
		return PointerGetDatum(trigdata->tg_trigtuple);
	}

	newtuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;

	value = heap_getattr(newtuple, config->token_attnum, tupdesc, &isnull);
	if (isnull)
		reject_monotonic(rel, config->token_attnum, true, 0, 0);
	token = DatumGetInt64(value);

	/*
	 * In lease mode the lock is checked first, so that a stale writer hears
	 * which lock it lost and who holds it now.
	 */
	if (config->lease_mode)
	{
		row_lock_key(config, rel, newtuple, &key, &hashcode);
		lockfence_pin_or_reject(&key, hashcode, token, rel);
	}

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		Datum		old_value = heap_getattr(trigdata->tg_trigtuple,
											 config->token_attnum, tupdesc,
											 &isnull);

		/* rows written before fencing was enabled carry no token yet */
		if (!isnull && token < DatumGetInt64(old_value))
			reject_monotonic(rel, config->token_attnum, false,
							 token, DatumGetInt64(old_value));

		/* moving a row to another lock also takes it from its old lock */
		if (config->lease_mode && config->key_attnum > 0 &&
			!key_column_unchanged(config, tupdesc, trigdata->tg_trigtuple,
								  newtuple))
		{
			LockfenceKey old_key;
			uint32		old_hashcode;

			row_lock_key(config, rel, trigdata->tg_trigtuple, &old_key,
						 &old_hashcode);
			if (strcmp(old_key.name, key.name) != 0)
				require_pinned(rel, &old_key, old_hashcode, false);
		}
	}

	return PointerGetDatum(newtuple);
}
