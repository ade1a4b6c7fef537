--
-- The optimistic lock_version trigger: both protocols, and every edge.
--
CREATE TABLE items (id int PRIMARY KEY, stock int NOT NULL, lock_version int);
CREATE TRIGGER items_version BEFORE INSERT OR UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();

-- INSERT: a missing version starts at 0, an explicit one is kept (Rails
-- inserts 0, SQLAlchemy 1)
INSERT INTO items (id, stock) VALUES (1, 5);
INSERT INTO items VALUES (2, 5, 1), (3, 5, NULL), (4, 5, 7);
SELECT * FROM items ORDER BY id;

-- protocol 1, the version read: accepted, and incremented
UPDATE items SET stock = 4, lock_version = 0 WHERE id = 1;
SELECT * FROM items WHERE id = 1;
-- protocol 2, the next version (Rails' statement, with the WHERE clause on
-- the version read): accepted and stored as sent
UPDATE items SET stock = 3, lock_version = 2 WHERE id = 1 AND lock_version = 1;
SELECT * FROM items WHERE id = 1;
-- and without the ORM's WHERE clause
UPDATE items SET stock = 2, lock_version = 3 WHERE id = 1;
SELECT * FROM items WHERE id = 1;

-- stale writers: protocol 1 gets 40001; protocol 2's WHERE clause finds no
-- row, which the ORM reports as its own stale-object error
SELECT * FROM public.error_of($$UPDATE items SET stock = 0, lock_version = 1 WHERE id = 1$$);
UPDATE items SET stock = 0, lock_version = 2 WHERE id = 1 AND lock_version = 1;
-- a version that skips ahead, goes back, or is null: 40001
SELECT * FROM public.error_of($$UPDATE items SET stock = 0, lock_version = 5 WHERE id = 1$$);
SELECT * FROM public.error_of($$UPDATE items SET stock = 0, lock_version = -1 WHERE id = 1$$);
SELECT * FROM public.error_of($$UPDATE items SET stock = 0, lock_version = NULL WHERE id = 1$$);
SELECT * FROM items WHERE id = 1;
-- the ambiguity: a protocol-2 writer that read version 2 and drops the
-- WHERE clause sends 3, which is the current version, so it passes as
-- protocol 1; ORMs always send the WHERE clause
UPDATE items SET stock = 9, lock_version = 3 WHERE id = 1;
SELECT * FROM items WHERE id = 1;

-- an UPDATE that does not set the column takes no part, as with Rails'
-- update_columns: the version stays
UPDATE items SET stock = stock - 1 WHERE id = 1;
SELECT * FROM items WHERE id = 1;
-- several rows at once, each checked against its own version
UPDATE items SET stock = stock + 1, lock_version = lock_version;
UPDATE items SET stock = stock + 1, lock_version = lock_version + 1 WHERE id IN (1, 2);
SELECT * FROM items ORDER BY id;
-- a version set by an earlier BEFORE trigger counts as set
CREATE FUNCTION public.bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.lock_version := OLD.lock_version + 1; RETURN NEW; END $$;
CREATE TRIGGER a_bump BEFORE UPDATE ON items
    FOR EACH ROW WHEN (NEW.stock = 100) EXECUTE FUNCTION public.bump_version();
UPDATE items SET stock = 100 WHERE id = 4;
SELECT * FROM items WHERE id = 4;
DROP TRIGGER a_bump ON items;

-- several updates of one row in one transaction: each sees the one before
BEGIN;
SELECT lock_version FROM items WHERE id = 2;
UPDATE items SET stock = 1, lock_version = 3 WHERE id = 2;
UPDATE items SET stock = 2, lock_version = 4 WHERE id = 2;
UPDATE items SET stock = 3, lock_version = 5 WHERE id = 2 AND lock_version = 4;
SELECT * FROM public.error_of($$UPDATE items SET stock = 4, lock_version = 3 WHERE id = 2$$);
COMMIT;
SELECT * FROM items WHERE id = 2;

-- rows from before versioning carry NULL, which counts as 0: an update that
-- does not set the column leaves it NULL; null, 0 (read) and 1 (next) are
-- accepted and store 1; anything else is stale
ALTER TABLE items DISABLE TRIGGER items_version;
INSERT INTO items VALUES (5, 5, NULL);
ALTER TABLE items ENABLE TRIGGER items_version;
UPDATE items SET stock = 1 WHERE id = 5;
SELECT * FROM items WHERE id = 5;
SELECT * FROM public.error_of($$UPDATE items SET stock = 0, lock_version = 2 WHERE id = 5$$);
BEGIN;
UPDATE items SET stock = 2, lock_version = NULL WHERE id = 5;
SELECT * FROM items WHERE id = 5;
ROLLBACK;
BEGIN;
UPDATE items SET stock = 2, lock_version = 0 WHERE id = 5;
SELECT * FROM items WHERE id = 5;
ROLLBACK;
UPDATE items SET stock = 2, lock_version = 1 WHERE id = 5 AND COALESCE(lock_version, 0) = 0;
SELECT * FROM items WHERE id = 5;
-- now that it has a version, null is stale
SELECT * FROM public.error_of($$UPDATE items SET lock_version = NULL WHERE id = 5$$);
DELETE FROM items WHERE id = 5;

-- INSERT ... ON CONFLICT DO UPDATE fires the UPDATE side on the existing row
INSERT INTO items VALUES (1, 50) ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock;
SELECT * FROM items WHERE id = 1;
INSERT INTO items VALUES (1, 51) ON CONFLICT (id)
    DO UPDATE SET stock = EXCLUDED.stock, lock_version = items.lock_version + 1;
SELECT * FROM items WHERE id = 1;
-- the proposed row's version (0 from the INSERT side) is stale
SELECT * FROM public.error_of($$INSERT INTO items VALUES (1, 52) ON CONFLICT (id)
    DO UPDATE SET stock = EXCLUDED.stock, lock_version = EXCLUDED.lock_version$$);
-- an upsert that proposes the version read is checked like any UPDATE
INSERT INTO items VALUES (1, 53, 7) ON CONFLICT (id)
    DO UPDATE SET stock = EXCLUDED.stock, lock_version = EXCLUDED.lock_version;
SELECT * FROM items WHERE id = 1;

-- MERGE's UPDATE actions are UPDATEs
CREATE TABLE changes (id int, stock int, seen int);
INSERT INTO changes VALUES (1, 60, 8), (2, 61, 5), (9, 62, NULL);
-- row 1 carries the version read, row 2 the next version, row 9 is new
MERGE INTO items i USING changes c ON i.id = c.id
    WHEN MATCHED AND c.id = 1 THEN UPDATE SET stock = c.stock, lock_version = c.seen
    WHEN MATCHED THEN UPDATE SET stock = c.stock, lock_version = c.seen + 1
    WHEN NOT MATCHED THEN INSERT VALUES (c.id, c.stock);
SELECT * FROM items ORDER BY id;
-- the same versions again are stale now
SELECT * FROM public.error_of($$MERGE INTO items i USING changes c ON i.id = c.id
    WHEN MATCHED THEN UPDATE SET stock = 0, lock_version = c.seen$$);
-- a MERGE whose only UPDATE action does not name the column leaves it
MERGE INTO items i USING changes c ON i.id = c.id
    WHEN MATCHED THEN UPDATE SET stock = c.stock + 1;
SELECT * FROM items ORDER BY id;
-- PostgreSQL reports the columns of all of a MERGE's UPDATE actions
-- together, so when one action names the version, an action that does not
-- counts as sending the version read: row 1 is bumped too
MERGE INTO items i USING (SELECT * FROM changes WHERE id < 9) c ON i.id = c.id
    WHEN MATCHED AND c.id = 1 THEN UPDATE SET stock = 70
    WHEN MATCHED THEN UPDATE SET stock = 71, lock_version = c.seen + 2;
SELECT * FROM items ORDER BY id;
DROP TABLE changes;

-- mode 'every_update': an UPDATE that does not set the column counts as
-- sending the version read, so every change bumps the version
CREATE TABLE strict_items (id int PRIMARY KEY, stock int, lock_version int NOT NULL DEFAULT 0);
CREATE TRIGGER strict_version BEFORE UPDATE ON strict_items
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('lock_version', 'every_update');
INSERT INTO strict_items VALUES (1, 5);
UPDATE strict_items SET stock = 4;
UPDATE strict_items SET stock = 3, lock_version = 1;
UPDATE strict_items SET stock = 2, lock_version = 3 WHERE lock_version = 2;
SELECT * FROM public.error_of($$UPDATE strict_items SET stock = 0, lock_version = 1$$);
SELECT * FROM strict_items;
-- and 'when_set', the default, by name
CREATE TRIGGER strict_version2 BEFORE UPDATE ON strict_items
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('lock_version', 'when_set');
DROP TRIGGER strict_version ON strict_items;
UPDATE strict_items SET stock = 1;
SELECT * FROM strict_items;

-- a custom column of another integer type
CREATE TABLE docs (id int PRIMARY KEY, body text, rev bigint NOT NULL DEFAULT 0);
CREATE TRIGGER docs_rev BEFORE UPDATE ON docs
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('rev');
INSERT INTO docs VALUES (1, 'a');
UPDATE docs SET body = 'b', rev = 0 WHERE id = 1;
UPDATE docs SET body = 'c', rev = 2 WHERE id = 1 AND rev = 1;
SELECT * FROM public.error_of($$UPDATE docs SET body = 'd', rev = 0 WHERE id = 1$$);
SELECT * FROM docs;

-- no wrap-around at the type's maximum: every update that takes part fails
-- with 22003 (the next version does not fit), one that does not still works
CREATE TABLE tiny (id int PRIMARY KEY, note text, lock_version smallint);
INSERT INTO tiny VALUES (1, 'a', 32767), (2, 'b', 32766);
CREATE TRIGGER tiny_version BEFORE UPDATE ON tiny
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
SELECT * FROM public.error_of($$UPDATE tiny SET note = 'x', lock_version = 32767 WHERE id = 1$$);
SELECT * FROM public.error_of($$UPDATE tiny SET note = 'x', lock_version = lock_version + 1 WHERE id = 1$$);
SELECT * FROM public.error_of($$UPDATE tiny SET note = 'x', lock_version = -32768 WHERE id = 1$$);
UPDATE tiny SET note = 'x' WHERE id = 1;
UPDATE tiny SET note = 'y', lock_version = 32767 WHERE id = 2;
SELECT * FROM tiny ORDER BY id;
CREATE TABLE huge (id int PRIMARY KEY, lock_version bigint);
INSERT INTO huge VALUES (1, 9223372036854775807);
CREATE TRIGGER huge_version BEFORE UPDATE ON huge
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
SELECT * FROM public.error_of($$UPDATE huge SET lock_version = 9223372036854775807$$);

-- a partitioned table: the trigger is cloned to the partitions, and a row
-- that moves to another partition keeps the version it was given
CREATE TABLE parted (id int, region text, lock_version int NOT NULL DEFAULT 0,
                     PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
CREATE TRIGGER parted_version BEFORE INSERT OR UPDATE ON parted
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
INSERT INTO parted VALUES (1, 'eu');
UPDATE parted SET region = 'us', lock_version = 0 WHERE id = 1;
SELECT tableoid::regclass, * FROM parted;
SELECT * FROM public.error_of($$UPDATE parted SET region = 'eu', lock_version = 0 WHERE id = 1$$);

-- the detail shows versions only to roles that may read the column
CREATE ROLE regress_lockfence_writer;
GRANT USAGE ON SCHEMA lockfence TO regress_lockfence_writer;
GRANT UPDATE ON docs TO regress_lockfence_writer;
SET ROLE regress_lockfence_writer;
SELECT * FROM public.error_of($$UPDATE docs SET body = 'e', rev = 0$$);
RESET ROLE;
GRANT SELECT (rev) ON docs TO regress_lockfence_writer;
SET ROLE regress_lockfence_writer;
SELECT * FROM public.error_of($$UPDATE docs SET body = 'e', rev = 0$$);
RESET ROLE;
-- nor under row-level security
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY docs_all ON docs USING (true);
SET ROLE regress_lockfence_writer;
SELECT * FROM public.error_of($$UPDATE docs SET body = 'e', rev = 0$$);
RESET ROLE;
ALTER TABLE docs DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON docs FROM regress_lockfence_writer;
REVOKE ALL ON SCHEMA lockfence FROM regress_lockfence_writer;
DROP ROLE regress_lockfence_writer;

-- wrong uses
CREATE TABLE wrong (id int, lock_version text, v int,
                    g int GENERATED ALWAYS AS (id + 1) STORED);
INSERT INTO wrong VALUES (1, 'x', 1);
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('nope');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('g');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('v', 'sometimes');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('v', 'when_set', 'extra');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w AFTER UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('v');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH STATEMENT EXECUTE FUNCTION lockfence.lock_version_check('v');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE DELETE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('v');
SELECT * FROM public.error_of('DELETE FROM wrong');
DROP TRIGGER w ON wrong;
SELECT * FROM public.error_of('SELECT lockfence.lock_version_check()');
SELECT * FROM wrong;

DROP TABLE items, strict_items, docs, tiny, huge, parted, wrong;
DROP FUNCTION public.bump_version();
