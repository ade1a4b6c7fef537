--
-- Pessimistic row locks (lock_row, lock_rows).
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

-- keys are cast to the primary key's whole type, its modifier included, and
-- a key that does not convert exactly is refused instead of locking
-- another row
CREATE TABLE key_char (k char(5) PRIMARY KEY);
INSERT INTO key_char VALUES ('a'), ('abcde');
CREATE TABLE key_varchar (k varchar(3) PRIMARY KEY);
INSERT INTO key_varchar VALUES ('abc');
CREATE TABLE key_numeric (k numeric(5,2) PRIMARY KEY);
INSERT INTO key_numeric VALUES (1.25), (2);
CREATE TABLE key_bit (k bit(4) PRIMARY KEY);
INSERT INTO key_bit VALUES (B'1010');
CREATE TABLE key_ts (k timestamp(0) PRIMARY KEY);
INSERT INTO key_ts VALUES ('2024-01-01 10:00:00');
BEGIN;
SELECT lockfence.lock_row('key_char', 'abcde'::text) AS char_abcde,
       lockfence.lock_row('key_char', 'abxyz'::text) AS char_no_such_row,
       lockfence.lock_row('key_char', 'a    '::text) AS char_padded,
       lockfence.lock_row('key_varchar', 'abc'::text) AS varchar_abc,
       lockfence.lock_row('key_numeric', 1.25) AS numeric_125,
       lockfence.lock_row('key_numeric', 2) AS numeric_from_int,
       lockfence.lock_row('key_bit', B'1010') AS bit_1010,
       lockfence.lock_row('key_ts', '2024-01-01 10:00:00'::timestamp) AS ts;
-- exactly the rows named are locked
SELECT k FROM key_char WHERE xmax::text = txid_current()::text ORDER BY k;
SELECT k FROM key_numeric WHERE xmax::text = txid_current()::text ORDER BY k;
SELECT lockfence.lock_rows('key_char', ARRAY['a', 'abcde', 'zz']::text[]) AS char_rows;
ROLLBACK;
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('key_char', 'abcdefg'::text)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('key_varchar', 'abcd'::text)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('key_numeric', 1.251)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('key_bit', B'10100')$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('key_ts', '2024-01-01 10:00:00.4'::timestamp)$$);
-- another type that would round: refused; one that converts exactly: locks
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', 1.7)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_row('accounts', 1.5::float8)$$);
SELECT * FROM public.error_of($$SELECT lockfence.lock_rows('accounts', ARRAY[1, 2.5, 3])$$);
BEGIN;
SELECT lockfence.lock_row('accounts', 2.0) AS numeric_exact,
       lockfence.lock_row('accounts', '07'::text) AS text_parsed,
       lockfence.lock_rows('accounts', ARRAY[3.0, 4.00, NULL]) AS numeric_rows;
SELECT id FROM accounts WHERE xmax::text = txid_current()::text ORDER BY id;
ROLLBACK;
DROP TABLE key_char, key_varchar, key_numeric, key_bit, key_ts;

DROP TABLE accounts, "odd ""name""; DROP TABLE accounts; --", reshaped, no_pk,
    two_col_pk CASCADE;
DROP FUNCTION withdraw(int, numeric);
DROP PROCEDURE transfer(int, int, numeric);
