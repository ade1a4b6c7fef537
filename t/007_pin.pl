
# Pins under concurrency.  A write that the fence-check trigger accepted
# pins its lease until the writing transaction ends: meanwhile the lease
# cannot run out nor pass to anyone, so a writer never commits a write that
# a newer holder's writes could interleave with.  Checked here with a real
# second session waiting in acquire():
#   - the waiter keeps waiting past the end of the writer's lease, and gets
#     the lock promptly at the writer's COMMIT or ROLLBACK;
#   - release() and force_release() during a pinned write succeed but are
#     deferred to the end of the writing transaction;
#   - a terminated writer drops its pin;
#   - two transactions writing with one token hold two pins, and the lock is
#     freed only when both have ended.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('pin');
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION lockfence;
CREATE TABLE accounts (id int PRIMARY KEY, balance numeric, fence_token bigint);
INSERT INTO accounts SELECT g, 1000, NULL FROM generate_series(1, 6) g;
CREATE TRIGGER accounts_fence BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION
    lockfence.fence_check('fence_token', 'account:', 'id');
-- many rows under one lock: the lock is named after the account column
CREATE TABLE ledger (id serial PRIMARY KEY, account int, amount numeric,
                     fence_token bigint);
CREATE TRIGGER ledger_fence BEFORE INSERT OR UPDATE ON ledger
    FOR EACH ROW EXECUTE FUNCTION
    lockfence.fence_check('fence_token', 'account:', 'account');
});

set_node($node);

# The acquirer: a session that waits in acquire() and prints the token it
# got and when.
sub start_acquire
{
	my ($s, $name) = @_;
	start_wait(
		$s, qq{
SELECT 'tok=' || lockfence.acquire('$name', '@{[ival(30)]}', '@{[ival(20)]}')
       || ' at=' || clock_timestamp();});
	return;
}

# "token|pins|waiters" of a held lock, '' when it is not held.
sub lock_row { return lock_columns($_[0], 'token, pins, waiters'); }

# Sleep until $secs after the end of the lease of $name.
sub sleep_past_lease
{
	my ($name, $secs) = @_;
	sql("SELECT pg_sleep_until(expires_at + interval '@{[ival($secs)]}')
	     FROM lockfence.locks WHERE name = '$name'");
	is( sql(
			"SELECT expires_at < now() FROM lockfence.locks WHERE name = '$name'"),
		't',
		"$name: the lease has run out (the lock is still in the view)");
	return;
}

sub account { return sql("SELECT balance, fence_token FROM accounts WHERE id = $_[0]"); }

# End the writer's transaction with $how (a statement run by $end_cb) and
# check that the acquirer gets the lock then, not before, and promptly.
# Returns the acquirer's token.
sub ends_then_granted
{
	my ($name, $q, $old, $label, $end_cb) = @_;
	my $before = sql('SELECT clock_timestamp()');
	$end_cb->();
	my ($tq, $at) =
	  wait_out($q, qr/tok=(\d+) at=(.*)\n/, "$label: the waiter got the lock");
	cmp_ok($tq, '>', $old, "$label: with a larger token");
	my $d = secs_between("'$before'::timestamptz", "'$at'::timestamptz");
	cmp_ok($d, '>=', 0, "$label: not before the writer's transaction ended (${d}s)");
	cmp_ok($d, '<', secs(2), "$label: and promptly after it");
	is(lock_row($name), "$tq|0|0", "$label: the waiter holds it, no pins left");
	return $tq;
}

# ---- COMMIT: the waiter waits past the writer's lease ----
{
	my ($w, $wpid) = session(on_error_stop => 0);
	my ($q, $qpid) = session();
	my $t = $w->query_safe("SELECT lockfence.acquire('account:1', '@{[ival(1)]}')");
	$w->query_safe('BEGIN');
	$w->query_safe(
		"UPDATE accounts SET balance = 900, fence_token = $t WHERE id = 1");
	is(lock_row('account:1'), "$t|1|0", 'commit: the write pinned the lease');
	start_acquire($q, 'account:1');
	wait_waiters('account:1', 1, 'commit: the acquirer is queued');

	sleep_past_lease('account:1', 0.7);
	ok(!has_output($q, 'stdout'), 'commit: the acquirer is still waiting');
	is(lock_row('account:1'), "$t|1|1",
		'commit: the writer\'s token still holds the lock, pinned, one waiter');
	is(sql("SELECT lockfence.is_held('account:1', $t)"),
		't', 'commit: is_held is true for the pinned token');
	is(sql("SELECT lockfence.try_acquire('account:1', '1 s') IS NULL"),
		't', 'commit: try_acquire cannot take it either');
	$w->query_safe(
		"UPDATE accounts SET balance = 800, fence_token = $t WHERE id = 1");
	pass('commit: the writer can go on writing in its transaction');
	is(account(1), '1000|', 'commit: nothing is visible before the commit');

	my $tq = ends_then_granted('account:1', $q, $t, 'commit',
		sub { $w->query_safe('COMMIT') });
	is(account(1), "800|$t", 'commit: the writer\'s writes are committed');
	is(sql("SELECT lockfence.is_held('account:1', $t)"),
		'f', 'commit: the writer\'s token has lost the lock');
	like(
		failing($w,
			"UPDATE accounts SET balance = 0, fence_token = $t WHERE id = 1"),
		qr/LF001: stale fence token for lock "account:1" in relation "accounts".*\n.*the current holder's token is $tq\./,
		'commit: a new transaction of the writer is rejected');
	is(account(1), "800|$t", 'commit: the row is unchanged');
	is($q->query_safe("SELECT lockfence.release('account:1', $tq)"),
		't', 'commit: the acquirer released');
	$_->quit for ($w, $q);
}

# ---- ROLLBACK; the acquirer queued before the write ----
{
	my ($w, $wpid) = session();
	my ($q, $qpid) = session();
	# 2 s: time to queue the acquirer before the write
	my $t = $w->query_safe("SELECT lockfence.acquire('account:2', '@{[ival(2)]}')");
	start_acquire($q, 'account:2');
	wait_waiters('account:2', 1, 'rollback: the acquirer is queued');
	$w->query_safe('BEGIN');
	$w->query_safe(
		"UPDATE accounts SET balance = 0, fence_token = $t WHERE id = 2");
	is(lock_row('account:2'), "$t|1|1",
		'rollback: the write pinned the lease the acquirer waits for');

	# the acquirer's timer fires at the end of the lease; it must see the pin
	sleep_past_lease('account:2', 0.7);
	ok(!has_output($q, 'stdout'), 'rollback: the acquirer is still waiting');
	is(lock_row('account:2'), "$t|1|1", 'rollback: still held and pinned');

	my $tq = ends_then_granted('account:2', $q, $t, 'rollback',
		sub { $w->query_safe('ROLLBACK') });
	is(account(2), '1000|', 'rollback: the write is not there');
	is($q->query_safe("SELECT lockfence.release('account:2', $tq)"),
		't', 'rollback: the acquirer released');
	$_->quit for ($w, $q);
}

# ---- release() and force_release() during a pinned write are deferred ----
for my $how ('release', 'force_release')
{
	my $name = $how eq 'release' ? 'account:3' : 'account:4';
	my ($id) = $name =~ /(\d+)$/;
	my ($w, $wpid) = session();
	my ($q, $qpid) = session();
	my $t = $w->query_safe("SELECT lockfence.acquire('$name', '1 h')");
	$w->query_safe('BEGIN');
	$w->query_safe(
		"UPDATE accounts SET balance = 1, fence_token = $t WHERE id = $id");
	start_acquire($q, $name);
	wait_waiters($name, 1, "$how: the acquirer is queued");

	my $res =
	  $how eq 'release'
	  ? $w->query_safe("SELECT lockfence.release('$name', $t)")
	  : sql("SELECT lockfence.force_release('$name')");
	is($res, 't', "$how: returns true while the write is pinned");
	# a hand-off would have happened inside the call
	is(lock_row($name), "$t|1|1",
		"$how: the lock stays with the writer's token, pinned, the waiter waits");
	ok(!has_output($q, 'stdout'), "$how: the acquirer is still waiting");
	is(sql("SELECT lockfence.is_held('$name', $t)"),
		'f', "$how: is_held is false once released");
	is(sql("SELECT lockfence.renew('$name', $t, '1 h')"),
		'f', "$how: the released lease cannot be renewed");
	is( sql(
			$how eq 'release'
			? "SELECT lockfence.release('$name', $t)"
			: "SELECT lockfence.force_release('$name')"),
		'f',
		"$how: a second $how returns false");
	is(sql("SELECT lockfence.try_acquire('$name', '1 h') IS NULL"),
		't', "$how: a newcomer cannot take it");
	is(lock_row($name), "$t|1|1", "$how: nothing changed");

	my $tq = ends_then_granted($name, $q, $t, $how,
		sub { $w->query_safe('COMMIT') });
	is(account($id), "1|$t", "$how: the pinned write is committed");
	is($q->query_safe("SELECT lockfence.release('$name', $tq)"),
		't', "$how: the acquirer released");
	$_->quit for ($w, $q);
}

# ---- a terminated writer drops its pin ----
{
	my ($w, $wpid) = session();
	my ($q, $qpid) = session();
	my $t = $w->query_safe("SELECT lockfence.acquire('account:5', '@{[ival(1)]}')");
	$w->query_safe('BEGIN');
	$w->query_safe(
		"UPDATE accounts SET balance = 0, fence_token = $t WHERE id = 5");
	start_acquire($q, 'account:5');
	wait_waiters('account:5', 1, 'terminate: the acquirer is queued');
	sleep_past_lease('account:5', 0.7);
	ok(!has_output($q, 'stdout'), 'terminate: the acquirer is still waiting');
	is(lock_row('account:5'), "$t|1|1", 'terminate: held by the pin');

	my $tq = ends_then_granted(
		'account:5', $q, $t,
		'terminate',
		sub {
			is(sql("SELECT pg_terminate_backend($wpid)"),
				't', 'terminate: the writer is terminated');
		});
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $wpid"),
		'terminate: the writer\'s backend has exited');
	is(account(5), '1000|', 'terminate: the aborted write is not there');
	is($q->query_safe("SELECT lockfence.release('account:5', $tq)"),
		't', 'terminate: the acquirer released');
	$_->quit for ($w, $q);

	# a lease that has not run out outlives the terminated writer's pin:
	# it belongs to its token, not to the backend
	($w, $wpid) = session();
	($q, $qpid) = session();
	$t = $w->query_safe("SELECT lockfence.acquire('account:6', '1 h')");
	$w->query_safe('BEGIN');
	$w->query_safe(
		"UPDATE accounts SET balance = 0, fence_token = $t WHERE id = 6");
	start_acquire($q, 'account:6');
	wait_waiters('account:6', 1, 'terminate, live lease: the acquirer is queued');
	is(sql("SELECT pg_terminate_backend($wpid)"),
		't', 'terminate, live lease: the writer is terminated');
	ok( $node->poll_query_until(
			'postgres',
			"SELECT pins FROM lockfence.locks WHERE name = 'account:6'", '0'),
		'terminate, live lease: the pin dropped');
	is(lock_row('account:6'), "$t|0|1",
		'terminate, live lease: the lease is still held, the acquirer waits');
	ok(!has_output($q, 'stdout'), 'terminate, live lease: the acquirer has no token');
	is(account(6), '1000|', 'terminate, live lease: the aborted write is not there');
	$tq = ends_then_granted(
		'account:6', $q, $t,
		'terminate, live lease',
		sub {
			is(sql("SELECT lockfence.release('account:6', $t)"),
				't', 'terminate, live lease: released by its token');
		});
	is($q->query_safe("SELECT lockfence.release('account:6', $tq)"),
		't', 'terminate, live lease: the acquirer released');
	$_->quit for ($w, $q);
}

# ---- two transactions with one token: two pins ----
{
	my ($w1, $pid1) = session();
	my ($w2, $pid2) = session();
	my ($q, $qpid) = session();
	my $t = sql("SELECT lockfence.acquire('account:7', '@{[ival(1)]}')");
	$w1->query_safe('BEGIN');
	$w1->query_safe(
		"INSERT INTO ledger (account, amount, fence_token) VALUES (7, 10, $t)");
	$w2->query_safe('BEGIN');
	$w2->query_safe(
		"INSERT INTO ledger (account, amount, fence_token) VALUES (7, 20, $t)");
	is(lock_row('account:7'), "$t|2|0", 'two pins: both writes pinned the lease');

	start_acquire($q, 'account:7');
	wait_waiters('account:7', 1, 'two pins: the acquirer is queued');
	sleep_past_lease('account:7', 0.7);
	ok(!has_output($q, 'stdout'), 'two pins: the acquirer is still waiting');
	is(lock_row('account:7'), "$t|2|1", 'two pins: still held, two pins');

	$w1->query_safe('COMMIT');
	# a free would hand the lock over inside the COMMIT
	is(lock_row('account:7'), "$t|1|1",
		'two pins: one pin left after the first COMMIT, still held');
	ok(!has_output($q, 'stdout'), 'two pins: the acquirer is still waiting');
	is(sql("SELECT amount FROM ledger WHERE account = 7 ORDER BY amount"),
		'10', 'two pins: the first write is committed');

	my $tq = ends_then_granted('account:7', $q, $t, 'two pins',
		sub { $w2->query_safe('COMMIT') });
	is( sql(
			"SELECT string_agg(amount || ':' || (fence_token = $t), ',' ORDER BY amount)
			 FROM ledger WHERE account = 7"),
		'10:true,20:true',
		'two pins: both writes are committed with the token');
	is($q->query_safe("SELECT lockfence.release('account:7', $tq)"),
		't', 'two pins: the acquirer released');
	$_->quit for ($w1, $w2, $q);
}

is(sql('SELECT count(*) FROM lockfence.locks'), '0', 'no locks left');
$node->stop;
done_testing();
