
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

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('paused');
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION lockfence;
CREATE TABLE accounts (id int PRIMARY KEY, balance numeric, fence_token bigint);
INSERT INTO accounts VALUES (1, 1000, NULL);
CREATE TRIGGER accounts_fence BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION
    lockfence.fence_check('fence_token', 'account:', 'id');
});

set_node($node);

sub row { return sql("SELECT balance, fence_token FROM accounts WHERE id = 1"); }

# "token|pins|waiters" of a held lock, '' when it is not held.
sub lock_row { return lock_columns($_[0], 'token, pins, waiters'); }

# "monotonic|lease" rejection counters.
sub rejections
{
	return sql(
		"SELECT fence_rejections_monotonic, fence_rejections_lease FROM lockfence.stats"
	);
}

my ($A, $apid) = session(on_error_stop => 0);
my ($B, $bpid) = session();

# Freeze A's backend with SIGSTOP (until thaw_a); checked, with labels that
# name A.
sub freeze_a
{
	my ($label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($sent, $state) = stop_process($apid);
	ok($sent, "$label: sent SIGSTOP to A's backend $apid");
	is($state, 'T', "$label: A's backend is stopped");
	return;
}

sub thaw_a
{
	my ($label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok(cont_process($apid), "$label: sent SIGCONT to A's backend");
	return;
}

# A takes the lock for 1 s and freezes; B waits for the lease to run out and
# takes the lock.  Returns (tA, tB).
sub paused_takeover
{
	my ($label) = @_;
	my $ta = $A->query_safe("SELECT lockfence.acquire('account:1', '@{[ival(1)]}')");
	like($ta, qr/^\d+$/, "$label: A took account:1 for 1 s");
	my $end_a = sql(
		"SELECT expires_at FROM lockfence.locks WHERE name = 'account:1' AND token = $ta"
	);
	isnt($end_a, '', "$label: A's lease is in the view");

	freeze_a($label);

	# blocks until A's lease has run out
	my ($tb, $got_at) = split /\|/, $B->query_safe(
		qq{SELECT t, clock_timestamp()
		  FROM lockfence.acquire('account:1', '@{[ival(30)]}', '@{[ival(20)]}') AS t});
	cmp_ok($tb, '>', $ta, "$label: B got the lock with a larger token");
	my $d = secs_between("'$end_a'::timestamptz", "'$got_at'::timestamptz");
	cmp_ok($d, '>=', 0, "$label: B got it at or after the end of A's lease (${d}s)");
	cmp_ok($d, '<', secs(5), "$label: and not long after");
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
	thaw_a('B wrote');
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
	thaw_a('B idle');
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
	my $ta = $A->query_safe("SELECT lockfence.acquire('account:1', '@{[ival(1)]}')");
	$A->query_safe('BEGIN');
	$A->query_safe(
		"UPDATE accounts SET balance = 100, fence_token = $ta WHERE id = 1");
	is(lock_row('account:1'), "$ta|1|0",
		'pinned: A\'s write was accepted and pinned the lease');

	freeze_a('pinned');

	start_wait(
		$B, qq{
SELECT 'tok=' || lockfence.acquire('account:1', '@{[ival(30)]}', '@{[ival(20)]}')
       || ' at=' || clock_timestamp();
});
	wait_waiters('account:1', 1, 'pinned: B is queued');

	# well past the end of A's 1 s lease
	sql(qq{SELECT pg_sleep_until(expires_at + interval '@{[ival(1.5)]}')
	      FROM lockfence.locks WHERE name = 'account:1'});
	is( sql(
			"SELECT expires_at < now() FROM lockfence.locks WHERE name = 'account:1'"),
		't',
		'pinned: A\'s lease has run out');
	ok(!has_output($B, 'stdout'), 'pinned: B is still waiting');
	is(lock_row('account:1'), "$ta|1|1",
		'pinned: the view shows A\'s token, one pin and one waiter');
	is(sql("SELECT lockfence.try_acquire('account:1', '1 s') IS NULL"),
		't', 'pinned: nobody else can take the lock');
	is(row(), $before, 'pinned: A\'s uncommitted write is not visible');
	is(proc_state($apid), 'T', 'pinned: A\'s backend was stopped all along');

	thaw_a('pinned');
	my $before_commit = sql('SELECT clock_timestamp()');
	$A->query_safe('COMMIT');
	my ($tb, $got_at) = wait_out($B, qr/tok=(\d+) at=(.*)\n/,
		'pinned: B got the lock once A committed');
	cmp_ok($tb, '>', $ta, 'pinned: with a larger token');
	my $d = secs_between("'$before_commit'::timestamptz",
		"'$got_at'::timestamptz");
	cmp_ok($d, '>=', 0, "pinned: not before A's COMMIT (${d}s)");
	cmp_ok($d, '<', secs(2), 'pinned: and promptly after it');
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
