/*-------------------------------------------------------------------------
 *
 * lock_version.c
 *	  Optimistic locking: the lock_version trigger.
 *
 *	  CREATE TRIGGER ... BEFORE INSERT OR UPDATE ON tbl FOR EACH ROW
 *	    EXECUTE FUNCTION lockfence.lock_version_check([column [, mode]]);
 *
 * Two protocols are accepted on one table at once:
 *
 *	  the version read	 UPDATE t SET ..., lock_version = 4 WHERE id = 1;
 *						 accepted while the row's version is 4; stores 5.
 *	  the next version	 UPDATE t SET ..., lock_version = 5
 *						   WHERE id = 1 AND lock_version = 4;
 *						 what Rails, SQLAlchemy and Hibernate send; accepted
 *						 while the row's version is 4 and stored as sent, so
 *						 the ORM's object and the row agree.
 *
 * Any other version fails with SQLSTATE 40001.  A NULL version in the row
 * (a row from before versioning) counts as 0.  A version at its type's
 * maximum is not wrapped around: a wrapped value would repeat one that a
 * stale reader may still hold.
 *
 * An UPDATE that does not set the column takes no part, as in the ORMs
 * (Rails' update_columns, SQLAlchemy's bulk updates): the version is left
 * alone.  Mode 'every_update' makes every UPDATE take part instead: one that
 * does not set the column counts as sending the version read, and bumps it.
 * The statement's SET list comes from tg_updatedcols; a version changed by an
 * earlier BEFORE trigger counts as set too.
 *
 * Like every BEFORE ROW trigger this sees the latest row version (after the
 * EvalPlanQual recheck of the statement's WHERE clause), so of two
 * concurrent updates carrying the same version exactly one wins.
 *
 * Fired on INSERT, the trigger starts a missing version at 0 and keeps an
 * explicit one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "utils/acl.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "lockfence.h"

PG_FUNCTION_INFO_V1(lockfence_lock_version_check);

/* Which UPDATEs the trigger checks (its second argument). */
typedef enum VersionMode
{
	VERSION_WHEN_SET,			/* only those that set the column (default) */
	VERSION_EVERY_UPDATE		/* all; an unset column is the version read */
} VersionMode;

static int64
version_value(Datum value, Oid type)
{
	switch (type)
	{
		case INT2OID:
			return DatumGetInt16(value);
		case INT4OID:
			return DatumGetInt32(value);
		default:
			return DatumGetInt64(value);
	}
}

static Datum
version_datum(int64 version, Oid type)
{
	switch (type)
	{
		case INT2OID:
			return Int16GetDatum((int16) version);
		case INT4OID:
			return Int32GetDatum((int32) version);
		default:
			return Int64GetDatum(version);
	}
}

static int64
version_max(Oid type)
{
	switch (type)
	{
		case INT2OID:
			return PG_INT16_MAX;
		case INT4OID:
			return PG_INT32_MAX;
		default:
			return PG_INT64_MAX;
	}
}

/*
 * May the current user see the version column's values?  As PostgreSQL does
 * for the row in a constraint violation's detail: not under row-level
 * security, and only with SELECT on the table or the column.
 */
static bool
version_visible(Relation rel, int attnum)
{
	Oid			relid = RelationGetRelid(rel);

	if (check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		return false;
	return pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK ||
		pg_attribute_aclcheck(relid, attnum, GetUserId(), ACL_SELECT) == ACLCHECK_OK;
}

static void
report_stale_version(Relation rel, int attnum, const char *colname,
					 bool new_isnull, int64 new_version, bool old_isnull,
					 int64 old_version)
{
	bool		visible = version_visible(rel, attnum);

	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("row in relation \"%s\" was changed by another transaction",
					RelationGetRelationName(rel)),
			 !visible ?
			 errdetail("The update carries a value of column \"%s\" that is neither the row's current version nor the next one.",
					   colname) :
			 new_isnull ?
			 errdetail("The update sets column \"%s\" to null, but the row's current version is " INT64_FORMAT ".",
					   colname, old_version) :
			 old_isnull ?
			 errdetail("The update sets column \"%s\" to " INT64_FORMAT ", but the row's version is null, which counts as 0.",
					   colname, new_version) :
			 errdetail("The update sets column \"%s\" to " INT64_FORMAT ", but the row's current version is " INT64_FORMAT ".",
					   colname, new_version, old_version),
			 errhint("Reload the row and retry.  An update carries the version it read, or that version plus one."),
			 errtablecol(rel, attnum)));
}

Datum
lockfence_lock_version_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Trigger    *trigger;
	Relation	rel;
	TupleDesc	tupdesc;
	const char *colname;
	VersionMode mode = VERSION_WHEN_SET;
	int			attnum;
	Form_pg_attribute attr;
	Oid			type;
	HeapTuple	newtuple;
	Datum		new_value;
	bool		new_isnull;
	Datum		old_value;
	bool		old_isnull;
	int64		new_version;
	int64		old_version;
	int64		stored_version;
	bool		set_by_statement;
	Datum		replacement;
	bool		replace_null = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"lock_version_check\" was not called by trigger manager")));

	trigdata = (TriggerData *) fcinfo->context;
	trigger = trigdata->tg_trigger;
	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);

	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on relation \"%s\" must be a BEFORE UPDATE (or INSERT) ... FOR EACH ROW trigger",
						trigger->tgname, RelationGetRelationName(rel))));
	if (trigger->tgnargs > 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on relation \"%s\" has %d arguments",
						trigger->tgname, RelationGetRelationName(rel),
						trigger->tgnargs),
				 errhint("lockfence.lock_version_check() takes at most two arguments, the version column and the mode.")));
	if (trigger->tgnargs == 2)
	{
		if (strcmp(trigger->tgargs[1], "every_update") == 0)
			mode = VERSION_EVERY_UPDATE;
		else if (strcmp(trigger->tgargs[1], "when_set") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("trigger \"%s\" on relation \"%s\" has an unknown mode \"%s\"",
							trigger->tgname, RelationGetRelationName(rel),
							trigger->tgargs[1]),
					 errhint("The mode of lockfence.lock_version_check() is \"when_set\" or \"every_update\".")));
	}

	colname = trigger->tgnargs >= 1 ? trigger->tgargs[0] : "lock_version";
	attnum = SPI_fnumber(tupdesc, colname);
	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						colname, RelationGetRelationName(rel)),
				 errhint("Check the arguments of trigger \"%s\".", trigger->tgname)));
	attr = TupleDescAttr(tupdesc, attnum - 1);
	type = attr->atttypid;
	if (type != INT2OID && type != INT4OID && type != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("version column \"%s\" of relation \"%s\" must be of type smallint, integer or bigint",
						colname, RelationGetRelationName(rel))));
	if (attr->attgenerated)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("version column \"%s\" of relation \"%s\" must not be a generated column",
						colname, RelationGetRelationName(rel))));

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		newtuple = trigdata->tg_trigtuple;
		(void) heap_getattr(newtuple, attnum, tupdesc, &new_isnull);
		if (!new_isnull)
			return PointerGetDatum(newtuple);
		stored_version = 0;
	}
	else
	{
		newtuple = trigdata->tg_newtuple;
		new_value = heap_getattr(newtuple, attnum, tupdesc, &new_isnull);
		old_value = heap_getattr(trigdata->tg_trigtuple, attnum, tupdesc,
								 &old_isnull);
		new_version = new_isnull ? 0 : version_value(new_value, type);
		old_version = old_isnull ? 0 : version_value(old_value, type);

		set_by_statement =
			bms_is_member(attnum - FirstLowInvalidHeapAttributeNumber,
						  trigdata->tg_updatedcols) ||
			new_isnull != old_isnull || new_version != old_version;
		if (!set_by_statement && mode == VERSION_WHEN_SET)
			return PointerGetDatum(newtuple);

		/* no wrap-around: every participating update needs a next version */
		if (old_version >= version_max(type))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("version column \"%s\" of a row in relation \"%s\" has reached the largest value of its type",
							colname, RelationGetRelationName(rel)),
					 errhint("Widen the column, for example with ALTER TABLE ... ALTER COLUMN ... TYPE bigint."),
					 errtablecol(rel, attnum)));

		if (new_isnull ? old_isnull : new_version == old_version)
			stored_version = old_version + 1;	/* the version read */
		else if (!new_isnull && new_version == old_version + 1)
			return PointerGetDatum(newtuple);	/* the next version */
		else
		{
			report_stale_version(rel, attnum, colname, new_isnull,
								 new_version, old_isnull, old_version);
			pg_unreachable();
		}
	}

	replacement = version_datum(stored_version, type);
	return PointerGetDatum(heap_modify_tuple_by_cols(newtuple, tupdesc, 1,
													 &attnum, &replacement,
													 &replace_null));
}
