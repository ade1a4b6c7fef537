--
-- Pessimistic row locks (lock_row, lock_rows) and the optimistic
-- lock_version trigger.
--
CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL);
INSERT INTO accounts SELECT i, 1000 FROM generate_series(1, 10) AS i;

-- lock_row: true when locked, false when there is no such row.
BEGIN;
SELECT lockfence.lock_row('accounts', 1) AS locked;
SELECT lockfence.lock_row('accounts', 1) AS locked_again;
SELECT lockfence.lock_row('accounts', 99) AS no_such_row;
-- the key is cast to the primary key's type
SELECT lockfence.lock_row('accounts', 2::bigint) AS bigint_key;
SELECT lockfence.lock_row('accounts', '3'::text) AS text_key;
SELECT lockfence.lock_row('accounts', 4, timeout => '1 s', mode => 'no key update') AS no_key_update;
SELECT lockfence.lock_row('accounts', 5, mode => 'share') AS share;
SELECT lockfence.lock_row('accounts', 6, mode => 'KEY SHARE') AS key_share;
-- the row locks show up as this transaction's xmax
SELECT id FROM accounts WHERE xmax::text = txid_current()::text ORDER BY id;
COMMIT;

-- lock_rows: locks the existing rows in key order and counts them.
BEGIN;
SELECT lockfence.lock_rows('accounts', ARRAY[7, 3, 99, 5, 3]) AS locked;
SELECT lockfence.lock_rows('accounts', ARRAY[]::int[]) AS none;
SELECT lockfence.lock_rows('accounts', ARRAY['8', '9']::text[], '2 s', 'share') AS text_keys;
SELECT id FROM accounts WHERE xmax::text = txid_current()::text ORDER BY id;
COMMIT;

-- Usable from PL/pgSQL functions and procedures.
CREATE FUNCTION withdraw(account int, amount numeric) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
    result numeric;
BEGIN
    IF NOT lockfence.lock_row('accounts', account, timeout => '1 s') THEN
        RAISE EXCEPTION 'no account %', account;
    END IF;
    UPDATE accounts SET balance = balance - amount WHERE id = account
        RETURNING balance INTO result;
    RETURN result;
END
$$;
SELECT withdraw(1, 100);
SELECT withdraw(1, 100);
CREATE PROCEDURE transfer(src int, dst int, amount numeric)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lockfence.lock_rows('accounts', ARRAY[src, dst], '1 s');
    UPDATE accounts SET balance = balance - amount WHERE id = src;
    UPDATE accounts SET balance = balance + amount WHERE id = dst;
    COMMIT;
END
$$;
CALL transfer(1, 2, 50);
SELECT id, balance FROM accounts WHERE id IN (1, 2) ORDER BY id;

-- Identifiers are quoted and keys are parameters: odd names are harmless.
CREATE TABLE "odd ""name""; DROP TABLE accounts; --" ("key; --" text PRIMARY KEY);
INSERT INTO "odd ""name""; DROP TABLE accounts; --" VALUES ('x''); DROP TABLE accounts; --');
SELECT lockfence.lock_row('"odd ""name""; DROP TABLE accounts; --"', 'x''); DROP TABLE accounts; --'::text) AS locked;
SELECT lockfence.lock_rows('"odd ""name""; DROP TABLE accounts; --"', ARRAY['x''); DROP TABLE accounts; --']) AS locked;
SELECT count(*) AS accounts_still_there FROM accounts;

-- The plans follow schema changes.
CREATE TABLE reshaped (a int PRIMARY KEY, b int UNIQUE NOT NULL);
INSERT INTO reshaped VALUES (1, 10);
SELECT lockfence.lock_row('reshaped', 1) AS by_a;
ALTER TABLE reshaped DROP CONSTRAINT reshaped_pkey, ADD PRIMARY KEY (b);
SELECT lockfence.lock_row('reshaped', 1) AS by_b_one, lockfence.lock_row('reshaped', 10) AS by_b_ten;

-- Tables lock_row cannot serve.
CREATE TABLE no_pk (id int);
CREATE TABLE two_col_pk (a int, b int, PRIMARY KEY (a, b));
CREATE VIEW accounts_view AS SELECT * FROM accounts;
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('no_pk', 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('two_col_pk', 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts_view', 1)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('no_such_table', 1)$$);
-- (bad argument values are in lockfence_bad_input)
SELECT * FROM public.error_of($$SELECT lockfence.lock_rows('no_pk', ARRAY[1])$$);
-- without the privilege to lock, the caller's own rights apply
CREATE ROLE regress_lockfence_reader;
GRANT SELECT ON accounts TO regress_lockfence_reader;
SET ROLE regress_lockfence_reader;
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', 1)$$);
RESET ROLE;
REVOKE ALL ON accounts FROM regress_lockfence_reader;
DROP ROLE regress_lockfence_reader;

--
-- lock_version_check: optimistic locking.
--
CREATE TABLE items (id int PRIMARY KEY, stock int NOT NULL, lock_version int);
CREATE TRIGGER items_version BEFORE INSERT OR UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
INSERT INTO items (id, stock) VALUES (1, 5);
INSERT INTO items VALUES (2, 5, 7);
SELECT * FROM items ORDER BY id;
-- the version read is sent back: accepted, and incremented
UPDATE items SET stock = 4, lock_version = 0 WHERE id = 1;
SELECT * FROM items WHERE id = 1;
-- a stale version: 40001, nothing changes
SELECT * FROM public.error_of($$UPDATE items SET stock = 0, lock_version = 0 WHERE id = 1$$);
SELECT * FROM public.error_of($$UPDATE items SET stock = 0, lock_version = NULL WHERE id = 1$$);
SELECT * FROM items WHERE id = 1;
-- an UPDATE that does not mention the version passes and increments
UPDATE items SET stock = stock - 1 WHERE id = 1;
UPDATE items SET stock = stock - 1;
SELECT * FROM items ORDER BY id;
-- rows from before versioning carry NULL: the first update sets 1
ALTER TABLE items DISABLE TRIGGER items_version;
INSERT INTO items VALUES (3, 5, NULL);
ALTER TABLE items ENABLE TRIGGER items_version;
UPDATE items SET stock = 1 WHERE id = 3;
SELECT * FROM public.error_of($$UPDATE items SET stock = 0, lock_version = 7 WHERE id = 3$$);
SELECT * FROM items WHERE id = 3;

-- a custom column of another integer type
CREATE TABLE docs (id int PRIMARY KEY, body text, rev bigint NOT NULL DEFAULT 0);
CREATE TRIGGER docs_rev BEFORE UPDATE ON docs
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('rev');
INSERT INTO docs VALUES (1, 'a');
UPDATE docs SET body = 'b', rev = 0 WHERE id = 1;
SELECT * FROM public.error_of($$UPDATE docs SET body = 'c', rev = 0 WHERE id = 1$$);
SELECT * FROM docs;
-- the largest version cannot be incremented
CREATE TABLE tiny (id int PRIMARY KEY, lock_version smallint);
INSERT INTO tiny VALUES (1, 32767);
CREATE TRIGGER tiny_version BEFORE UPDATE ON tiny
    FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
SELECT * FROM public.error_of($$UPDATE tiny SET id = 1$$);

-- wrong uses
CREATE TABLE wrong (id int, lock_version text, v int);
INSERT INTO wrong VALUES (1, 'x', 1);
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('nope');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('v', 'extra');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w AFTER UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('v');
SELECT * FROM public.error_of('UPDATE wrong SET id = 2');
DROP TRIGGER w ON wrong;
CREATE TRIGGER w BEFORE DELETE ON wrong FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check('v');
SELECT * FROM public.error_of('DELETE FROM wrong');
DROP TRIGGER w ON wrong;
SELECT * FROM public.error_of('SELECT lockfence.lock_version_check()');
SELECT * FROM wrong;

DROP TABLE accounts, "odd ""name""; DROP TABLE accounts; --", reshaped, no_pk,
    two_col_pk, items, docs, tiny, wrong CASCADE;
DROP FUNCTION withdraw(int, numeric);
DROP PROCEDURE transfer(int, int, numeric);
