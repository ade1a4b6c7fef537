
# A stress run with a history that is checked offline.
#
# pgbench clients loop over five resources: take a short lease (random 20
# to 200 ms) with a short wait timeout, read the counter, now and then sleep
# past the lease, then write counter := what they read + 1 under the
# lease-mode fence trigger and log the write in a history table in the same
# transaction, and release.  The read and the write are separate statements,
# so without fencing a writer that lost its lease would overwrite a newer
# value (a lost update).  Errors are caught in small PL/pgSQL wrappers (a
# pgbench client would abort on them) and logged as outcomes.
#
# Afterwards, per resource:
#   - accepted writes in commit order (history.id, drawn from a sequence
#     inside the writing transaction; the pinned lease serialises writers)
#     are in token order and in time order;
#   - history.value runs 1, 2, 3, ... and the counter ends equal to the
#     number of accepted writes: no lost update;
#   - every accepted write happened before the next grant of its lock;
#   - grants ordered by grant time are ordered by token;
# and lockfence.stats agrees with the logged outcomes.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $CLIENTS = 8;
# 10,400 operations; 800 under valgrind, where an operation takes a good
# part of a second
my $PER_CLIENT = normal_or_valgrind(1300, 100);
my $RESOURCES = 5;
# leases (20 to 200 ms) and wait timeouts (10 to 100 ms), stretched under
# valgrind to keep their proportions to a round trip
my ($LEASE_MIN, $LEASE_MAX) = (secs(20), secs(200));
my ($TMO_MIN, $TMO_MAX) = (secs(10), secs(100));

my $node = start_preloaded_node(
	'history', qq{
max_connections = 30
});
$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION lockfence;
CREATE TABLE counters (id int PRIMARY KEY, value bigint NOT NULL, fence_token bigint);
INSERT INTO counters SELECT g, 0, NULL FROM generate_series(1, $RESOURCES) g;
CREATE TRIGGER counters_fence BEFORE INSERT OR UPDATE ON counters
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'res:', 'id');
CREATE TABLE history (id bigserial PRIMARY KEY, res int NOT NULL,
                      token bigint NOT NULL UNIQUE, value bigint NOT NULL,
                      at timestamptz NOT NULL);
CREATE TABLE grants (token bigint PRIMARY KEY, res int NOT NULL,
                     granted_at timestamptz);
CREATE TABLE outcomes (kind text NOT NULL);

-- the token, or 0 after a wait timeout (55P03)
CREATE FUNCTION h_acquire(r int, lease_ms int, timeout_ms int)
RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE
    tok bigint;
BEGIN
    BEGIN
        tok := lockfence.acquire('res:' || r, lease_ms * interval '1 ms',
                                 timeout_ms * interval '1 ms');
    EXCEPTION WHEN lock_not_available THEN
        INSERT INTO outcomes VALUES ('55P03');
        RETURN 0;
    END;
    INSERT INTO grants
      SELECT tok, r, (SELECT acquired_at FROM lockfence.locks
                       WHERE name = 'res:' || r AND token = tok);
    RETURN tok;
END \$\$;

-- the fenced read-modify-write: 1 when accepted, 0 when rejected (LF001)
CREATE FUNCTION h_write(r int, tok bigint, v bigint)
RETURNS int LANGUAGE plpgsql AS \$\$
BEGIN
    BEGIN
        UPDATE counters SET value = v + 1, fence_token = tok WHERE id = r;
        INSERT INTO history (res, token, value, at)
          VALUES (r, tok, v + 1, clock_timestamp());
    EXCEPTION WHEN SQLSTATE 'LF001' THEN
        INSERT INTO outcomes VALUES ('LF001');
        RETURN 0;
    END;
    RETURN 1;
END \$\$;
});

my $script = $node->basedir . '/history.sql';
open(my $fh, '>', $script) or die "could not write $script: $!";
print $fh qq{\\set r random(1, $RESOURCES)
\\set lease random($LEASE_MIN, $LEASE_MAX)
\\set tmo random($TMO_MIN, $TMO_MAX)
SELECT h_acquire(:r, :lease, :tmo) AS tok \\gset
\\if :tok > 0
SELECT value AS v FROM counters WHERE id = :r \\gset
\\set late random(1, 100)
\\if :late <= 4
\\set nap :lease + 5
\\sleep :nap ms
\\endif
SELECT h_write(:r, :tok, :v) AS ok \\gset
SELECT lockfence.release('res:' || :r, :tok) AS rel \\gset
\\endif
};
close($fh);

my $t0 = time();
my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[
		'pgbench', '-n', '-h', $node->host, '-p', $node->port,
		'-c', $CLIENTS, '-j', 2, '-t', $PER_CLIENT, '-f', $script, 'postgres'
	],
	'>', \$out, '2>', \$err);
my $secs = time() - $t0;
ok($ok, 'pgbench ran without aborted clients') or diag("stderr: $err");
note($out);
my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
is($processed, $CLIENTS * $PER_CLIENT, "all $processed operations ran");

set_node($node);

# leases are at most 200 ms: let them all end
sql("SELECT pg_sleep(@{[secs(0.3)]})");

my ($accepted, $lf001, $timeouts, $grants) = split /\|/, sql(q{
SELECT (SELECT count(*) FROM history),
       (SELECT count(*) FROM outcomes WHERE kind = 'LF001'),
       (SELECT count(*) FROM outcomes WHERE kind = '55P03'),
       (SELECT count(*) FROM grants)});
is($grants + $timeouts, $processed,
	'every operation got a grant or a wait timeout');
is($accepted + $lf001, $grants,
	'every grant led to an accepted or a rejected write');
cmp_ok($accepted, '>', $processed / 4, 'a good share of the writes were accepted');
cmp_ok($lf001, '>', 0, 'some late writes were rejected with LF001');
cmp_ok($timeouts, '>', 0, 'some waits timed out with 55P03');

# ---- offline checks of the history ----
is( sql(q{
SELECT count(*) FROM (
  SELECT token, lag(token) OVER w AS prev_token, at, lag(at) OVER w AS prev_at
    FROM history WINDOW w AS (PARTITION BY res ORDER BY id)) h
 WHERE token <= prev_token OR at < prev_at}),
	'0',
	'per resource, accepted writes in commit order are in token order and time order');
is( sql(q{
SELECT count(*) FROM (
  SELECT value, row_number() OVER (PARTITION BY res ORDER BY id) AS n FROM history) h
 WHERE value <> n}),
	'0',
	'per resource, the written values run 1, 2, 3, ...: no write read a stale value');
is( sql(q{
SELECT count(*) FROM counters c
 WHERE c.value <> (SELECT count(*) FROM history WHERE res = c.id)
    OR c.fence_token IS DISTINCT FROM (SELECT max(token) FROM history WHERE res = c.id)}),
	'0',
	'each counter equals its number of accepted increments and carries the last token: no lost update'
);
is( sql(q{
SELECT count(*) FROM (
  SELECT token, lag(token) OVER (PARTITION BY res ORDER BY granted_at, token) AS prev
    FROM grants WHERE granted_at IS NOT NULL) g
 WHERE token <= prev}),
	'0',
	'per lock, grants ordered by grant time are ordered by token');
is( sql(q{
SELECT count(*) FROM history h
  JOIN LATERAL (SELECT min(g.granted_at) AS next_grant FROM grants g
                 WHERE g.res = h.res AND g.token > h.token) n ON true
 WHERE n.next_grant <= h.at}),
	'0',
	'every accepted write happened before the next grant of its lock');
# a grant whose lease ran out before its backend looked (a waiter woken late
# on a busy machine) has no grant time; it is left out above
my $no_time = sql('SELECT count(*) FROM grants WHERE granted_at IS NULL');
cmp_ok($no_time, '<', $grants / 10, "nearly all grants have a grant time ($no_time without)");

# ---- lockfence.stats agrees ----
is( sql('SELECT grants, wait_timeouts, fence_rejections_lease, fence_rejections_monotonic FROM lockfence.stats'),
	"$grants|$timeouts|$lf001|0",
	'lockfence.stats counts the same grants, timeouts and rejections');
is(sql('SELECT count(*) FROM lockfence.locks'), '0', 'no lock is held at the end');
is( sql('SELECT grants - releases - expiries - slots_used FROM lockfence.stats'),
	'0',
	'every grant ended in a release or an expiry, or is an expired lease still in its slot');

my ($waits, $expiries, $releases) =
  split /\|/, sql('SELECT waits, expiries, releases FROM lockfence.stats');
diag(
	sprintf(
		'history: %d operations in %.1f s (%.0f/s) by %d clients on %d resources: '
		  . '%d grants (%d after waiting), %d accepted writes, %d LF001 rejections, '
		  . '%d 55P03 timeouts, %d releases, %d expiries counted',
		$processed, $secs, $processed / $secs, $CLIENTS, $RESOURCES,
		$grants, $waits - $timeouts, $accepted, $lf001, $timeouts, $releases, $expiries));

$node->stop;
done_testing();
