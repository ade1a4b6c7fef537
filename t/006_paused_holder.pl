
# The paused node of the fencing story, with a real paused process: client A
# takes 'account:1' with a 1 s lease, and then its backend is frozen with
# SIGSTOP (a GC pause, a VM migration).  Client B waits for the lease to run
# out and takes the lock over.  When A wakes up and writes with its old
# token, the fence-check trigger must reject the write (SQLSTATE LF001) and
# leave B's data alone.
#
# And the other way round: if A was frozen after its write had been
# accepted, inside the writing transaction, its lease is pinned until that
# transaction ends, so B must keep waiting past the end of A's lease, and
# gets the lock only once A's write has committed.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Backends we froze and have not let go yet.  A frozen backend must never
# outlive the test, whatever happens: it would block the shutdown.
my %stopped;

END
{
	# runs before PostgreSQL::Test::Cluster's END block stops the node
	kill('CONT', keys %stopped) if %stopped;
}

my $node = PostgreSQL::Test::Cluster->new('paused');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'lockfence'");
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION lockfence;
CREATE TABLE accounts (id int PRIMARY KEY, balance numeric, fence_token bigint);
INSERT INTO accounts VALUES (1, 1000, NULL);
CREATE TRIGGER accounts_fence BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION
    lockfence.fence_check('fence_token', 'account:', 'id');
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

# A background session with SQLSTATEs in its error messages, and its pid.
sub session
{
	my (%params) = @_;
	my $s = $node->background_psql('postgres', %params);
	$s->query_safe('\set VERBOSITY verbose');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	return ($s, $pid);
}

# Run a statement that is expected to fail; returns its error text, and
# clears it (BackgroundPsql keeps stderr across queries).
sub failing
{
	my ($s, $stmt) = @_;
	my ($out, $err) = $s->query($stmt);
	my $text = $s->{stderr};
	$s->{stderr} = '';
	return $err ? $text : "no error; output: $out";
}

# Send a statement that is expected to block; returns once psql sent it.
sub start_wait
{
	my ($s, $stmts) = @_;
	$s->query_until(qr/queued\n/, "\\echo queued\n$stmts\n");
	return;
}

# Pump a session until its stdout matches; returns the captures.
sub wait_out
{
	my ($s, $re, $label) = @_;
	my $ok = pump_until($s->{run}, $s->{timeout}, \$s->{stdout}, $re);
	ok($ok, $label);
	my @m = $s->{stdout} =~ $re;
	$s->{stdout} = '';
	return @m;
}

# Has the blocked statement of session $s printed anything yet?
sub has_output
{
	my ($s) = @_;
	$s->{run}->pump_nb();
	return $s->{stdout} ne '';
}

# The process state letter from /proc (T: stopped).
sub proc_state
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return '';
	my $stat = <$fh>;
	close($fh);
	return $stat =~ /^\d+ \(.*\) (\S)/ ? $1 : '';
}

sub freeze
{
	my ($pid, $label) = @_;
	$stopped{$pid} = 1;
	ok(kill('STOP', $pid), "$label: sent SIGSTOP to A's backend $pid");
	# the signal is asynchronous: wait until the kernel has stopped it
	my $state = '';
	for (1 .. 100)
	{
		$state = proc_state($pid);
		last if $state eq 'T';
		select(undef, undef, undef, 0.01);
	}
	is($state, 'T', "$label: A's backend is stopped");
	return;
}

sub thaw
{
	my ($pid, $label) = @_;
	ok(kill('CONT', $pid), "$label: sent SIGCONT to A's backend");
	delete $stopped{$pid};
	return;
}

sub row { return sql("SELECT balance, fence_token FROM accounts WHERE id = 1"); }

# "token|pins|waiters" of a held lock, '' when it is not held.
sub lock_row
{
	my ($name) = @_;
	return sql(
		"SELECT token, pins, waiters FROM lockfence.locks WHERE name = '$name'");
}

# "monotonic|lease" rejection counters.
sub rejections
{
	return sql(
		"SELECT fence_rejections_monotonic, fence_rejections_lease FROM lockfence.stats"
	);
}

# Seconds from timestamp expression $a to $b, computed by the server.
sub secs_between
{
	my ($a, $b) = @_;
	return sql("SELECT extract(epoch FROM ($b) - ($a))");
}

my ($A, $apid) = session(on_error_stop => 0);
my ($B, $bpid) = session();

# A takes the lock for 1 s and freezes; B waits for the lease to run out and
# takes the lock.  Returns (tA, tB).
sub paused_takeover
{
	my ($label) = @_;
	my $ta = $A->query_safe("SELECT lockfence.acquire('account:1', '1 s')");
	like($ta, qr/^\d+$/, "$label: A took account:1 for 1 s");
	my $end_a = sql(
		"SELECT expires_at FROM lockfence.locks WHERE name = 'account:1' AND token = $ta"
	);
	isnt($end_a, '', "$label: A's lease is in the view");

	freeze($apid, $label);

	# blocks until A's lease has run out
	my ($tb, $got_at) = split /\|/, $B->query_safe(
		q{SELECT t, clock_timestamp()
		  FROM lockfence.acquire('account:1', '30 s', '20 s') AS t});
	cmp_ok($tb, '>', $ta, "$label: B got the lock with a larger token");
	my $d = secs_between("'$end_a'::timestamptz", "'$got_at'::timestamptz");
	cmp_ok($d, '>=', 0, "$label: B got it at or after the end of A's lease (${d}s)");
	cmp_ok($d, '<', 5, "$label: and not long after");
	is(lock_row('account:1'), "$tb|0|0", "$label: B holds the lock");
	is(proc_state($apid), 'T', "$label: A's backend was stopped all along");
	return ($ta, $tb);
}

# ---- variant 1: B takes over and writes; then A wakes up and writes ----
{
	my ($ta, $tb) = paused_takeover('B wrote');
	$B->query_safe(
		"UPDATE accounts SET balance = 500, fence_token = $tb WHERE id = 1");
	is(row(), "500|$tb", "B wrote: B's write is there");

	my ($mono0, $lease0) = split /\|/, rejections();
	thaw($apid, 'B wrote');
	my $err = failing($A,
		"UPDATE accounts SET balance = 0, fence_token = $ta WHERE id = 1");
	# In lease mode the lock is checked before the row's token, so the
	# error names the lock A lost and the token that holds it now.
	like(
		$err,
		qr/ERROR:  LF001: stale fence token for lock "account:1" in relation "accounts"/,
		'B wrote: A\'s write with its old token fails with LF001');
	like(
		$err,
		qr/DETAIL:  Token $ta does not hold the lock; the current holder's token is $tb\./,
		'B wrote: the detail names both tokens');
	is(row(), "500|$tb", 'B wrote: the row keeps B\'s data');
	my ($mono1, $lease1) = split /\|/, rejections();
	is($mono1 - $mono0, 0, 'B wrote: not counted as a monotonic rejection');
	is($lease1 - $lease0, 1, 'B wrote: counted as a lease rejection');

	# A's token is no good for anything else either
	is($A->query_safe("SELECT lockfence.is_held('account:1', $ta)"),
		'f', 'B wrote: A\'s token does not hold the lock');
	is($A->query_safe("SELECT lockfence.release('account:1', $ta)"),
		'f', 'B wrote: A cannot release B\'s lock');
	is(lock_row('account:1'), "$tb|0|0", 'B wrote: B still holds the lock');
	is($B->query_safe("SELECT lockfence.release('account:1', $tb)"),
		't', 'B wrote: B released');
}

# ---- variant 2: B takes over and does not write; A wakes up and writes ----
{
	my $before = row();
	my ($row_token) = $before =~ /\|(\d+)$/;
	my ($ta, $tb) = paused_takeover('B idle');
	cmp_ok($ta, '>', $row_token,
		'B idle: A\'s token is newer than the row\'s, so only the lease can stop A'
	);

	my ($mono0, $lease0) = split /\|/, rejections();
	thaw($apid, 'B idle');
	my $err = failing($A,
		"UPDATE accounts SET balance = 0, fence_token = $ta WHERE id = 1");
	like(
		$err,
		qr/ERROR:  LF001: stale fence token for lock "account:1" in relation "accounts"/,
		'B idle: A\'s write with its old token fails with LF001, naming the lock and the table'
	);
	like(
		$err,
		qr/DETAIL:  Token $ta does not hold the lock; the current holder's token is $tb\./,
		'B idle: the detail names A\'s token and B\'s');
	is(row(), $before, 'B idle: the row is unchanged');
	my ($mono1, $lease1) = split /\|/, rejections();
	is($lease1 - $lease0, 1, 'B idle: fence_rejections_lease went up by one');
	is($mono1 - $mono0, 0, 'B idle: fence_rejections_monotonic did not move');

	# an INSERT from the woken A is fenced the same way
	$err = failing($A, "INSERT INTO accounts VALUES (1, 0, $ta) "
		  . "ON CONFLICT (id) DO UPDATE SET balance = 0, fence_token = $ta");
	like($err, qr/LF001: stale fence token for lock "account:1"/,
		'B idle: A\'s upsert is rejected too');
	is(row(), $before, 'B idle: the row is still unchanged');

	# B's token works
	$B->query_safe(
		"UPDATE accounts SET balance = 400, fence_token = $tb WHERE id = 1");
	is(row(), "400|$tb", 'B idle: B can write with its token');
	is($B->query_safe("SELECT lockfence.release('account:1', $tb)"),
		't', 'B idle: B released');
}

# ---- variant 3: A is frozen inside its transaction, after an accepted write ----
{
	my $before = row();
	my ($mono0, $lease0) = split /\|/, rejections();
	my $ta = $A->query_safe("SELECT lockfence.acquire('account:1', '1 s')");
	$A->query_safe('BEGIN');
	$A->query_safe(
		"UPDATE accounts SET balance = 100, fence_token = $ta WHERE id = 1");
	is(lock_row('account:1'), "$ta|1|0",
		'pinned: A\'s write was accepted and pinned the lease');

	freeze($apid, 'pinned');

	start_wait(
		$B, q{
SELECT 'tok=' || lockfence.acquire('account:1', '30 s', '20 s')
       || ' at=' || clock_timestamp();
});
	ok( $node->poll_query_until(
			'postgres',
			"SELECT waiters FROM lockfence.locks WHERE name = 'account:1'", '1'),
		'pinned: B is queued');

	# well past the end of A's 1 s lease
	sql(q{SELECT pg_sleep_until(expires_at + interval '1.5 s')
	      FROM lockfence.locks WHERE name = 'account:1'});
	is( sql(
			"SELECT expires_at < now() FROM lockfence.locks WHERE name = 'account:1'"),
		't',
		'pinned: A\'s lease has run out');
	ok(!has_output($B), 'pinned: B is still waiting');
	is(lock_row('account:1'), "$ta|1|1",
		'pinned: the view shows A\'s token, one pin and one waiter');
	is(sql("SELECT lockfence.try_acquire('account:1', '1 s') IS NULL"),
		't', 'pinned: nobody else can take the lock');
	is(row(), $before, 'pinned: A\'s uncommitted write is not visible');
	is(proc_state($apid), 'T', 'pinned: A\'s backend was stopped all along');

	thaw($apid, 'pinned');
	my $before_commit = sql('SELECT clock_timestamp()');
	$A->query_safe('COMMIT');
	my ($tb, $got_at) = wait_out($B, qr/tok=(\d+) at=(.*)\n/,
		'pinned: B got the lock once A committed');
	cmp_ok($tb, '>', $ta, 'pinned: with a larger token');
	my $d = secs_between("'$before_commit'::timestamptz",
		"'$got_at'::timestamptz");
	cmp_ok($d, '>=', 0, "pinned: not before A's COMMIT (${d}s)");
	cmp_ok($d, '<', 2, 'pinned: and promptly after it');
	is(row(), "100|$ta", 'pinned: A\'s committed write is there');
	is(lock_row('account:1'), "$tb|0|0",
		'pinned: B holds the lock, no pins left');

	# now A is the stale one
	like(
		failing($A,
			"UPDATE accounts SET balance = 0, fence_token = $ta WHERE id = 1"),
		qr/LF001: stale fence token for lock "account:1" in relation "accounts"/,
		'pinned: A\'s next write, in a new transaction, is rejected');
	$B->query_safe(
		"UPDATE accounts SET balance = 200, fence_token = $tb WHERE id = 1");
	is(row(), "200|$tb", 'pinned: B writes with its token');
	my ($mono1, $lease1) = split /\|/, rejections();
	is($lease1 - $lease0, 1, 'pinned: one lease rejection (A\'s late write)');
	is($mono1 - $mono0, 0, 'pinned: no monotonic rejection');
	is($B->query_safe("SELECT lockfence.release('account:1', $tb)"),
		't', 'pinned: B released');
}

$A->quit;
$B->quit;
$node->stop;
done_testing();
