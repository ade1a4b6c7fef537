--
-- A lease belongs to the role that took it: renew, release, is_held, pin and
-- fenced writes work for that role, roles with its privileges and the
-- admin; to every other role its token is a wrong token, and no error shows
-- it a token it may not see in lockfence.locks.
--
CREATE ROLE regress_lf_alice;
CREATE ROLE regress_lf_mallory;
CREATE ROLE regress_lf_team;             -- has alice's privileges
GRANT regress_lf_alice TO regress_lf_team;
CREATE ROLE regress_lf_noinherit NOINHERIT;  -- a member without her privileges
GRANT regress_lf_alice TO regress_lf_noinherit;
CREATE TABLE fenced_accounts (id int PRIMARY KEY, balance int, fence_token bigint);
INSERT INTO fenced_accounts VALUES (42, 100, NULL);
CREATE TRIGGER fenced_accounts_fence BEFORE INSERT OR UPDATE ON fenced_accounts
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'account:', 'id');
GRANT SELECT, UPDATE ON fenced_accounts TO PUBLIC;

SET ROLE regress_lf_alice;
SELECT lockfence.acquire('account:42', '1 min') AS alice_token \gset
RESET ROLE;
SELECT lockfence.try_acquire('probe', '1 min') AS probe_token \gset
SELECT lockfence.release('probe', :probe_token);

-- mallory, with alice's token: false, false, false, and LF001 without it
SET ROLE regress_lf_mallory;
SELECT lockfence.is_held('account:42', :alice_token) AS mallory_is_held;
SELECT lockfence.renew('account:42', :alice_token, '1 h') AS mallory_renewed;
SELECT lockfence.release('account:42', :alice_token) AS mallory_released;
SELECT state, message, replace(detail, :'alice_token', '<her token>') AS detail
  FROM public.error_of($$SELECT lockfence.pin('account:42', $$ || :alice_token || $$)$$);
SELECT state, message, replace(detail, :'alice_token', '<her token>') AS detail
  FROM public.error_of($$UPDATE fenced_accounts SET balance = 0, fence_token = $$ || :alice_token || $$ WHERE id = 42$$);
-- a wrong token of hers gives the same answer
SELECT state, message, detail
  FROM public.error_of($$SELECT lockfence.pin('account:42', 9223372036854775807)$$);
-- probing every token around hers finds nothing
SELECT count(*) AS probes_that_hit
  FROM generate_series(greatest(1, :probe_token - 1000), :probe_token + 1000) AS t
 WHERE lockfence.is_held('account:42', t);
-- and the view hides her token
SELECT name, token IS NULL AS token_hidden FROM lockfence.locks;
RESET ROLE;
SELECT balance, fence_token FROM fenced_accounts;
SELECT lockfence.is_held('account:42', :alice_token) AS still_held_by_alice;

-- a member without her privileges (NOINHERIT) is another role too
SET ROLE regress_lf_noinherit;
SELECT lockfence.is_held('account:42', :alice_token) AS noinherit_is_held;
RESET ROLE;

-- alice herself: the detail names the current holder's token
SET ROLE regress_lf_alice;
SELECT state, replace(detail, :'alice_token', '<her token>') AS detail
  FROM public.error_of($$SELECT lockfence.pin('account:42', 9223372036854775807)$$);
SELECT lockfence.is_held('account:42', :alice_token) AS alice_is_held;
RESET ROLE;

-- a role with her privileges may use her lease: write, renew, pin
SET ROLE regress_lf_team;
BEGIN;
UPDATE fenced_accounts SET balance = 90, fence_token = :alice_token WHERE id = 42;
SELECT lockfence.pin('account:42', :alice_token);
COMMIT;
SELECT lockfence.renew('account:42', :alice_token, '1 min') AS team_renewed;
SELECT name, token = :alice_token AS token_shown FROM lockfence.locks;
RESET ROLE;
SELECT balance, fence_token = :alice_token AS written_with_her_token FROM fenced_accounts;

-- a pin taken in a transaction does not carry over to another role
SET ROLE regress_lf_alice;
BEGIN;
SELECT lockfence.pin('account:42', :alice_token);
SET LOCAL ROLE regress_lf_mallory;
SELECT state, replace(detail, :'alice_token', '<her token>') AS detail
  FROM public.error_of($$SELECT lockfence.pin('account:42', $$ || :alice_token || $$)$$);
ROLLBACK;
RESET ROLE;

-- another role's transaction lock: release is false, not an error about it
SET ROLE regress_lf_alice;
BEGIN;
SELECT lockfence.acquire_xact('xact-lock') AS xact_token \gset
SET LOCAL ROLE regress_lf_mallory;
SELECT lockfence.release('xact-lock', :xact_token) AS mallory_released_xact;
SELECT lockfence.is_held('xact-lock', :xact_token) AS mallory_sees_xact_held;
RESET ROLE;
SELECT lockfence.is_held('xact-lock', :xact_token) AS alice_sees_xact_held;
COMMIT;
RESET ROLE;

-- the admin (here a superuser) may release it
SELECT lockfence.release('account:42', :alice_token) AS admin_released;

-- a token that was never handed out says so
SELECT state, detail FROM public.error_of($$SELECT lockfence.pin('account:42', 0)$$);
SELECT state, detail FROM public.error_of($$UPDATE fenced_accounts SET fence_token = -5 WHERE id = 42$$);

DROP TABLE fenced_accounts;
DROP ROLE regress_lf_alice, regress_lf_mallory, regress_lf_team, regress_lf_noinherit;
