/*-------------------------------------------------------------------------
 *
 * lock_version.c
 *	  Optimistic locking: the lock_version trigger (Rails' StaleObjectError).
 *
 *	  CREATE TRIGGER ... BEFORE UPDATE ON tbl FOR EACH ROW
 *	    EXECUTE FUNCTION lockfence.lock_version_check([version_column]);
 *
 * The client sends the version it read:
 *	  UPDATE accounts SET balance = 900, lock_version = 4 WHERE id = 1;
 * If that differs from the row's current version the update fails with
 * SQLSTATE 40001 (reload and retry); otherwise the trigger stores version + 1.
 * An UPDATE that does not mention the column carries the current version, so
 * it passes and increments too.  Like every BEFORE ROW trigger this sees the
 * latest row version, so of two concurrent updates carrying the same read
 * version exactly one wins.
 *
 * Fired on INSERT as well, it starts a missing version at 0.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/rel.h"

#include "lockfence.h"

PG_FUNCTION_INFO_V1(lockfence_lock_version_check);

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

Datum
lockfence_lock_version_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata;
	Trigger    *trigger;
	Relation	rel;
	TupleDesc	tupdesc;
	const char *colname;
	int			attnum;
	Oid			type;
	HeapTuple	newtuple;
	Datum		value;
	bool		isnull;
	int64		new_version = 0;
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
	if (trigger->tgnargs > 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on relation \"%s\" has %d arguments",
						trigger->tgname, RelationGetRelationName(rel),
						trigger->tgnargs),
				 errhint("lockfence.lock_version_check() takes at most one argument, the version column.")));

	colname = trigger->tgnargs == 1 ? trigger->tgargs[0] : "lock_version";
	attnum = SPI_fnumber(tupdesc, colname);
	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						colname, RelationGetRelationName(rel)),
				 errhint("Check the arguments of trigger using lockfence.lock_version_check().")));
	type = TupleDescAttr(tupdesc, attnum - 1)->atttypid;
	if (type != INT2OID && type != INT4OID && type != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("version column \"%s\" of relation \"%s\" must be of type smallint, integer or bigint",
						colname, RelationGetRelationName(rel))));

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		newtuple = trigdata->tg_trigtuple;
		(void) heap_getattr(newtuple, attnum, tupdesc, &isnull);
		if (!isnull)
			return PointerGetDatum(newtuple);
		new_version = 0;
	}
	else
	{
		Datum		old_value;
		bool		old_isnull;

		newtuple = trigdata->tg_newtuple;
		value = heap_getattr(newtuple, attnum, tupdesc, &isnull);
		old_value = heap_getattr(trigdata->tg_trigtuple, attnum, tupdesc,
								 &old_isnull);

		if (isnull != old_isnull ||
			(!isnull && version_value(value, type) != version_value(old_value, type)))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("row in relation \"%s\" was changed by another transaction",
							RelationGetRelationName(rel)),
					 isnull ?
					 errdetail("The update carries no %s, but the row's current %s is " INT64_FORMAT ".",
							   colname, colname, version_value(old_value, type)) :
					 old_isnull ?
					 errdetail("The update carries %s " INT64_FORMAT ", but the row has no %s.",
							   colname, version_value(value, type), colname) :
					 errdetail("The update carries %s " INT64_FORMAT ", but the row's current %s is " INT64_FORMAT ".",
							   colname, version_value(value, type),
							   colname, version_value(old_value, type)),
					 errhint("Reload the row and retry."),
					 errtablecol(rel, attnum)));

		/* a row from before versioning starts at 1 */
		new_version = isnull ? 1 : version_value(old_value, type) + 1;
		if (!isnull && version_value(old_value, type) >= version_max(type))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("%s of a row in relation \"%s\" is out of range",
							colname, RelationGetRelationName(rel)),
					 errtablecol(rel, attnum)));
	}

	replacement = version_datum(new_version, type);
	return PointerGetDatum(heap_modify_tuple_by_cols(newtuple, tupdesc, 1,
													 &attnum, &replacement,
													 &replace_null));
}
