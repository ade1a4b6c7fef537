# lockfence.max_locks_per_role keeps one role from filling the lock table.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('role_quota', qq{
lockfence.max_locks = 64
lockfence.max_locks_per_role = 5
});
$node->safe_psql('postgres', q{
	CREATE EXTENSION lockfence;
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
});
set_node($node);

sub as_role
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET ROLE $role;\n\\set VERBOSITY verbose\n$sql");
	return ($ret, $out, $err);
}

# alice may hold five locks, not six
my ($ret, $out, $err) = as_role('alice',
	"SELECT count(lockfence.try_acquire('alice:' || i, '1 h')) FROM generate_series(1, 5) i");
is($out, '5', 'alice takes five locks');
($ret, $out, $err) = as_role('alice', "SELECT lockfence.try_acquire('alice:6', '1 h')");
isnt($ret, 0, 'the sixth fails');
like($err, qr/ERROR:  53400: role holds too many lockfence locks/, 'with SQLSTATE 53400');
like($err, qr/HINT:  Release locks, or increase "lockfence.max_locks_per_role"\./,
	'and a hint naming the setting');

# transaction locks count too, and so does queueing for a held lock
($ret, $out, $err) = as_role('alice', "SELECT lockfence.try_acquire_xact('alice:x')");
like($err, qr/53400/, 'a transaction lock counts against the quota');
($ret, $out, $err) = as_role('bob', "SELECT lockfence.acquire('shared', '1 h') > 0");
is($out, 't', 'bob is not affected by alice\'s quota');
($ret, $out, $err) = as_role('alice',
	"SELECT lockfence.acquire('shared', '1 h', timeout => '5 s')");
like($err, qr/53400/, 'at its quota, alice is refused at once instead of queueing');

# releasing one frees room
is($node->safe_psql('postgres',
		"SELECT lockfence.release(name, token) FROM lockfence.locks WHERE name = 'alice:1'"),
	't', 'one of alice\'s locks is released (by its token, from another role)');
($ret, $out, $err) = as_role('alice', "SELECT lockfence.try_acquire('alice:6', '1 h') > 0");
is($out, 't', 'then alice can take another');

# the quota counts holders: a lock handed to a waiter is charged to the waiter
is($node->safe_psql('postgres',
		"SELECT count(lockfence.force_release(name)) FROM lockfence.locks WHERE name LIKE 'alice:%'"),
	'5', 'alice\'s locks are force-released');

# alice's own expired leases are swept when she hits the quota
($ret, $out, $err) = as_role('alice',
	"SELECT count(lockfence.try_acquire('short:' || i, '100 ms')) FROM generate_series(1, 5) i");
is($out, '5', 'alice takes five short leases');
$node->safe_psql('postgres', 'SELECT pg_sleep(0.3)');
($ret, $out, $err) = as_role('alice',
	"SELECT count(lockfence.try_acquire('long:' || i, '1 h')) FROM generate_series(1, 5) i");
is($out, '5', 'after they expire, alice can take five more');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM lockfence.locks WHERE name LIKE 'long:%'"),
	'5', 'held locks are intact');

# raising the limit takes effect on reload
reload_setting('lockfence.max_locks_per_role', 0);
($ret, $out, $err) = as_role('alice',
	"SELECT count(lockfence.try_acquire('more:' || i, '1 h')) FROM generate_series(1, 20) i");
is($out, '20', 'with no per-role limit alice takes twenty more');

# the table limit still applies to everybody
($ret, $out, $err) = as_role('alice',
	"SELECT count(lockfence.try_acquire('fill:' || i, '1 h')) FROM generate_series(1, 100) i");
like($err, qr/ERROR:  53200: lockfence lock table is full/,
	'the whole table still fills at lockfence.max_locks');
# leases are not transactional: those the failed statement took stay taken
is($node->safe_psql('postgres', 'SELECT slots_used, slots_available FROM lockfence.stats'),
	'64|0', 'the table is full');
is($node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE name LIKE 'long:%'), count(*) FILTER (WHERE name = 'shared') FROM lockfence.locks"),
	'5|1', 'no held lock was evicted');

# back to a quota of 5 in an empty table
$node->safe_psql('postgres',
	"SELECT count(lockfence.force_release(name)) FROM lockfence.locks");
reload_setting('lockfence.max_locks_per_role', 5);
($ret, $out, $err) = as_role('alice',
	"SELECT count(lockfence.try_acquire('long:' || i, '1 h')) FROM generate_series(1, 5) i");
is($out, '5', 'alice holds five locks again');

# a refused request leaves nothing behind: no empty entry in a slot
my $slots_before = $node->safe_psql('postgres', 'SELECT slots_used FROM lockfence.stats');
($ret, $out, $err) = as_role('alice', "SELECT lockfence.try_acquire('never:1', '1 h')");
like($err, qr/53400/, 'at its quota alice cannot take a new lock');
is($node->safe_psql('postgres', 'SELECT slots_used FROM lockfence.stats'),
	$slots_before, '... and the refused request holds no slot');

# waiters count as they queue: with three locks held, alice may queue for two
$node->safe_psql('postgres',
	"SELECT lockfence.release(name, token) FROM lockfence.locks WHERE name IN ('long:4', 'long:5')");
($ret, $out, $err) = as_role('bob', "SELECT lockfence.acquire('queue-me', '1 h') > 0");
my @queued;
for my $n (1, 2)
{
	my ($s) = session();
	$s->query_safe('SET ROLE alice');
	start_wait($s, "SELECT lockfence.acquire('queue-me', '1 h', timeout => '20 s') > 0 AS granted;");
	push @queued, $s;
}
wait_waiters('queue-me', 2, 'two of alice\'s requests queue for bob\'s lock');
($ret, $out, $err) = as_role('alice',
	"SELECT lockfence.acquire('queue-me', '1 h', timeout => '5 s')");
like($err, qr/53400/, 'a third would put her over her quota: refused at once');
($ret, $out, $err) = as_role('alice', "SELECT lockfence.try_acquire('never:2', '1 h')");
like($err, qr/53400/, 'and so is a new lock: queued requests are charged');
$node->safe_psql('postgres',
	"SELECT lockfence.force_release('queue-me')");
wait_out($queued[0], qr/^t$/m, 'the first waiter is handed the lock');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM lockfence.locks WHERE name = 'queue-me'"),
	'1', '... and holds it, the second still queued');
$node->safe_psql('postgres', "SELECT lockfence.force_release('queue-me')");
wait_out($queued[1], qr/^t$/m, 'then the second');
$_->quit for @queued;
$node->safe_psql('postgres',
	"SELECT count(lockfence.force_release(name)) FROM lockfence.locks");

# every role is counted, however many roles have held locks before: the
# counters of roles that hold nothing are given back
$node->safe_psql('postgres', q{
	DO $$
	BEGIN
		FOR i IN 1 .. 4200 LOOP
			EXECUTE format('CREATE ROLE %I', 'many_' || i);
		END LOOP;
	END $$;
	DO $$
	DECLARE
		t bigint;
	BEGIN
		FOR i IN 1 .. 4200 LOOP
			EXECUTE format('SET ROLE %I', 'many_' || i);
			t := lockfence.try_acquire('many:' || i, '1 h');
			PERFORM lockfence.release('many:' || i, t);
			RESET ROLE;
		END LOOP;
	END $$;
	CREATE ROLE carol;
});
($ret, $out, $err) = as_role('carol',
	"SELECT count(lockfence.try_acquire('carol:' || i, '1 h')) FROM generate_series(1, 6) i");
like($err, qr/53400/,
	'after 4,200 other roles took and released locks, a new role still meets its quota');
# leases are not transactional: the five taken before the refusal stay
is($node->safe_psql('postgres',
		"SELECT count(*) FROM lockfence.locks WHERE name LIKE 'carol:%'"),
	'5', '... at the sixth lock, not before');
$node->safe_psql('postgres',
	"SELECT count(lockfence.force_release(name)) FROM lockfence.locks");


$node->stop;
done_testing();
