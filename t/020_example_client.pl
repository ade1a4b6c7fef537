
# The example client, examples/worker.py (Python, psycopg2), against a
# throwaway server: workers that take a lease per work item, renew it while
# they work, write with their fence token into tables fenced in lease mode,
# and handle LF001, 55P03 and 40001 as examples/README.md describes.
#
#   1. five workers on two queues run concurrently, a sixth works for longer
#      than its lease and keeps it by renewing, and a seventh is paused past
#      its lease before a write: it gets LF001, stops that item and redoes it
#      under a new lease.  Every counter must equal the number of items the
#      workers report done, with no item lost or counted twice;
#   2. a worker whose lock is held by someone else gets 55P03, backs off and
#      gets the lock once it is released;
#   3. a worker whose write transaction loses a race on a shared row gets
#      40001 and retries the transaction.

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $worker = 'examples/worker.py';
ok(-f $worker, "$worker is there");

# A python3 that can import psycopg2.  Debian's python3-psycopg2 (installed
# by tools/common.sh) belongs to /usr/bin/python3, which may not be the
# python3 first in PATH.
my $python;
for my $candidate (grep { defined } $ENV{PYTHON}, '/usr/bin/python3', 'python3')
{
	my ($out, $err);
	if (eval {
			IPC::Run::run([ $candidate, '-c', 'import psycopg2' ],
				'<', \undef, '>', \$out, '2>', \$err);
		})
	{
		$python = $candidate;
		last;
	}
}
unless (ok(defined $python, 'a python3 with psycopg2 is installed'))
{
	diag('install Debian\'s python3-psycopg2 (make test does, as root)');
	done_testing();
	exit 0;
}
note "python: $python";

my $node = PostgreSQL::Test::Cluster->new('example_client');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'lockfence'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION lockfence');
$node->safe_psql('postgres', slurp_file('examples/schema.sql'));
my $dsn = $node->connstr('postgres');

set_node($node);

# Start a worker in the background.
sub start_worker
{
	my ($name, @opts) = @_;
	my $w = { name => $name, out => '', err => '' };
	# under valgrind every time is stretched, the worker's give-up time too
	push @opts, '--give-up', secs(30) if under_valgrind();
	$w->{h} = IPC::Run::start(
		[ $python, $worker, '--dsn', $dsn, '--name', $name, @opts ],
		'<', \undef, '>', \$w->{out}, '2>', \$w->{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return $w;
}

# Wait for a worker to exit; check its status and return its JSON summary.
sub finish_worker
{
	my ($w) = @_;
	$w->{h}->finish;
	my $status = $w->{h}->result(0);
	note "--- log of $w->{name}:\n$w->{err}";
	is($status, 0, "$w->{name} exited with status 0") or diag($w->{err});
	my ($last) = $w->{out} =~ /([^\n]*)\n*\z/;
	note "summary of $w->{name}: " . ($last // '');
	my $summary = eval { decode_json($last // '') };
	ok($summary, "$w->{name} printed its summary") or diag("stdout: $w->{out}");
	return $summary // {};
}

my %done_by_queue;
my $done_total = 0;

sub count_done
{
	my ($s) = @_;
	$done_by_queue{ $s->{queue} } += $s->{done};
	$done_total += $s->{done};
	return;
}

# ---- 1. concurrent workers, one of them paused past its lease ----

my @common = ('--lease', secs(2), '--acquire-timeout', secs(0.05), '--backoff',
	secs(0.02), '--work', secs(0.08));
my @workers = (
	(map { start_worker("alpha-$_", '--queue', 'alpha', '--items', '5', @common) }
		  1 .. 3),
	(map { start_worker("beta-$_", '--queue', 'beta', '--items', '5', @common) }
		  1 .. 2));
# Works for 2.5 s under a 1.5 s lease: only the renewal thread keeps it.
my $slow = start_worker('gamma-slow', '--queue', 'gamma', '--items', '1',
	'--lease', secs(1.5), '--work', secs(2.5), '--steps', '25');
# Paused before the write of its second item for 2.5 s, with a 1 s lease
# that nobody renews meanwhile (the pause stops the renewal thread too).
my $paused = start_worker(
	'alpha-paused', '--queue', 'alpha', '--items', '3',
	'--lease', secs(1), '--acquire-timeout', secs(0.05), '--backoff', secs(0.02),
	'--work', secs(0.08), '--pause-at-item', '2', '--pause', secs(2.5));

my $busy = 0;
for my $w (@workers)
{
	my $s = finish_worker($w);
	is($s->{done}, 5, "$w->{name} did its 5 items");
	is($s->{lost}, 0, "$w->{name} never lost its lease");
	$busy += $s->{busy_retries} // 0;
	count_done($s);
}
note "55P03 back-offs of the concurrent workers: $busy";

my $g = finish_worker($slow);
is($g->{done}, 1, 'gamma-slow did its item');
is($g->{lost}, 0, 'gamma-slow kept its lease through 2.5 s of work');
cmp_ok($g->{renewals}, '>=', 3, "gamma-slow renewed its lease ($g->{renewals} times)");
count_done($g);

my $p = finish_worker($paused);
is($p->{done}, 3, 'alpha-paused did its 3 items in the end');
is($p->{lost}, 1, 'alpha-paused lost its lease once');
like(
	$paused->{err},
	qr/write rejected with LF001: stale fence token for lock "queue:alpha" in relation "queues"/,
	'alpha-paused: its write after the pause was rejected with LF001');
like($paused->{err}, qr/the item will be redone under a new lease/,
	'alpha-paused stopped that item and redid it under a new lease');
is(scalar @{ $p->{tokens} }, 4, 'alpha-paused took the lock 4 times for 3 items');
my $stale = $p->{tokens}[1];
is(sql("SELECT count(*) FROM work_log WHERE fence_token = $stale"),
	'0', "nothing was written with the stale token $stale");
count_done($p);

# ---- 2. the lock is busy: 55P03, back off, retry ----

my $held = sql("SELECT lockfence.acquire('queue:delta', '@{[ival(60)]}')");
like($held, qr/^\d+$/, 'someone else holds queue:delta');
my $timeouts = sql('SELECT wait_timeouts FROM lockfence.stats');
my $dw = start_worker('delta-1', '--queue', 'delta', '--items', '1',
	'--acquire-timeout', secs(0.2), '--backoff', secs(0.05));
ok( $node->poll_query_until(
		'postgres', "SELECT wait_timeouts > $timeouts FROM lockfence.stats"),
	'delta-1 waited for queue:delta and timed out');
is(sql("SELECT lockfence.release('queue:delta', $held)"),
	't', 'the other holder releases queue:delta');
my $d = finish_worker($dw);
cmp_ok($d->{busy_retries}, '>=', 1, 'delta-1 got 55P03 and backed off');
like($dw->{err}, qr/queue:delta busy \(55P03\); backing off/,
	'delta-1 logged its back-off');
is($d->{done}, 1, 'delta-1 did its item once the lock was free');
cmp_ok($d->{tokens}[0], '>', $held, 'with a newer token');
count_done($d);

# ---- 3. the write transaction loses a race: 40001, retry ----

my $blocker = $node->background_psql('postgres');
$blocker->query_safe('BEGIN');
$blocker->query_safe('UPDATE totals SET done = done WHERE id = 1');
my $e = start_worker('epsilon-1', '--queue', 'epsilon', '--items', '1',
	'--work', '0');
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
WHERE application_name = 'epsilon-1' AND wait_event_type = 'Lock'}, '1'),
	'epsilon-1 waits for the row of totals, inside its write transaction');
$blocker->query_safe('COMMIT');
$blocker->quit;
my $es = finish_worker($e);
cmp_ok($es->{serialization_retries}, '>=', 1,
	'epsilon-1 got 40001 and retried its transaction');
like($e->{err}, qr/write: 40001 .*retrying the transaction/,
	'epsilon-1 logged the retry');
is($es->{done}, 1, 'epsilon-1 did its item');
is($es->{lost}, 0, 'epsilon-1 kept its lease');
count_done($es);

# ---- the outcome ----

is($done_total, 31, 'the workers report 31 items done in all');
for my $q (sort keys %done_by_queue)
{
	is(sql("SELECT done FROM queues WHERE name = '$q'"),
		$done_by_queue{$q},
		"queue $q: the fenced counter equals the items its workers did ($done_by_queue{$q})"
	);
	is( sql(
			"SELECT count(*) || '/' || min(item) || '/' || max(item) FROM work_log WHERE queue = '$q'"
		),
		"$done_by_queue{$q}/1/$done_by_queue{$q}",
		"queue $q: one log row per item, items 1 to $done_by_queue{$q}: no update lost"
	);
}
is(sql('SELECT count(*) FROM work_log'), $done_total,
	'the log has one row per item done');
is(sql('SELECT done FROM totals'), $done_total,
	'the shared total, retried on 40001, counts every item once');
is( sql(
		q{SELECT count(*) FROM (
			SELECT fence_token < lag(fence_token) OVER (PARTITION BY queue ORDER BY item) AS back
			FROM work_log) s WHERE back}),
	'0',
	'in each queue, items were written with ever larger tokens');
cmp_ok(sql('SELECT fence_rejections_lease FROM lockfence.stats'),
	'>=', 1, 'lockfence.stats counted the lease rejection');
is(sql('SELECT count(*) FROM lockfence.locks'), '0', 'no lock is left held');

$node->stop;
done_testing();
