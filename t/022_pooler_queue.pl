
# Through pgbouncer, clients wait for a lease in line, as direct clients do.
#
# Real pgbouncer (Debian's package), real driver (psycopg 3, Debian's
# python3-psycopg), clients in t/pooler/contend.py: more clients than
# server connections contend for one lease; each acquires, reads a counter,
# writes it back with a fenced UPDATE and releases, never retrying; some
# turns pause longer than the lease.  The client checks the history: no
# error (no 55P03 when a statement lands on the server connection that
# granted the lease), FIFO order, no two holders at once, no lost update.
#
#   1. transaction pooling, waits through a pool of their own: the
#      recommended set-up (README, "Connection poolers");
#   2. the same in statement pooling;
#   3. transaction pooling, one pool smaller than the clients: waiters take
#      every server connection and the holder's next statement queues in
#      pgbouncer until its lease ends; the lease bounds that wait, the next
#      waiter takes over, and the old holder's write is refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

# the python3 that has psycopg 3
my $python;
for my $candidate ($ENV{PYTHON}, '/usr/bin/python3', 'python3')
{
	next unless defined $candidate;
	if (system($candidate, '-c', 'import psycopg') == 0)
	{
		$python = $candidate;
		last;
	}
}
plan skip_all => 'no python3 with psycopg 3 (Debian: python3-psycopg; make test installs it as root)'
  unless defined $python;

my $node = start_preloaded_node('pooler_queue');
set_node($node);
sql(q{
	CREATE EXTENSION lockfence;
	CREATE TABLE ctr (id int PRIMARY KEY, v bigint NOT NULL, fence_token bigint);
	INSERT INTO ctr VALUES (1, 0, NULL);
	CREATE TRIGGER ctr_fence BEFORE INSERT OR UPDATE ON ctr
		FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'ctr');
});

# Run the clients; each of their check lines becomes a check here.
sub contend
{
	my ($label, @args) = @_;
	local $ENV{LF_TIME_SCALE} = secs(1);
	my ($stdout, $stderr);
	IPC::Run::run([ $python, "$FindBin::RealBin/pooler/contend.py",
			'--label', $label, @args ],
		'>', \$stdout, '2>', \$stderr);
	my $done = 0;
	for my $line (split /\n/, $stdout)
	{
		if ($line =~ /^(not )?ok - (.*)$/)
		{
			ok(!defined $1, $2);
		}
		elsif ($line =~ /^# (.*)$/)
		{
			note $1;
		}
		elsif ($line =~ /^done: (\d+) checks, (\d+) failed$/)
		{
			$done = 1;
			cmp_ok($1, '>', 0, "$label: the client made its checks");
		}
	}
	ok($done, "$label: the client ran to the end") or diag($stderr);
	return;
}

my $grants0 = sql('SELECT grants FROM lockfence.stats');

# 1. transaction pooling: 6 clients, 4 server connections for waits,
#    2 for the rest
my $b = start_pgbouncer(pools => [ [ 'waits', 4 ], [ 'work', 2 ] ]);
plan skip_all => 'pgbouncer is not installed' unless $b;
contend('transaction mode',
	'--wait-dsn', $b->{connstr}{waits}, '--dsn', $b->{connstr}{work},
	'--clients', 6, '--seconds', 6, '--pause-every', 7);
$b->{handle}->kill_kill;

# 2. statement pooling, same pools
$b = start_pgbouncer(pools => [ [ 'waits', 4 ], [ 'work', 2 ] ],
	pool_mode => 'statement');
contend('statement mode',
	'--wait-dsn', $b->{connstr}{waits}, '--dsn', $b->{connstr}{work},
	'--clients', 6, '--seconds', 4, '--pause-every', 7);
$b->{handle}->kill_kill;

# 3. one pool of 2 for 4 clients: it runs out, and leases end the wait
$b = start_pgbouncer(pools => [ [ 'postgres', 2 ] ]);
contend('one small pool',
	'--wait-dsn', $b->{connstr}{postgres}, '--dsn', $b->{connstr}{postgres},
	'--clients', 4, '--seconds', 4, '--lease-ms', 200, '--expect-exhaustion');
$b->{handle}->kill_kill;

is(sql('SELECT count(*) FROM lockfence.locks'), '0', 'no lock is left held');
cmp_ok(sql('SELECT grants FROM lockfence.stats') - $grants0, '>', 0,
	'the grants went through this server');

$node->stop;
done_testing();
