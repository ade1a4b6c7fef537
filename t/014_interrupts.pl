
# Interrupted waits, and connection churn.
#
# Part 1: a wait in acquire() is interrupted by cancel, statement_timeout
# and pg_terminate_backend; the waiter leaves the queue and the next waiter
# takes over, also when the interrupted waiter was the one watching the
# lease, and also when the lock had already been handed to it (frozen with
# SIGSTOP) but had not reached its caller yet.  lock_timeout does not apply
# to lockfence's waits: the wait goes on until lockfence's own timeout (or
# without a limit), which is what this test asserts.
#
# Part 2: 10,000 pgbench connections (-C), each taking a session-bound
# lease with try_acquire, a plain 20 ms lease (never released) on one of
# 200 names, a session-bound lease after a short wait, a transaction lock,
# or waiting for a lock that is always held until statement_timeout cancels
# the wait, and then disconnecting.  Waits also end in 55P03 timeouts.  The
# lock table is small (lockfence.max_locks = 64) and the expired plain
# leases alone would need 200 slots, so it fills up and is swept over and
# over.  Afterwards no
# session-bound or transaction lock and no waiter is left, and once the
# leases have run out the whole table can be filled by one role (no slot
# and no per-role count leaked) and emptied again: slots_used is back at 0
# and every grant is accounted for as a release or an expiry.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $MAX_LOCKS = 64;
my $node = start_preloaded_node(
	'interrupts', qq{
lockfence.max_locks = $MAX_LOCKS
max_connections = 30
});
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION lockfence;
CREATE ROLE churn LOGIN;
-- acquire that reports a wait timeout or a statement_timeout as -1/-2
-- instead of an error (a pgbench client would abort on it)
CREATE FUNCTION c_acquire(n text, lease_ms int, timeout_ms int, sb boolean)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    IF sb THEN
        RETURN lockfence.acquire_session(n, lease_ms * interval '1 ms',
                                         timeout_ms * interval '1 ms');
    END IF;
    RETURN lockfence.acquire(n, lease_ms * interval '1 ms',
                             timeout_ms * interval '1 ms');
EXCEPTION
    WHEN lock_not_available THEN RETURN -1;
    WHEN query_canceled THEN RETURN -2;
END $$;
CREATE FUNCTION c_acquire_xact(n text, timeout_ms int)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN lockfence.acquire_xact(n, timeout_ms * interval '1 ms');
EXCEPTION
    WHEN lock_not_available THEN RETURN -1;
END $$;
GRANT EXECUTE ON FUNCTION c_acquire, c_acquire_xact TO churn;
});

set_node($node);

# "token|holder_pid|waiters" of a held lock, '' when it is not held.
sub lock_row { return lock_columns($_[0], 'token, holder_pid, waiters'); }

# "token|waiters" of a held lock.
sub tok_waiters { return lock_columns($_[0], 'token, waiters'); }

my %fig;

########################################################################
# Part 1: interrupted waits
########################################################################

# ---- cancel, statement_timeout and terminate of the waiter watching the lease ----
for my $how ('cancel', 'statement_timeout', 'terminate')
{
	my $label = "$how of the first waiter";
	my $name = "watch:$how";
	my $st0 = stats();
	my ($w1, $p1) = session(on_error_stop => 0);
	my ($w2, $p2) = session(on_error_stop => 0);
	# the lease ends 3 s from now; W2's own timeout is 30 s
	my $t0 = sql("SELECT lockfence.try_acquire('$name', '@{[ival(3)]}')");
	my $end0 = sql("SELECT expires_at FROM lockfence.locks WHERE name = '$name'");
	$w1->query_safe("SET statement_timeout = '@{[ival(1)]}'") if $how eq 'statement_timeout';
	my $t_start = time();
	start_wait($w1, "SELECT 'tok=' || lockfence.acquire('$name', '@{[ival(30)]}', '@{[ival(30)]}');");
	wait_waiters($name, 1, "$label: W1 is queued");
	start_wait($w2,
		"SELECT 'tok=' || lockfence.acquire('$name', '@{[ival(30)]}', '@{[ival(30)]}') || ' at=' || clock_timestamp();");
	wait_waiters($name, 2, "$label: W2 is queued");

	if ($how eq 'cancel')
	{
		is(sql("SELECT pg_cancel_backend($p1)"), 't', "$label: sent");
		wait_err($w1, qr/57014: canceling statement due to user request/,
			"$label: W1 reports the cancel");
	}
	elsif ($how eq 'statement_timeout')
	{
		wait_err($w1, qr/57014: canceling statement due to statement timeout/,
			"$label: W1's wait is cut short by statement_timeout");
		my $el = time() - $t_start;
		cmp_ok($el, '<', secs(2.9), "$label: after about 1 s, before the lease ends (${el}s)");
		$fig{statement_timeout_1s_waited} = sprintf('%.2f', $el);
	}
	else
	{
		is(sql("SELECT pg_terminate_backend($p1)"), 't', "$label: sent");
		wait_err($w1, qr/terminating connection due to administrator command/,
			"$label: W1 reports it");
		ok( $node->poll_query_until(
				'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $p1"),
			"$label: W1's backend has exited");
	}
	# The client hears of the error before the backend's abort processing
	# has taken it out of the queue, so give it a moment.
	ok( $node->poll_query_until(
			'postgres',
			"SELECT token || '|' || waiters FROM lockfence.locks WHERE name = '$name'",
			"$t0|1"),
		"$label: W1 left the queue, the holder is unchanged");

	my ($t2, $at) = wait_out($w2, qr/tok=(\d+) at=(.*)\n/,
		"$label: W2 got the lock when the lease ran out");
	my $d = secs_between("'$end0'::timestamptz", "'$at'::timestamptz");
	cmp_ok($d, '>=', 0, "$label: at or after the end of the lease (${d}s)");
	cmp_ok($d, '<', secs(3), "$label: promptly, not at its own 30 s timeout");
	$fig{"${how}_then_next_waiter_after_lease_end"} = $d;
	is(lock_row($name), "$t2|$p2|0", "$label: W2 holds the lock");
	is(sql("SELECT lockfence.release('$name', $t2)"), 't', "$label: released");
	stats_delta_is(
		$st0,
		{ grants => 2, releases => 1, expiries => 1, waits => 2, wait_timeouts => 0 },
		$label);
	if ($how eq 'terminate') { finish_dead_session($w1); }
	else { $w1->quit; }
	$w2->quit;
}

# ---- lock_timeout is not lockfence's timeout ----
{
	my $label = 'lock_timeout';
	my $t0 = sql("SELECT lockfence.try_acquire('lt', '1 h')");
	my ($w, $pw) = session(on_error_stop => 0);
	$w->query_safe("SET lock_timeout = '300ms'");

	# with a lockfence timeout: the wait lasts until that timeout
	my $st0 = stats();
	my $t_start = time();
	start_wait($w, "SELECT lockfence.acquire('lt', '1 h', '@{[ival(2)]}');");
	wait_waiters('lt', 1, "$label: W is queued with lock_timeout = 300ms and a 2 s timeout");
	my ($err) = wait_err($w, qr/(ERROR:  \S+: .*)\n/, "$label: the wait ends with an error");
	my $el = time() - $t_start;
	like($err, qr/55P03: could not obtain lock "lt"/,
		"$label: it is lockfence's 55P03 timeout");
	cmp_ok($el, '>=', secs(1.9), "$label: after lockfence's 2 s, not lock_timeout's 300 ms (${el}s)");
	$fig{lock_timeout_300ms_acquire_timeout_2s_waited} = sprintf('%.2f', $el);
	stats_delta_is($st0, { waits => 1, wait_timeouts => 1 }, $label);

	# without a lockfence timeout: the wait has no limit at all
	start_wait($w, "SELECT 'tok=' || lockfence.acquire('lt', '1 h', '0');");
	wait_waiters('lt', 1, "$label: W is queued with lock_timeout = 300ms and no lockfence timeout");
	usleep(int(secs(1.5) * 1_000_000));
	ok(!has_output($w), "$label: W still waits 1.5 s later");
	is(tok_waiters('lt'), "$t0|1", "$label: and is still queued");
	is(sql("SELECT lockfence.release('lt', $t0)"), 't', "$label: holder released");
	my ($t1) = wait_out($w, qr/tok=(\d+)/, "$label: W got the lock");
	is(lock_row('lt'), "$t1|$pw|0", "$label: W holds it");
	$w->query("SELECT lockfence.release('lt', $t1)");
	$w->quit;
}

# ---- interrupts that arrive after the lock was handed to the waiter ----
# W1 is frozen, the holder releases (the lock is handed to W1, which cannot
# return it to its caller yet), the interrupt is sent, W1 is thawed: the
# interrupt wins, W1 gives the lock back, and W2 gets it.
for my $how ('cancel', 'terminate')
{
	my $label = "$how after the hand-off";
	my $name = "handed:$how";
	my $st0 = stats();
	my ($w1, $p1) = session(on_error_stop => 0);
	my ($w2, $p2) = session(on_error_stop => 0);
	my $t0 = sql("SELECT lockfence.try_acquire('$name', '1 h')");
	start_wait($w1, "SELECT 'tok=' || lockfence.acquire('$name', '@{[ival(30)]}', '@{[ival(30)]}');");
	wait_waiters($name, 1, "$label: W1 is queued");
	start_wait($w2, "SELECT 'tok=' || lockfence.acquire('$name', '@{[ival(30)]}', '@{[ival(30)]}');");
	wait_waiters($name, 2, "$label: W2 is queued");

	freeze($p1, $label, check_kill => 0);
	is(sql("SELECT lockfence.release('$name', $t0)"), 't', "$label: holder released");
	my ($tok1, $h1, $n1) = split /\|/, lock_row($name);
	is("$h1|$n1", "$p1|1", "$label: the lock was handed to the frozen W1");
	if ($how eq 'cancel')
	{
		is(sql("SELECT pg_cancel_backend($p1)"), 't', "$label: sent");
		thaw($p1);
		my ($kind) = wait_err($w1, qr/(57014: canceling statement due to user request)/,
			"$label: W1 reports the cancel, not the token");
		ok(!has_output($w1) || $w1->{stdout} !~ /tok=/, "$label: W1 printed no token");
	}
	else
	{
		is(sql("SELECT pg_terminate_backend($p1)"), 't', "$label: sent");
		thaw($p1);
		wait_err($w1, qr/terminating connection due to administrator command/,
			"$label: W1 reports it");
		ok( $node->poll_query_until(
				'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $p1"),
			"$label: W1's backend has exited");
	}
	my ($t2) = wait_out($w2, qr/tok=(\d+)/, "$label: W2 got the lock");
	cmp_ok($t2, '>', $tok1, "$label: with a larger token than W1's unused one");
	is(lock_row($name), "$t2|$p2|0", "$label: W2 holds it, W1 does not");
	is(sql("SELECT lockfence.is_held('$name', $tok1)"), 'f',
		"$label: W1's unused token holds nothing");
	is(sql("SELECT lockfence.release('$name', $t2)"), 't', "$label: released");
	# holder's release, W1's give-back and W2's release; hand-offs to W1, W2
	stats_delta_is(
		$st0,
		{ grants => 3, releases => 3, expiries => 0, waits => 2, wait_timeouts => 0 },
		$label);
	if ($how eq 'terminate') { finish_dead_session($w1); }
	else
	{
		# given back at once: a lease left to run out would be freed by the
		# reclaimer during the next block and move its counters
		is($w1->query("SELECT lockfence.release('$name', lockfence.try_acquire('$name', '1 s'))"),
			't', "$label: W1's session works and can take the lock now");
		$w1->quit;
	}
	$w2->quit;
}

is(sql('SELECT count(*) FROM lockfence.locks WHERE expires_at > now() + interval \'5 s\' OR expires_at IS NULL'),
	'0', 'part 1 left no long lease and no transaction lock');

########################################################################
# Part 2: 10,000 connect / acquire / disconnect cycles (300 under valgrind)
########################################################################

# under valgrind a connection costs tenths of a second of CPU: 300 of them
my $CLIENTS = 4;
my $PER_CLIENT = normal_or_valgrind(2500, 75);
sql('SELECT pg_sleep(1.1)');    # the 1 s lease of the last part-1 case ends
my $base = stats();
note('before the churn: ' . explain($base));

# Under valgrind a fresh backend spends tenths of a second planning the
# blocked call and compiling c_acquire before its wait starts: a 50 ms
# statement_timeout would fire before c_acquire's handler is in place.
my $blocked_timeout = normal_or_valgrind('50ms', '2s');

my $script = $node->basedir . '/churn.sql';
open(my $fh, '>', $script) or die "could not write $script: $!";
printf $fh q{\set k random(1, 40)
\set m random(1, 20)
\if :m <= 5
SELECT lockfence.try_acquire_session('sb:' || :k, '30 ms');
\elif :m <= 10
\set p random(1, 200)
SELECT c_acquire('pl:' || :p, 20, 10, false);
\elif :m <= 14
SELECT c_acquire('sw:' || :k, 30, 15, true);
\elif :m <= 19
BEGIN;
SELECT c_acquire_xact('x:' || :k, 30);
SELECT pg_sleep(0.002);
COMMIT;
\else
SET statement_timeout = '%s';
SELECT c_acquire('blocked', 20, 0, false);
\endif
}, $blocked_timeout;
close($fh);

# every fifth connection or so waits for this one until statement_timeout
my $blocked = sql("SELECT lockfence.try_acquire('blocked', '1 h')");

my $t0 = time();
my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[
		'pgbench', '-n', '-C', '-h', $node->host, '-p', $node->port,
		'-U', 'churn', '-c', $CLIENTS, '-j', 2, '-t', $PER_CLIENT,
		'-f', $script, 'postgres'
	],
	'>', \$out, '2>', \$err);
my $secs = time() - $t0;
ok($ok, 'pgbench -C ran without aborted clients') or diag("stderr: $err");
note($out);
my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
is($processed, $CLIENTS * $PER_CLIENT, "$processed connections each took a lock and disconnected");

ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = 'churn'"),
	'every churn backend has exited');
is(tok_waiters('blocked'), "$blocked|0",
	'the lock that every twentieth connection waited for until statement_timeout has no waiter left');
is(sql("SELECT lockfence.release('blocked', $blocked)"), 't', 'and is released');
my $mid = stats();
is( sql(q{
SELECT count(*) FILTER (WHERE session_bound), count(*) FILTER (WHERE expires_at IS NULL),
       coalesce(sum(waiters), 0)
  FROM lockfence.locks}),
	'0|0|0',
	'no session-bound lock, no transaction lock and no waiter is left');

# every lease was at most 30 ms
sql('SELECT pg_sleep(0.1)');
is(sql('SELECT count(*) FROM lockfence.locks'), '0', 'no lease is live any more');
my $unswept = stats()->{slots_used};
note("slots still used by expired leases before a sweep: $unswept");

# Fill the whole table as one role, with the per-role limit at the table
# size: this sweeps the expired leases, and fails if a slot or a per-role
# count leaked.
$node->append_conf('postgresql.conf', "lockfence.max_locks_per_role = $MAX_LOCKS");
$node->reload;
ok( $node->poll_query_until('postgres', 'SHOW lockfence.max_locks_per_role', $MAX_LOCKS),
	'lockfence.max_locks_per_role is set to the table size');
my ($ret, $fill, $ferr) = $node->psql(
	'postgres', "SET ROLE churn;
SELECT count(lockfence.try_acquire('fill:' || g, '1 h')) FROM generate_series(1, $MAX_LOCKS) g");
is($fill, $MAX_LOCKS, "one role fills all $MAX_LOCKS slots: no slot leaked")
  or diag($ferr);
is(stats()->{slots_used}, $MAX_LOCKS, 'slots_used shows the table full');
($ret, undef, $ferr) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT lockfence.try_acquire('fill:one-more', '1 h')");
like($ferr, qr/53200: lockfence lock table is full/, 'one more is refused: the table is full');
is( sql("SELECT count(*) FILTER (WHERE lockfence.force_release(name)) FROM lockfence.locks WHERE name LIKE 'fill:%'"),
	$MAX_LOCKS, 'the fill is force-released');
my $end = stats();
is($end->{slots_used}, 0, 'slots_used is back at its baseline of 0');
is($end->{grants} - $end->{releases} - $end->{expiries}, 0,
	'every grant since the start is accounted for as a release or an expiry');
my ($ret2, $again) = $node->psql('postgres', "SET ROLE churn;
SELECT count(lockfence.try_acquire('again:' || g, '1 ms')) FROM generate_series(1, $MAX_LOCKS) g");
is($again, $MAX_LOCKS, 'and the table can be filled again');

diag(
	sprintf(
		'interrupts: %s; churn: %d connections in %.1f s (%.0f/s): %d grants, %d waits, '
		  . '%d wait timeouts, %d releases, %d expiries; %d slots held by expired leases after the run',
		join(', ', map { "$_=$fig{$_}" } sort keys %fig),
		$processed, $secs, $processed / $secs,
		$mid->{grants} - $base->{grants},
		$mid->{waits} - $base->{waits},
		$mid->{wait_timeouts} - $base->{wait_timeouts},
		$mid->{releases} - $base->{releases},
		$mid->{expiries} - $base->{expiries},
		$unswept));

$node->stop;
done_testing();
