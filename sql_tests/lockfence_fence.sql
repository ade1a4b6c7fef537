--
-- The fence-check trigger in monotonic and lease mode, lockfence.pin(),
-- pins in lockfence.locks, and wrong uses of the trigger.
--

CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL, fence_token bigint);
INSERT INTO accounts VALUES (1, 1000, NULL), (2, 1000, NULL), (42, 1000, NULL);

SELECT fence_rejections_monotonic AS mono0, fence_rejections_lease AS lease0
FROM lockfence.stats \gset

--
-- Monotonic mode: a token must be present and may not go down.
--
CREATE TRIGGER accounts_fence BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token');

-- rows from before fencing carry no token: the first fenced write sets one
UPDATE accounts SET balance = 900, fence_token = 10 WHERE id = 1;
-- the same or a newer token is accepted
UPDATE accounts SET balance = 800, fence_token = 10 WHERE id = 1;
UPDATE accounts SET balance = 700, fence_token = 11 WHERE id = 1;
-- an older token is rejected with LF001, and nothing changes
SELECT * FROM public.error_of($$UPDATE accounts SET balance = 0, fence_token = 10 WHERE id = 1$$);
-- a missing token is rejected
SELECT * FROM public.error_of($$UPDATE accounts SET balance = 0, fence_token = NULL WHERE id = 1$$);
SELECT * FROM public.error_of($$INSERT INTO accounts VALUES (3, 5, NULL)$$);
-- a multi-row statement fails as a whole
SELECT * FROM public.error_of($$UPDATE accounts SET fence_token = 10 WHERE id IN (1, 2)$$);
SELECT id, balance, fence_token FROM accounts ORDER BY id;
-- an UPDATE that does not touch the token keeps it, and passes
UPDATE accounts SET balance = balance - 1 WHERE id = 1;
INSERT INTO accounts VALUES (3, 5, 1);
SELECT id, balance, fence_token FROM accounts ORDER BY id;
SELECT fence_rejections_monotonic - :mono0 AS monotonic_rejections FROM lockfence.stats;
DROP TRIGGER accounts_fence ON accounts;

--
-- Lease mode: the token must be the live holder of 'account:' || id.
--
CREATE TRIGGER accounts_fence BEFORE INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'account:', 'id');

SELECT lockfence.acquire('account:42', '5 s') AS t42 \gset
UPDATE accounts SET balance = balance - 100, fence_token = :t42 WHERE id = 42;
SELECT balance, fence_token = :t42 AS token_stored FROM accounts WHERE id = 42;
-- a token of another lock, a made-up token, or no token: rejected
SELECT lockfence.acquire('account:2', '5 s') AS t2 \gset
SELECT state, message FROM public.error_of(format(
    'UPDATE accounts SET fence_token = %s WHERE id = 42', :t2));
SELECT state, message FROM public.error_of(format(
    'UPDATE accounts SET fence_token = %s WHERE id = 2', :t2 + 1000));
SELECT state, message, hint FROM public.error_of(
    'UPDATE accounts SET fence_token = NULL WHERE id = 2');
SELECT state, message FROM public.error_of(
    'UPDATE accounts SET fence_token = -5 WHERE id = 2');
-- a lock that is not held: the detail says so
SELECT state, message, detail FROM public.error_of(
    'INSERT INTO accounts VALUES (7, 0, 1)');
-- INSERT works with a live token
SELECT lockfence.acquire('account:7', '5 s') AS t7 \gset
INSERT INTO accounts VALUES (7, 0, :t7);

-- The paused holder: the lease of the old token ran out and a new holder
-- took over; the old holder's write is rejected, naming both tokens.
SELECT lockfence.acquire('account:1', '50 ms') AS told \gset
SELECT pg_sleep(0.1);
SELECT lockfence.acquire('account:1', '5 s') AS tnew \gset
SELECT state, message,
       detail = format('Token %s does not hold the lock; the current holder''s token is %s.', :told, :tnew) AS detail_names_both_tokens
FROM public.error_of(format('UPDATE accounts SET balance = 0, fence_token = %s WHERE id = 1', :told));
-- even before the new holder has written anything, and even when the old
-- token is larger than the row's token
SELECT fence_token < :told AS row_token_is_older FROM accounts WHERE id = 1;
UPDATE accounts SET balance = 650, fence_token = :tnew WHERE id = 1;

-- Pins: an accepted write pins the lease until the transaction ends; the
-- view shows it, release inside the transaction is deferred to its end.
BEGIN;
UPDATE accounts SET balance = balance - 1, fence_token = :t42 WHERE id = 42;
UPDATE accounts SET balance = balance - 1, fence_token = :t42 WHERE id = 42;
SELECT name, pins FROM lockfence.locks WHERE name = 'account:42';
SELECT lockfence.release('account:42', :t42) AS released;
SELECT name, pins FROM lockfence.locks WHERE name = 'account:42';
SELECT lockfence.is_held('account:42', :t42) AS held_after_release;
SELECT lockfence.renew('account:42', :t42, '1 min') AS renewed_after_release;
COMMIT;
SELECT count(*) AS after_commit FROM lockfence.locks WHERE name = 'account:42';

-- A pinned lease does not expire: it outlives its lease until the writing
-- transaction ends, and is freed then.
SELECT lockfence.release('account:2', :t2) AS released;
SELECT lockfence.acquire('account:2', '100 ms') AS t2b \gset
BEGIN;
UPDATE accounts SET balance = balance + 1, fence_token = :t2b WHERE id = 2;
SELECT pg_sleep(0.2);
SELECT lockfence.is_held('account:2', :t2b) AS held_past_lease;
SELECT lockfence.try_acquire('account:2') IS NULL AS others_must_wait;
UPDATE accounts SET balance = balance + 1, fence_token = :t2b WHERE id = 2;
COMMIT;
SELECT lockfence.is_held('account:2', :t2b) AS held_after_commit;
SELECT count(*) AS after_commit FROM lockfence.locks WHERE name = 'account:2';

-- A rolled-back write drops its pin too.
SELECT lockfence.acquire('account:3', '5 s') AS t3 \gset
BEGIN;
UPDATE accounts SET fence_token = :t3 WHERE id = 3;
ROLLBACK;
SELECT pins FROM lockfence.locks WHERE name = 'account:3';

-- One transaction writing under many locks (beyond the first few, a hash
-- table finds its pins): each lease is pinned once however many rows it
-- writes, a stale token is still refused, and every pin ends with it.
CREATE TABLE many (id int PRIMARY KEY, fence_token bigint);
CREATE TRIGGER many_fence BEFORE INSERT OR UPDATE OR DELETE ON many
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'many:', 'id');
INSERT INTO many SELECT i, lockfence.acquire('many:' || i, '1 min') FROM generate_series(1, 40) i;
BEGIN;
UPDATE many SET fence_token = fence_token WHERE id <= 5;
SELECT count(*) AS pinned, sum(pins) AS pins FROM lockfence.locks WHERE name LIKE 'many:%' AND pins > 0;
UPDATE many SET fence_token = fence_token;
UPDATE many SET fence_token = fence_token WHERE id % 2 = 0;
SELECT count(*) AS pinned, sum(pins) AS pins FROM lockfence.locks WHERE name LIKE 'many:%' AND pins > 0;
SELECT state, message FROM public.error_of('UPDATE many SET fence_token = fence_token + 1 WHERE id = 5');
SELECT state, message FROM public.error_of('UPDATE many SET fence_token = fence_token + 1 WHERE id = 35');
DELETE FROM many WHERE id > 30;
COMMIT;
SELECT count(*) AS pinned_after_commit FROM lockfence.locks WHERE name LIKE 'many:%' AND pins > 0;
SELECT count(*) AS rows_left FROM many;
-- the next transaction starts with no pins
SELECT state, message FROM public.error_of('DELETE FROM many WHERE id = 1');
SELECT count(*) FILTER (WHERE lockfence.force_release('many:' || i)) AS released FROM generate_series(1, 40) i;
DROP TABLE many;

-- DELETE in lease mode needs a live token shown earlier in the transaction.
SELECT state, message, hint FROM public.error_of('DELETE FROM accounts WHERE id = 3');
BEGIN;
SELECT lockfence.pin('account:3', :t3);
DELETE FROM accounts WHERE id = 3;
COMMIT;
SELECT count(*) AS deleted FROM accounts WHERE id = 3;
SELECT state, message FROM public.error_of(format('SELECT lockfence.pin(%L, %s)', 'account:3', :t3 + 1));

-- Moving a row to another lock also takes it from its old lock, so the
-- transaction must have fenced both, as for a DELETE.
SELECT lockfence.acquire('account:8', '5 s') AS t8 \gset
SELECT state, message FROM public.error_of(format(
    'UPDATE accounts SET id = 8, fence_token = %s WHERE id = 7', :t8));
BEGIN;
SELECT lockfence.pin('account:7', :t7);
UPDATE accounts SET id = 8, fence_token = :t8 WHERE id = 7;
COMMIT;
SELECT id, fence_token = :t8 AS new_token FROM accounts WHERE id IN (7, 8);

SELECT fence_rejections_lease - :lease0 AS lease_rejections FROM lockfence.stats;
DROP TRIGGER accounts_fence ON accounts;

-- Lease mode with one lock for the whole table.
CREATE TABLE ledger (id serial, amount numeric, fence_token bigint);
CREATE TRIGGER ledger_fence BEFORE INSERT ON ledger
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'ledger');
SELECT lockfence.acquire('ledger', '5 s') AS tl \gset
INSERT INTO ledger (amount, fence_token) VALUES (-100, :tl);
SELECT state, message FROM public.error_of(format(
    'INSERT INTO ledger (amount, fence_token) VALUES (-100, %s)', :tl - 1));
SELECT lockfence.release('ledger', :tl);

--
-- Wrong uses: clear errors, no crash.
--
CREATE TABLE misuse (id int, tok bigint, small int, label text);
INSERT INTO misuse VALUES (1, 1, 1, NULL);
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('nope');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('small');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check();
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', 'p:', 'id', 'extra');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t AFTER UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH STATEMENT EXECUTE FUNCTION lockfence.fence_check('tok');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t BEFORE DELETE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok');
SELECT * FROM public.error_of('DELETE FROM misuse');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', 'p:', 'nope');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', 'p:', 'label');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', '');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
SELECT repeat('x', 201) AS long_prefix \gset
CREATE TRIGGER t BEFORE UPDATE ON misuse FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', :'long_prefix');
SELECT * FROM public.error_of('UPDATE misuse SET id = 2');
DROP TRIGGER t ON misuse;
SELECT * FROM public.error_of('SELECT lockfence.fence_check()');
SELECT * FROM public.error_of('SELECT lockfence.pin(NULL, 1)');
SELECT * FROM public.error_of($$SELECT lockfence.pin('a', 0)$$);
SELECT * FROM misuse;

-- A session keeps each trigger's resolved arguments, and notices when the
-- table or the trigger changes under them.
CREATE TABLE refit (id int, tok bigint, note text);
INSERT INTO refit VALUES (1, 1, 'a');
CREATE TRIGGER refit_fence BEFORE UPDATE ON refit
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok');
UPDATE refit SET tok = 2;
SELECT * FROM public.error_of('UPDATE refit SET tok = 1');
ALTER TABLE refit RENAME COLUMN tok TO tok_old;
SELECT * FROM public.error_of($$UPDATE refit SET note = 'b'$$);
ALTER TABLE refit RENAME COLUMN tok_old TO tok;
SELECT * FROM public.error_of('UPDATE refit SET tok = 1');
ALTER TABLE refit DROP COLUMN tok, ADD COLUMN tok int;
SELECT * FROM public.error_of($$UPDATE refit SET note = 'b'$$);
-- a new bigint column in another position: its NULL is refused, then any
-- token is accepted once, and a lower one is refused again
ALTER TABLE refit DROP COLUMN tok, ADD COLUMN tok bigint;
SELECT * FROM public.error_of($$UPDATE refit SET note = 'b'$$);
UPDATE refit SET tok = 5;
SELECT * FROM public.error_of('UPDATE refit SET tok = 4');
-- CREATE OR REPLACE TRIGGER keeps the trigger's OID
SELECT lockfence.acquire('refit:1', '1 min') AS tr \gset
CREATE OR REPLACE TRIGGER refit_fence BEFORE UPDATE ON refit
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', 'refit:', 'id');
SELECT state, message,
       detail = format('Token 6 does not hold the lock; the current holder''s token is %s.', :tr) AS detail_names_holder
FROM public.error_of('UPDATE refit SET tok = tok + 1');
UPDATE refit SET tok = :tr;
CREATE OR REPLACE TRIGGER refit_fence BEFORE UPDATE ON refit
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', 'refit-', 'id');
SELECT state, message FROM public.error_of(format('UPDATE refit SET tok = %s', :tr));
CREATE OR REPLACE TRIGGER refit_fence BEFORE UPDATE ON refit
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', 'refit:', 'id');
-- the key column's type changes its formatting path, not the lock's name
ALTER TABLE refit ALTER COLUMN id TYPE bigint;
UPDATE refit SET tok = :tr;
ALTER TABLE refit ALTER COLUMN id TYPE smallint;
UPDATE refit SET tok = :tr;
ALTER TABLE refit ALTER COLUMN id TYPE numeric;
UPDATE refit SET tok = :tr;
SELECT state, message FROM public.error_of('UPDATE refit SET id = 1.0');
CREATE OR REPLACE TRIGGER refit_fence AFTER UPDATE ON refit
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok', 'refit:', 'id');
SELECT * FROM public.error_of(format('UPDATE refit SET tok = %s', :tr));
SELECT id, tok = :tr AS holder_token, note FROM refit;
SELECT lockfence.release('refit:1', :tr);
DROP TABLE refit;

-- A generated key column is refused: the trigger would see its value from
-- before the write, so a row could move under another lock.
CREATE TABLE gen_keyed (id int PRIMARY KEY, acct int,
                        acct_key text GENERATED ALWAYS AS ('a' || acct) STORED,
                        fence_token bigint);
CREATE TRIGGER gen_keyed_fence BEFORE INSERT OR UPDATE ON gen_keyed
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'acct:', 'acct_key');
SELECT * FROM public.error_of('INSERT INTO gen_keyed (id, acct, fence_token) VALUES (1, 1, 1)');
DROP TABLE gen_keyed;

-- Two-phase commit cannot carry pins.
SELECT lockfence.acquire('account:42', '5 s') AS t42b \gset
CREATE TRIGGER accounts_fence BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'account:', 'id');
BEGIN;
UPDATE accounts SET fence_token = :t42b WHERE id = 42;
PREPARE TRANSACTION 'regress_lockfence_pins';
SELECT pins FROM lockfence.locks WHERE name = 'account:42';

DROP TABLE accounts, ledger, misuse;
SELECT count(lockfence.force_release(name)) >= 0 AS cleaned FROM lockfence.locks;
SELECT count(*) AS locks_left FROM lockfence.locks;
