
# ALTER EXTENSION lockfence UPDATE from 0.1 while locks are held, a lock
# has a waiter, and a transaction has a fenced write in flight: nothing is
# lost, tokens keep increasing, and the updated database gets the 0.2
# objects (the token history, which pg_dump then carries, and
# advance_tokens).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('update');
set_node($node);

sql(q{
CREATE EXTENSION lockfence VERSION '0.1';
CREATE TABLE seat (id int PRIMARY KEY, holder text, token bigint);
CREATE TRIGGER fence BEFORE INSERT OR UPDATE ON seat
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('token', 'seat:', 'id');
CREATE TABLE account (id int PRIMARY KEY, balance int, token bigint);
CREATE TRIGGER fence BEFORE INSERT OR UPDATE ON account
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('token');
});
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'lockfence'"),
	'0.1', 'installed at 0.1');

# Before the update: a held lease, a fenced row, a waiter, and a
# transaction whose fenced write is pinning its lease.
my $held = sql("SELECT lockfence.acquire('held', '1h')");
my $acct = sql("SELECT lockfence.acquire('account', '1h')");
sql("INSERT INTO account VALUES (1, 100, $acct)");
my $seat = sql("SELECT lockfence.acquire('seat:1', '1h')");
sql("INSERT INTO seat VALUES (1, 'before', $seat)");

my ($writer) = session();
$writer->query_safe('BEGIN');
is($writer->query_safe("UPDATE seat SET holder = 'during' WHERE id = 1 RETURNING holder"),
	'during', 'a fenced write in flight pins the lease');

my ($waiter) = session();
start_wait($waiter, "SELECT 'granted ' || lockfence.acquire('held', '1h', '60 s');");
wait_waiters('held', 1, 'a session waits for lock held');

sql("ALTER EXTENSION lockfence UPDATE");
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'lockfence'"),
	'0.2', 'updated to 0.2 while locks were held');

# Nothing was lost
is(lock_columns('held', 'token, waiters'), "$held|1", 'the held lease and its waiter are still there');
is(lock_columns('seat:1', 'token, pins'), "$seat|1", 'the pinned lease is still pinned');
$writer->query_safe('COMMIT');
$writer->quit;
is(sql("SELECT holder, token FROM seat"), "during|$seat", 'the fenced write in flight committed');

ok(sql("SELECT lockfence.release('held', $held)") eq 't', 'the holder releases');
my ($handed) = wait_out($waiter, qr/granted (\d+)/, 'the waiter is granted the lock');
cmp_ok($handed, '>', $seat, 'the hand-off token exceeds every token before the update');
$waiter->quit;

# Tokens after the update, from a new session, keep increasing and fence.
my $after = sql("SELECT lockfence.acquire('account', '1h', '0') WHERE lockfence.force_release('account')");
cmp_ok($after, '>', $handed, 'a token taken after the update is larger still');
is(sql("UPDATE account SET balance = 90, token = $after RETURNING balance"), '90',
	'a fenced write with it succeeds');
my ($rc, $out, $err) = $node->psql('postgres', "UPDATE account SET token = $acct",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/LF001/, 'a write with a token from before the update is refused');

# The 0.2 objects: the record, which pg_dump carries, and advance_tokens.
is( sql(q{SELECT s.is_called AND b.is_called AND b.last_value = 65536
            FROM lockfence.token_history_system s, lockfence.token_history_band b}),
	't', 'the first grant after the update recorded band 0 on timeline 1');
my $dump = PostgreSQL::Test::Utils::tempdir . '/dump.sql';
command_ok([ 'pg_dump', '-d', $node->connstr('postgres'), '-f', $dump ], 'pg_dump');
my $text = slurp_file($dump);
like($text, qr/setval\('lockfence\.token_history_band', 65536, true\)/,
	'pg_dump carries the token history');
unlike($text, qr/CREATE SEQUENCE lockfence\.token_history/,
	'as extension configuration: the sequences themselves come from CREATE EXTENSION');
like(sql("SELECT lockfence.advance_tokens(0)"), qr/^\d+$/, 'advance_tokens exists');

# A fresh install reaches 0.2 through the same script.
sql('CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION lockfence');
is( $node->safe_psql(
		'fresh', q{
SELECT e.extversion, pg_catalog.pg_describe_object(d.classid, d.objid, 0)
FROM pg_extension e
JOIN pg_depend d ON d.refobjid = e.oid AND d.deptype = 'e'
WHERE e.extname = 'lockfence' AND d.classid = 'pg_class'::regclass
  AND d.objid IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'lockfence')
ORDER BY 2}),
	"0.2|sequence lockfence.token_history_band\n0.2|sequence lockfence.token_history_system",
	'CREATE EXTENSION installs 0.2 with both sequences as configuration');

done_testing();
