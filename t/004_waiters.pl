
# Blocked acquire calls: served in FIFO order, woken by release, by lease
# expiry, by force_release and by a renew that shortens the lease; and a
# waiter that is cancelled, times out or is terminated leaves the queue.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('waiters');
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION lockfence;
CREATE TABLE wlog (who text PRIMARY KEY, tok bigint, got_at timestamptz,
                   lease_end timestamptz, rel_at timestamptz);
});

set_node($node);

sub waiters { return lock_columns($_[0], 'waiters'); }

sub holder_pid { return lock_columns($_[0], 'holder_pid'); }

# ---- FIFO order, woken by release ----
{
	my $t0 = sql("SELECT lockfence.try_acquire('fifo', '@{[ival(30)]}')");
	like($t0, qr/^\d+$/, 'fifo: holder took the lock with a 30 s lease');

	# A gate (advisory lock) keeps the first waiter holding 'fifo' after it
	# got it, so that the hand-off can be inspected.
	my ($gate, $gpid) = session();
	$gate->query_safe('SELECT pg_advisory_lock(42)');

	my (@w, @wpid);
	for my $i (1 .. 4)
	{
		my ($s, $pid) = session();
		push @w, $s;
		push @wpid, $pid;
		start_wait(
			$s, qq{
SELECT lockfence.acquire('fifo', '@{[ival(30)]}', '@{[ival(60)]}') AS tok \\gset
INSERT INTO wlog (who, tok, got_at) VALUES ('w$i', :tok, clock_timestamp());
SELECT pg_advisory_lock(42);
SELECT pg_advisory_unlock(42);
UPDATE wlog SET rel_at = clock_timestamp() WHERE who = 'w$i';
SELECT 'done=' || lockfence.release('fifo', :tok);
});
		# queue the next one only once this one is in the queue
		wait_waiters('fifo', $i, "fifo: waiter $i is queued");
	}

	my $rel_at = sql("SELECT clock_timestamp()");
	is(sql("SELECT lockfence.release('fifo', $t0)"), 't',
		'fifo: holder released');

	# w1 has the lock now and waits at the gate
	ok( $node->poll_query_until(
			'postgres', "SELECT count(*) FROM wlog WHERE who = 'w1'", '1'),
		'fifo: first waiter got the lock');
	is(holder_pid('fifo'), $wpid[0], 'fifo: the first waiter holds it');
	is(waiters('fifo'), '3', 'fifo: the other three still wait');
	is(sql("SELECT lockfence.try_acquire('fifo', '1s') IS NULL"),
		't', 'fifo: a newcomer cannot take the lock over the queue');
	my ($s, $spid) = session(on_error_stop => 0);
	$s->query("SELECT lockfence.acquire('fifo', '1s', '200ms')");
	wait_err($s, qr/55P03: could not obtain lock "fifo"/,
		'fifo: a newcomer with a timeout gives up with 55P03');
	is(waiters('fifo'), '3', 'fifo: and leaves the queue as it was');
	$s->quit;

	$gate->query_safe('SELECT pg_advisory_unlock(42)');
	for my $i (0 .. 3)
	{
		wait_out($w[$i], qr/done=(true|false)/, "fifo: waiter " . ($i + 1) . " finished");
	}
	$_->quit for (@w, $gate);

	my @rows = split /\n/,
	  sql("SELECT who, tok FROM wlog WHERE who LIKE 'w%' ORDER BY got_at");
	is(join(',', map { (split /\|/)[0] } @rows),
		'w1,w2,w3,w4', 'fifo: waiters got the lock in the order they queued');
	my @toks = map { (split /\|/)[1] } @rows;
	my $inc = 1;
	for my $i (1 .. $#toks) { $inc = 0 unless $toks[$i] > $toks[ $i - 1 ]; }
	ok($inc && $toks[0] > $t0, 'fifo: tokens increase in queue order')
	  or diag("holder $t0, waiters @toks");

	# Wake-ups are prompt: no waiting for the 30 s lease to run out.
	my $d = secs_between("'$rel_at'::timestamptz",
		"(SELECT got_at FROM wlog WHERE who = 'w1')");
	cmp_ok($d, '<', secs(2), "fifo: first waiter woke soon after the release (${d}s)");
	for my $i (2 .. 4)
	{
		my $p = $i - 1;
		$d = secs_between(
			"(SELECT rel_at FROM wlog WHERE who = 'w$p')",
			"(SELECT got_at FROM wlog WHERE who = 'w$i')");
		cmp_ok($d, '<', secs(2),
			"fifo: waiter $i woke soon after waiter $p released (${d}s)");
	}
	is(sql("SELECT count(*) FROM lockfence.locks WHERE name = 'fifo'"),
		'0', 'fifo: lock free at the end');
}

# ---- woken by lease expiry, nobody releases ----
{
	# connect the waiters first, so that they queue well within the lease
	my (@w, @wpid);
	for my $i (1 .. 2)
	{
		my ($s, $pid) = session();
		push @w, $s;
		push @wpid, $pid;
	}

	my $t0 = sql("SELECT lockfence.try_acquire('exp', '@{[ival(2)]}')");
	my $end0 = sql(
		"SELECT expires_at FROM lockfence.locks WHERE name = 'exp' AND token = $t0"
	);
	isnt($end0, '', 'exp: holder took a 2 s lease');

	for my $i (1 .. 2)
	{
		# the first waiter takes a 1 s lease, and never releases either
		my $lease = $i == 1 ? ival(1) : ival(30);
		my $s = $w[ $i - 1 ];
		start_wait(
			$s, qq{
SELECT lockfence.acquire('exp', '$lease', '@{[ival(30)]}') AS tok \\gset
INSERT INTO wlog (who, tok, got_at, lease_end)
  VALUES ('e$i', :tok, clock_timestamp(),
          (SELECT expires_at FROM lockfence.locks
            WHERE name = 'exp' AND token = :tok));
SELECT 'tok=' || :tok;
});
		wait_waiters('exp', $i, "exp: waiter $i is queued");
	}

	my ($t1) = wait_out($w[0], qr/tok=(\d+)/,
		'exp: first waiter got the lock when the lease ran out');
	my ($t2) = wait_out($w[1], qr/tok=(\d+)/,
		'exp: second waiter got it when the first waiter\'s lease ran out');
	cmp_ok($t1, '>', $t0, 'exp: first waiter token exceeds the holder token');
	cmp_ok($t2, '>', $t1, 'exp: second waiter token exceeds the first');

	my $d = secs_between("'$end0'::timestamptz",
		"(SELECT got_at FROM wlog WHERE who = 'e1')");
	cmp_ok($d, '>=', 0, "exp: first waiter got it at or after the expiry (${d}s)");
	cmp_ok($d, '<', secs(5), 'exp: and not long after');
	$d = secs_between("(SELECT lease_end FROM wlog WHERE who = 'e1')",
		"(SELECT got_at FROM wlog WHERE who = 'e2')");
	cmp_ok($d, '>=', 0,
		"exp: second waiter got it at or after the first one's expiry (${d}s)");
	cmp_ok($d, '<', secs(5), 'exp: and not long after');

	is(sql("SELECT lockfence.is_held('exp', $t0), lockfence.is_held('exp', $t1),
	               lockfence.is_held('exp', $t2)"),
		'f|f|t', 'exp: only the last token holds the lock');
	is(holder_pid('exp'), $wpid[1], 'exp: held by the second waiter');
	is(sql("SELECT lockfence.release('exp', $t1)"),
		'f', 'exp: the expired first waiter cannot release it');
	is(sql("SELECT lockfence.release('exp', $t2)"), 't', 'exp: released');
	$_->quit for @w;
}

# ---- the first waiter gives up: the next one must watch the lease ----
{
	my ($w1, $pid1) = session(on_error_stop => 0);
	my ($w2, $pid2) = session();
	my $t0 = sql("SELECT lockfence.try_acquire('hand', '@{[ival(3)]}')");
	my $end0 = sql(
		"SELECT expires_at FROM lockfence.locks WHERE name = 'hand' AND token = $t0"
	);
	start_wait($w1,
		"SELECT lockfence.acquire('hand', '@{[ival(30)]}', '@{[ival(1)]}');");
	wait_waiters('hand', 1, 'hand-over: first waiter (1 s timeout) is queued');
	# no timer of its own worth mentioning: only the lease end can wake it
	start_wait(
		$w2, qq{
SELECT lockfence.acquire('hand', '@{[ival(30)]}', '@{[ival(20)]}') AS tok \\gset
SELECT 'tok=' || :tok || ' at=' || clock_timestamp();
});
	wait_waiters('hand', 2, 'hand-over: second waiter is queued');
	wait_err($w1, qr/55P03: could not obtain lock "hand"/,
		'hand-over: first waiter times out');
	my ($t2, $at) = wait_out($w2, qr/tok=(\d+) at=(.*)\n/,
		'hand-over: second waiter got the lock when the lease ran out');
	cmp_ok($t2, '>', $t0, 'hand-over: with a greater token');
	my $d = secs_between("'$end0'::timestamptz", "'$at'::timestamptz");
	cmp_ok($d, '>=', 0, "hand-over: at or after the lease end (${d}s)");
	cmp_ok($d, '<', secs(5), 'hand-over: and not long after');
	is(sql("SELECT lockfence.release('hand', $t2)"), 't', 'hand-over: released');
	$_->quit for ($w1, $w2);
}

# ---- a new first waiter whose wait ends before the holder's lease ----
# It needs no lease timer, so it is not woken when it becomes first, by a
# hand-off or by the waiter ahead giving up: it sleeps on to its own
# deadline and times out then, and the holder keeps the lock.
{
	my $t0 = sql("SELECT lockfence.try_acquire('skip', '@{[ival(30)]}')");
	my ($w1, $pid1) = session();
	my ($w2, $pid2) = session(on_error_stop => 0);
	start_wait($w1,
		"SELECT 'tok=' || lockfence.acquire('skip', '@{[ival(30)]}', '@{[ival(60)]}');"
	);
	wait_waiters('skip', 1, 'skip: first waiter is queued');
	my $timed_wait = sub {
		my ($timeout) = @_;
		return qq{
SELECT clock_timestamp() AS started \\gset
SELECT lockfence.acquire('skip', '@{[ival(30)]}', '@{[ival($timeout)]}');
SELECT 'waited=' || extract(epoch FROM clock_timestamp() - :'started'::timestamptz);
};
	};
	start_wait($w2, $timed_wait->(3));
	wait_waiters('skip', 2, 'skip: second waiter (3 s timeout) is queued');
	is(sql("SELECT lockfence.release('skip', $t0)"), 't', 'skip: released');
	my ($t1) = wait_out($w1, qr/tok=(\d+)/, 'skip: first waiter got the lock');
	wait_err($w2, qr/55P03: could not obtain lock "skip"/,
		'skip: the new first waiter times out');
	my ($waited) = wait_out($w2, qr/waited=([\d.]+)/, 'skip: wait measured');
	cmp_ok($waited, '>=', secs(3), "skip: at its deadline (${waited}s)");
	cmp_ok($waited, '<', secs(6), 'skip: and not long after');
	is(holder_pid('skip'), $pid1, 'skip: the holder keeps the lock');
	wait_waiters('skip', 0, 'skip: the queue is empty');

	# the same when the waiter ahead gives up
	my ($w3, $pid3) = session(on_error_stop => 0);
	start_wait($w3, $timed_wait->(1));
	wait_waiters('skip', 1, 'skip: a waiter with a 1 s timeout is queued');
	start_wait($w2, $timed_wait->(3));
	wait_waiters('skip', 2, 'skip: a waiter with a 3 s timeout is queued behind it');
	wait_err($w3, qr/55P03: could not obtain lock "skip"/,
		'skip: the first waiter gives up');
	wait_err($w2, qr/55P03: could not obtain lock "skip"/,
		'skip: the next one times out too');
	($waited) = wait_out($w2, qr/waited=([\d.]+)/, 'skip: wait measured');
	cmp_ok($waited, '>=', secs(3), "skip: at its own deadline (${waited}s)");
	cmp_ok($waited, '<', secs(6), 'skip: and not long after');
	is(holder_pid('skip'), $pid1, 'skip: the holder still has the lock');
	is(sql("SELECT lockfence.release('skip', $t1)"), 't', 'skip: released');
	$_->quit for ($w1, $w2, $w3);
}

# ---- woken by force_release, and by a renew that shortens the lease ----
{
	my $t0 = sql("SELECT lockfence.try_acquire('fr', '1h')");
	my ($s, $pid) = session();
	start_wait($s, "SELECT 'tok=' || lockfence.acquire('fr', '1h', '30s');");
	wait_waiters('fr', 1, 'force: waiter is queued');
	is(sql("SELECT lockfence.force_release('fr')"), 't', 'force: released');
	my ($t1) = wait_out($s, qr/tok=(\d+)/, 'force: waiter got the lock');
	cmp_ok($t1, '>', $t0, 'force: with a greater token');
	is(holder_pid('fr'), $pid, 'force: held by the waiter');

	# The waiter is the first in line and sleeps until the 1 h lease ends;
	# a renew to 1 s must make it look again.
	my ($s2, $pid2) = session();
	start_wait($s2,
		"SELECT 'tok=' || lockfence.acquire('fr', '1h', '30s') || ' at=' || clock_timestamp();"
	);
	wait_waiters('fr', 1, 'renew: waiter is queued');
	is(sql("SELECT lockfence.renew('fr', $t1, '@{[ival(1)]}')"), 't',
		'renew: lease shortened to 1 s');
	my $end1 = sql(
		"SELECT expires_at FROM lockfence.locks WHERE name = 'fr' AND token = $t1"
	);
	my ($t2, $at) = wait_out($s2, qr/tok=(\d+) at=(.*)\n/,
		'renew: waiter got the lock when the shortened lease ran out');
	cmp_ok($t2, '>', $t1, 'renew: with a greater token');
	my $d = secs_between("'$end1'::timestamptz", "'$at'::timestamptz");
	cmp_ok($d, '>=', 0, "renew: at or after the new lease end (${d}s)");
	cmp_ok($d, '<', secs(5), 'renew: and not long after');
	is(sql("SELECT lockfence.release('fr', $t2)"), 't', 'renew: released');
	$_->quit for ($s, $s2);
}

# ---- what a waiter reports in pg_stat_activity ----
# (PostgreSQL 17 and later: a wait event of lockfence's own name)
{
	my $named = sql("SELECT current_setting('server_version_num')::int >= 170000") eq 't';
	my $t = sql("SELECT lockfence.try_acquire('we', '1h')");
	my ($s, $pid) = session();
	start_wait($s, "SELECT lockfence.acquire('we', '1h', '30s');");
	wait_waiters('we', 1, 'wait event: a waiter queues');
	my $want = $named ? 'Extension|LockfenceLockWait' : 'Extension|Extension';
	is(sql("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = $pid"),
		$want, "wait event: the waiter reports $want");
	is(sql("SELECT lockfence.release('we', $t)"), 't', 'wait event: released');
	my ($t2) = wait_out($s, qr/^(\d+)$/m, 'wait event: the waiter takes the lock');
	is(sql("SELECT lockfence.release('we', " . ($t2 // 0) . ")"), 't',
		'wait event: and releases it');
	$s->quit;
}

# ---- a plain lease held by this same backend: waited for like any other ----
# (a pooled client's statement may land on the server connection that took
# the lease for another client); what only this backend could end, it never
# waits for
{
	my ($s, $pid) = session(on_error_stop => 0);
	my $t = $s->query_safe("SELECT lockfence.acquire('self', '1h')");
	start_wait($s, "SELECT lockfence.acquire('self', '1h', '30s');");
	wait_waiters('self', 1, 'self: acquire of its own lease queues behind it');
	is(sql("SELECT lockfence.release('self', $t)"), 't',
		'self: the lease is released from another connection');
	my ($t2) = wait_out($s, qr/^(\d+)$/m, 'self: and the queued acquire takes the lock');
	cmp_ok($t2 // 0, '>', $t, 'self: with a larger token');

	# a short lease of its own ends, and the waiting acquire takes the lock
	my $t3 = $s->query_safe("SELECT lockfence.acquire('self2', '@{[ival(0.5)]}')");
	my $t4 = $s->query_safe("SELECT lockfence.acquire('self2', '1h', '30s')");
	cmp_ok($t4, '>', $t3, 'self: waiting for its own short lease ends with the lease');
	is(sql("SELECT lockfence.is_held('self2', $t3)"), 'f', 'self: the old token is dead');

	# its session lease, transaction lock and pinned lease: 55P03 at once
	my $ts = $s->query_safe("SELECT lockfence.acquire_session('own', '1h')");
	$s->query("SELECT lockfence.acquire('own', '1h', '30s')");
	wait_err($s, qr/55P03: lock "own" is already held by this session/,
		'self: acquire of its own session lease fails with 55P03');
	is($s->query("SELECT lockfence.try_acquire('own', '1h') IS NULL"),
		't', 'self: try_acquire of it returns NULL');
	$s->query_safe("SELECT lockfence.release('own', $ts)");
	$s->query_safe("BEGIN; SELECT lockfence.acquire_xact('own', '30s')");
	$s->query("SELECT lockfence.acquire_xact('own', '30s')");
	wait_err($s, qr/55P03: lock "own" is already held by this session/,
		'self: acquire_xact of its own transaction lock fails with 55P03');
	$s->query_safe('ROLLBACK');
	$s->query_safe("BEGIN; SELECT lockfence.pin('self', $t2)");
	$s->query("SELECT lockfence.acquire('self', '1h', '30s')");
	wait_err($s, qr/55P03: lock "self" is pinned by this transaction/,
		'self: acquire of a lease its transaction pinned fails with 55P03');
	$s->query_safe('ROLLBACK');
	is(waiters('self'), '0', 'self: nothing was queued');
	is(sql("SELECT lockfence.is_held('self', $t2)"), 't', 'self: still held');
	is($s->query("SELECT lockfence.release('self', $t2)"), 't',
		'self: released');
	is($s->query("SELECT lockfence.release('self2', $t4)"), 't',
		'self: and the other one');
	$s->quit;
}

# ---- cancelling a wait ----
{
	my $t0 = sql("SELECT lockfence.try_acquire('cx', '1h')");
	my ($w1, $pid1) = session(on_error_stop => 0);
	my ($w2, $pid2) = session(on_error_stop => 0);
	start_wait($w1, "SELECT 'tok=' || lockfence.acquire('cx', '1h', '60s');");
	wait_waiters('cx', 1, 'cancel: first waiter is queued');
	start_wait($w2, "SELECT 'tok=' || lockfence.acquire('cx', '1h', '60s');");
	wait_waiters('cx', 2, 'cancel: second waiter is queued');

	is(sql("SELECT pg_cancel_backend($pid1)"), 't', 'cancel: first waiter');
	wait_err($w1, qr/57014: canceling statement due to user request/,
		'cancel: waiter reports the cancel');
	wait_waiters('cx', 1, 'cancel: cancelled waiter left the queue');
	is(sql("SELECT token FROM lockfence.locks WHERE name = 'cx'"),
		$t0, 'cancel: holder unchanged');

	is(sql("SELECT lockfence.release('cx', $t0)"), 't', 'cancel: released');
	my ($t2) = wait_out($w2, qr/tok=(\d+)/,
		'cancel: remaining waiter got the lock');
	is(holder_pid('cx'), $pid2, 'cancel: held by the remaining waiter');
	is($w1->query("SELECT lockfence.try_acquire('cx', '1h') IS NULL"),
		't', 'cancel: the cancelled session did not get it');
	is(sql("SELECT lockfence.release('cx', $t2)"), 't',
		'cancel: remaining waiter released');
	my $t3 = $w1->query("SELECT lockfence.try_acquire('cx', '1h')");
	like($t3, qr/^\d+$/, 'cancel: cancelled session can take it afterwards');
	cmp_ok($t3, '>', $t2, 'cancel: with a greater token');
	$w1->query("SELECT lockfence.release('cx', $t3)");

	# cancel the only waiter: the next release must not hand the lock to it
	$t0 = sql("SELECT lockfence.try_acquire('cy', '1h')");
	start_wait($w2, "SELECT 'tok=' || lockfence.acquire('cy', '1h', '60s');");
	wait_waiters('cy', 1, 'cancel: only waiter is queued');
	is(sql("SELECT pg_cancel_backend($pid2)"), 't', 'cancel: only waiter');
	wait_err($w2, qr/57014: canceling statement due to user request/,
		'cancel: only waiter reports the cancel');
	is(waiters('cy'), '0', 'cancel: queue is empty');
	is(sql("SELECT lockfence.release('cy', $t0)"), 't', 'cancel: released');
	is(sql("SELECT count(*) FROM lockfence.locks WHERE name = 'cy'"),
		'0', 'cancel: lock is free, not handed to the cancelled waiter');
	like(sql("SELECT lockfence.try_acquire('cy', '1h')"),
		qr/^\d+$/, 'cancel: another session takes it at once');
	$_->quit for ($w1, $w2);
}

# ---- statement_timeout, acquire timeout and lockfence.wait_timeout ----
{
	my $t0 = sql("SELECT lockfence.try_acquire('st', '1h')");
	my ($w, $pid) = session(on_error_stop => 0);

	$w->query_safe("SET statement_timeout = '@{[ival(2)]}'");
	start_wait($w, "SELECT lockfence.acquire('st', '1h', '0');");
	wait_waiters('st', 1, 'statement_timeout: waiter is queued');
	wait_err($w, qr/57014: canceling statement due to statement timeout/,
		'statement_timeout: the wait is cancelled');
	wait_waiters('st', 0, 'statement_timeout: waiter left the queue');
	$w->query("RESET statement_timeout");

	start_wait($w, "SELECT lockfence.acquire('st', '1h', '@{[ival(2)]}');");
	wait_waiters('st', 1, 'acquire timeout: waiter is queued');
	wait_err($w, qr/55P03: could not obtain lock "st"/,
		'acquire timeout: 55P03 after the timeout');
	wait_waiters('st', 0, 'acquire timeout: waiter left the queue');

	$w->query("SET lockfence.wait_timeout = '@{[ival(2)]}'");
	start_wait($w, "SELECT lockfence.acquire('st', '1h');");
	wait_waiters('st', 1, 'wait_timeout: waiter is queued');
	wait_err($w, qr/55P03: could not obtain lock "st"/,
		'wait_timeout: 55P03 after lockfence.wait_timeout');
	wait_waiters('st', 0, 'wait_timeout: waiter left the queue');

	is(sql("SELECT lockfence.release('st', $t0)"), 't', 'timeouts: released');
	is(sql("SELECT count(*) FROM lockfence.locks WHERE name = 'st'"),
		'0', 'timeouts: lock is free');
	my $t1 = $w->query("SELECT lockfence.try_acquire('st', '1h')");
	like($t1, qr/^\d+$/, 'timeouts: the timed-out session can take it');
	$w->quit;
}

# ---- pg_terminate_backend of a waiter ----
{
	my $t0 = sql("SELECT lockfence.try_acquire('tm', '1h')");
	my ($wa, $pida) = session();
	my ($wb, $pidb) = session();
	start_wait($wa, "SELECT 'tok=' || lockfence.acquire('tm', '1h', '60s');");
	wait_waiters('tm', 1, 'terminate: first waiter is queued');
	start_wait($wb, "SELECT 'tok=' || lockfence.acquire('tm', '1h', '60s');");
	wait_waiters('tm', 2, 'terminate: second waiter is queued');

	is(sql("SELECT pg_terminate_backend($pida)"), 't',
		'terminate: first waiter');
	wait_err($wa, qr/terminating connection due to administrator command/,
		'terminate: waiter reports it');
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pida"),
		'terminate: waiter backend has exited');
	is(waiters('tm'), '1', 'terminate: it left the queue');
	finish_dead_session($wa, 'psql of the terminated session exited');

	# a new backend (likely reusing the freed slot) queues behind
	my ($wc, $pidc) = session();
	start_wait($wc, "SELECT 'tok=' || lockfence.acquire('tm', '1h', '60s');");
	wait_waiters('tm', 2, 'terminate: a new waiter is queued');

	is(sql("SELECT lockfence.release('tm', $t0)"), 't', 'terminate: released');
	my ($tb) = wait_out($wb, qr/tok=(\d+)/,
		'terminate: the surviving waiter got the lock');
	is(holder_pid('tm'), $pidb, 'terminate: held by the surviving waiter');
	is(waiters('tm'), '1', 'terminate: the new waiter still waits');
	is(sql("SELECT lockfence.release('tm', $tb)"), 't',
		'terminate: surviving waiter released');
	my ($tc) = wait_out($wc, qr/tok=(\d+)/, 'terminate: the new waiter got it');
	cmp_ok($tc, '>', $tb, 'terminate: with a greater token');
	is(sql("SELECT lockfence.release('tm', $tc)"), 't', 'terminate: released');
	$_->quit for ($wb, $wc);
}

$node->stop;
done_testing();
