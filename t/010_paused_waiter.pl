
# Paused processes and lock waits, with real SIGSTOP/SIGCONT.
#
# Part A, a paused waiter: a backend waiting in acquire() is frozen until
# well past its own wait timeout.  Whatever happens to the lock meanwhile --
# the holder keeps it, the holder releases it, or the holder's lease runs
# out -- the waiter must not come back with the lock: after SIGCONT it gets
# 55P03, it is not the holder, and the lock goes to the next waiter (or
# stays with its holder).  lockfence.locks and lockfence.stats must agree.
# A releaser skips a waiter whose deadline has passed, and a first waiter
# checks its own deadline before it takes an expired lease.  The test also
# checks that the counters and the view tell what really happened.
#
# Part B, a paused holder: a backend that holds a lease is frozen past the
# end of the lease.  Another session takes the lock; the woken holder can
# neither renew nor release it, and its fenced write (lease-mode trigger) is
# rejected with LF001, also in the middle of a read-modify-write
# transaction; the new holder's data stays.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('paused_waiter');
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION lockfence;
CREATE TABLE accounts (id int PRIMARY KEY, balance numeric, fence_token bigint);
INSERT INTO accounts VALUES (1, 1000, NULL), (2, 1000, NULL), (3, 1000, NULL);
CREATE TRIGGER accounts_fence BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION
    lockfence.fence_check('fence_token', 'account:', 'id');
});

set_node($node);

# Pump a waiting session until it either printed a token ("tok=N") or an
# error.  Returns ('tok', N) or ('err', text), and clears both streams.
sub wait_outcome
{
	my ($s) = @_;
	$s->{timeout}->start;
	until ($s->{stdout} =~ /tok=\d+/
		  || $s->{stderr} =~ /ERROR:.*\n/
		  || $s->{timeout}->is_expired)
	{
		$s->{run}->pump_nb();
		usleep(10_000);
	}
	my @r =
		$s->{stdout} =~ /tok=(\d+)/ ? ('tok', $1)
	  : $s->{stderr} =~ /ERROR/ ? ('err', $s->{stderr})
	  :                           ('none', '');
	$s->{stdout} = $s->{stderr} = '';
	return @r;
}

# "token|holder_pid|waiters|pins" of a held lock, '' when it is not held.
sub lock_row { return lock_columns($_[0], 'token, holder_pid, waiters, pins'); }

sub balance { return sql("SELECT balance, fence_token FROM accounts WHERE id = $_[0]"); }

# Figures for the README.
my %fig;

########################################################################
# Part A: a paused waiter
########################################################################

# Sets up: lock $name held by the test (lease $lease), W1 queued first with
# a wait timeout of $w1_timeout, W2 queued behind it with a 30 s timeout,
# and W1's backend frozen while it still waits.  Returns (t0, W1, w1pid,
# W2, w2pid, W1's deadline as a server timestamp).
sub paused_first_waiter
{
	my ($name, $lease, $w1_timeout, $label) = @_;
	my ($w1, $w1pid) = session(on_error_stop => 0);
	my ($w2, $w2pid) = session(on_error_stop => 0);

	my $t0 = sql("SELECT lockfence.try_acquire('$name', '$lease')");
	like($t0, qr/^\d+$/, "$label: the lock is held ($lease lease)");
	my $queued_at = sql('SELECT clock_timestamp()');
	start_wait($w1,
		"SELECT 'tok=' || lockfence.acquire('$name', '@{[ival(30)]}', '$w1_timeout');");
	wait_waiters($name, 1, "$label: W1 is queued (timeout $w1_timeout)");
	start_wait($w2,
		"SELECT 'tok=' || lockfence.acquire('$name', '@{[ival(30)]}', '@{[ival(30)]}');");
	wait_waiters($name, 2, "$label: W2 is queued behind W1");

	freeze($w1pid, "$label: W1");
	ok(!has_output($w1), "$label: W1 was frozen while it still waited");
	my $deadline = sql(
		"SELECT '$queued_at'::timestamptz + interval '$w1_timeout'");
	return ($t0, $w1, $w1pid, $w2, $w2pid, $deadline);
}

# ---- A1: the holder keeps the lock while W1 is paused past its timeout ----
{
	my $label = 'A1 holder keeps it';
	my $st0 = stats();
	my ($t0, $w1, $w1pid, $w2, $w2pid, $dl) =
	  paused_first_waiter('pw:1', '1 h', ival(2), $label);

	# well past W1's deadline
	sql("SELECT pg_sleep_until('$dl'::timestamptz + interval '@{[ival(1.5)]}')");
	is(sql("SELECT token, waiters FROM lockfence.locks WHERE name = 'pw:1'"), "$t0|2",
		"$label: W1 is still in the queue while frozen (it cannot leave)");

	thaw($w1pid, $label);
	my $t_thaw = time();
	my ($kind, $what) = wait_outcome($w1);
	is($kind, 'err', "$label: W1 came back with an error, not a token")
	  or diag("W1: $kind $what");
	like($what, qr/ERROR:  55P03: could not obtain lock "pw:1"/,
		"$label: the error is 55P03");
	$fig{A1_thaw_to_error} = sprintf('%.3f', time() - $t_thaw);
	note("$label: W1 reported 55P03 $fig{A1_thaw_to_error} s after SIGCONT");

	my ($tok, $hpid, $nw) = split /\|/, lock_row('pw:1');
	is($tok, $t0, "$label: the holder keeps the lock");
	is($nw, 1, "$label: W1 left the queue, W2 still waits");
	isnt($hpid, $w1pid, "$label: W1 is not the holder");

	is(sql("SELECT lockfence.release('pw:1', $t0)"), 't',
		"$label: holder released");
	my ($t2) = wait_out($w2, qr/tok=(\d+)/, "$label: W2 got the lock");
	cmp_ok($t2, '>', $t0, "$label: with a larger token");
	is(lock_row('pw:1'), "$t2|$w2pid|0|0", "$label: W2 holds it, queue empty");
	is($w1->query("SELECT lockfence.try_acquire('pw:1', '1 s') IS NULL"),
		't', "$label: W1 cannot take it now");
	is(sql("SELECT lockfence.release('pw:1', $t2)"), 't',
		"$label: W2's lock released");
	stats_delta_is(
		$st0,
		{ grants => 2, releases => 2, waits => 2, wait_timeouts => 1 },
		$label);
	$_->quit for ($w1, $w2);
}

# ---- A2: the holder releases while W1 is paused past its timeout ----
{
	my $label = 'A2 released meanwhile';
	my $st0 = stats();
	my ($t0, $w1, $w1pid, $w2, $w2pid, $dl) =
	  paused_first_waiter('pw:2', '1 h', ival(2), $label);

	sql("SELECT pg_sleep_until('$dl'::timestamptz + interval '@{[ival(1)]}')");
	my $rel_at = sql('SELECT clock_timestamp()');
	is(sql("SELECT lockfence.release('pw:2', $t0)"), 't',
		"$label: holder released after W1's deadline, W1 still frozen");
	my $during = lock_row('pw:2');
	note("$label: lock while W1 is frozen (token|holder|waiters|pins): $during");
	$fig{A2_view_while_frozen} = $during;
	usleep(int(secs(0.3) * 1_000_000));

	thaw($w1pid, $label);
	my ($kind, $what) = wait_outcome($w1);
	note("$label: W1 after SIGCONT: $kind " . ($kind eq 'tok' ? $what : ''));
	$fig{A2_w1_outcome} = $kind;
	my $w1_token = $kind eq 'tok' ? $what : undef;
	{
		is($kind, 'err',
			"$label: W1, past its timeout, does not come back with the lock");
		like($kind eq 'err' ? $what : '',
			qr/55P03: could not obtain lock "pw:2"/,
			"$label: it gets 55P03");
		my ($hpid) = split /\|/, sql(
			"SELECT holder_pid FROM lockfence.locks WHERE name = 'pw:2'");
		isnt($hpid // '', $w1pid, "$label: W1 is not the holder");
	}
	if (defined $w1_token)
	{
		# the lock reached W1: it is its only holder, and its token works
		my ($tok, $hpid, $nw) = split /\|/, lock_row('pw:2');
		is("$tok|$hpid|$nw", "$w1_token|$w1pid|1",
			"$label: (as things are) W1 is the one holder, W2 still waits");
		my $d = secs_between("'$rel_at'::timestamptz",
			"(SELECT acquired_at FROM lockfence.locks WHERE name = 'pw:2')");
		cmp_ok($d, '>=', 0,
			"$label: (as things are) W1 was granted at the release, ${d}s after it, past its deadline"
		);
		is($w1->query("SELECT lockfence.release('pw:2', $w1_token)"),
			't', "$label: W1 gives it back");
	}
	my ($t2) = wait_out($w2, qr/tok=(\d+)/, "$label: W2 gets the lock");
	cmp_ok($t2, '>', $w1_token // $t0, "$label: with the largest token");
	is(lock_row('pw:2'), "$t2|$w2pid|0|0", "$label: W2 holds it, queue empty");
	is(sql("SELECT lockfence.release('pw:2', $t2)"), 't',
		"$label: W2's lock released");
	# the counters must tell what happened, whichever way it went
	stats_delta_is(
		$st0,
		defined $w1_token
		? { grants => 3, releases => 3, waits => 2, wait_timeouts => 0 }
		: { grants => 2, releases => 2, waits => 2, wait_timeouts => 1 },
		$label);
	$_->quit for ($w1, $w2);
}

# ---- A3: the holder's lease runs out while W1 is paused past its timeout ----
{
	my $label = 'A3 lease ran out meanwhile';
	my $st0 = stats();
	# W1's timeout (2.5 s) ends before the lease (4 s) does, and W1 is frozen
	# before either.  No session touches the lock until W1 is thawed; the
	# reclaimer frees the expired lease and, skipping W1, whose wait is
	# over, hands the lock to W2.
	my ($t0, $w1, $w1pid, $w2, $w2pid, $dl) =
	  paused_first_waiter('pw:3', ival(4), ival(2.5), $label);
	my $lease_end = sql(
		"SELECT expires_at FROM lockfence.locks WHERE name = 'pw:3'");
	cmp_ok(secs_between("'$dl'::timestamptz", "'$lease_end'::timestamptz"),
		'>', 0, "$label: W1's deadline comes before the end of the lease");

	sql("SELECT pg_sleep_until('$lease_end'::timestamptz + interval '@{[ival(1)]}')");
	is(sql("SELECT count(*) FROM lockfence.locks WHERE name = 'pw:3' AND token = $t0"),
		'0', "$label: the expired lease is no longer shown as held");
	is(sql("SELECT holder_pid FROM lockfence.locks WHERE name = 'pw:3'"),
		$w2pid, "$label: the reclaimer handed the lock to W2 while W1 was still frozen");

	thaw($w1pid, $label);
	my $thaw_at = sql('SELECT clock_timestamp()');
	my ($kind, $what) = wait_outcome($w1);
	note("$label: W1 after SIGCONT: $kind " . ($kind eq 'tok' ? $what : ''));
	$fig{A3_w1_outcome} = $kind;
	my $w1_token = $kind eq 'tok' ? $what : undef;
	{
		is($kind, 'err',
			"$label: W1, past its timeout, does not come back with the lock");
		like($kind eq 'err' ? $what : '',
			qr/55P03: could not obtain lock "pw:3"/,
			"$label: it gets 55P03");
	}
	if (defined $w1_token)
	{
		my ($tok, $hpid, $nw) = split /\|/, lock_row('pw:3');
		is("$tok|$hpid|$nw", "$w1_token|$w1pid|1",
			"$label: (as things are) W1 is the one holder, W2 still waits");
		is($w1->query("SELECT lockfence.release('pw:3', $w1_token)"),
			't', "$label: W1 gives it back");
	}
	my ($t2, $at) = wait_out($w2, qr/tok=(\d+)/,
		"$label: W2 gets the lock (it was second, sleeping on its own 30 s timer)");
	my $d = secs_between("'$thaw_at'::timestamptz",
		"(SELECT acquired_at FROM lockfence.locks WHERE name = 'pw:3')");
	cmp_ok($d, '<', secs(3), "$label: W2 was granted promptly after W1 woke (${d}s)");
	$fig{A3_w2_after_thaw} = $d;
	cmp_ok($t2, '>', $w1_token // $t0, "$label: with the largest token");
	is(lock_row('pw:3'), "$t2|$w2pid|0|0", "$label: W2 holds it, queue empty");
	is(sql("SELECT lockfence.release('pw:3', $t2)"), 't',
		"$label: W2's lock released");
	stats_delta_is(
		$st0,
		{
			grants => defined $w1_token ? 3 : 2,
			releases => defined $w1_token ? 2 : 1,
			expiries => 1,
			waits => 2,
			wait_timeouts => defined $w1_token ? 0 : 1
		},
		$label);
	$_->quit for ($w1, $w2);
}

########################################################################
# Part B: a paused holder loses its lease
########################################################################

# H takes account:$id for 1 s and is frozen; W, queued before, takes the
# lock at the end of the lease and writes.  $before_freeze runs in H first.
# Returns (H, hpid, W, ta, tb).
sub paused_holder
{
	my ($id, $label, $before_freeze) = @_;
	my ($h, $hpid) = session(on_error_stop => 0);
	my ($w, $wpid) = session();

	my $ta = $h->query_safe("SELECT lockfence.acquire('account:$id', '@{[ival(1)]}')");
	my $end_a = sql(
		"SELECT expires_at FROM lockfence.locks WHERE name = 'account:$id' AND token = $ta");
	isnt($end_a, '', "$label: H took account:$id for 1 s");
	$before_freeze->($h) if $before_freeze;
	start_wait(
		$w, qq{
SELECT 'tok=' || lockfence.acquire('account:$id', '@{[ival(30)]}', '@{[ival(20)]}')
       || ' at=' || clock_timestamp();
});
	wait_waiters("account:$id", 1, "$label: W is queued");
	freeze($hpid, "$label: H");

	my ($tb, $got_at) = wait_out($w, qr/tok=(\d+) at=(.*)\n/,
		"$label: W got the lock while H was frozen");
	cmp_ok($tb, '>', $ta, "$label: with a larger token");
	my $d = secs_between("'$end_a'::timestamptz", "'$got_at'::timestamptz");
	cmp_ok($d, '>=', 0, "$label: at or after the end of H's lease (${d}s)");
	cmp_ok($d, '<', secs(3), "$label: and promptly");
	$fig{"B_${id}_takeover_after_lease_end"} = $d;
	is(lock_row("account:$id"), "$tb|$wpid|0|0", "$label: W holds the lock");
	$w->query_safe(
		"UPDATE accounts SET balance = 900, fence_token = $tb WHERE id = $id");
	is(proc_state($hpid), 'T', "$label: H was stopped all along");
	return ($h, $hpid, $w, $ta, $tb);
}

# ---- B1: H wakes and writes with its old token ----
{
	my $label = 'B1 late write';
	my $st0 = stats();
	my ($h, $hpid, $w, $ta, $tb) = paused_holder(1, $label);
	thaw($hpid, $label);

	my $err = failing($h,
		"UPDATE accounts SET balance = 0, fence_token = $ta WHERE id = 1");
	like($err,
		qr/ERROR:  LF001: stale fence token for lock "account:1" in relation "accounts"/,
		"$label: H's write is rejected with LF001");
	like($err,
		qr/DETAIL:  Token $ta does not hold the lock; the current holder's token is $tb\./,
		"$label: naming both tokens");
	is($h->query("SELECT lockfence.is_held('account:1', $ta)"),
		'f', "$label: H's token does not hold the lock");
	is($h->query("SELECT lockfence.renew('account:1', $ta, '10 s')"),
		'f', "$label: H cannot renew");
	is($h->query("SELECT lockfence.release('account:1', $ta)"),
		'f', "$label: H cannot release W's lock");
	is(balance(1), "900|$tb", "$label: the row keeps W's write");
	is(sql("SELECT token, waiters, pins FROM lockfence.locks WHERE name = 'account:1'"), "$tb|0|0",
		"$label: W still holds the lock, nothing pinned");
	is($w->query_safe("SELECT lockfence.release('account:1', $tb)"),
		't', "$label: W released");
	stats_delta_is(
		$st0,
		{
			grants => 2,
			releases => 1,
			expiries => 1,
			renewals => 0,
			waits => 1,
			fence_rejections_lease => 1,
			fence_rejections_monotonic => 0
		},
		$label);
	$_->quit for ($h, $w);
}

# ---- B2: H was frozen in the middle of a read-modify-write ----
{
	my $label = 'B2 read-modify-write';
	my $st0 = stats();
	my $read;
	my ($h, $hpid, $w, $ta, $tb) = paused_holder(
		2, $label,
		sub {
			my ($h) = @_;
			$h->query_safe('BEGIN');
			$read = $h->query_safe('SELECT balance FROM accounts WHERE id = 2');
		});
	is($read, '1000', "$label: H read the balance before it was frozen");
	thaw($hpid, $label);

	# H's lost update: its balance from before W's write, minus 100
	my $err = failing($h,
		"UPDATE accounts SET balance = $read - 100, fence_token = $ta WHERE id = 2");
	like($err, qr/LF001: stale fence token for lock "account:2"/,
		"$label: H's update inside its open transaction is rejected");
	$h->query('ROLLBACK');
	is(balance(2), "900|$tb", "$label: no lost update: W's write stays");
	is($w->query_safe("SELECT lockfence.release('account:2', $tb)"),
		't', "$label: W released");
	stats_delta_is($st0, { grants => 2, fence_rejections_lease => 1 },
		$label);
	$_->quit for ($h, $w);
}

# ---- B3: nobody took the lock; the lease is lost all the same ----
{
	my $label = 'B3 nobody took over';
	my ($h, $hpid) = session(on_error_stop => 0);
	my $ta = $h->query_safe("SELECT lockfence.acquire('account:3', '@{[ival(1)]}')");
	my $st0 = stats();
	freeze($hpid, $label);
	sql(qq{SELECT pg_sleep_until(expires_at + interval '@{[ival(0.5)]}')
	      FROM lockfence.locks WHERE name = 'account:3'});
	thaw($hpid, $label);
	my $err = failing($h,
		"UPDATE accounts SET balance = 0, fence_token = $ta WHERE id = 3");
	like($err,
		qr/LF001: stale fence token for lock "account:3".*\n.*DETAIL:  Token $ta does not hold the lock; the lock is not held\./,
		"$label: H's write is rejected, the detail says the lock is free");
	is(balance(3), '1000|', "$label: the row is unchanged");
	is(sql("SELECT count(*) FROM lockfence.locks WHERE name = 'account:3'"),
		'0', "$label: the lock is free");
	# the reclaimer (or, had it been behind, the rejected write) freed the
	# expired entry, once
	stats_delta_is($st0,
		{ expiries => 1, fence_rejections_lease => 1, grants => 0 }, $label);
	$h->quit;
}

diag('figures: ' . join(', ', map { "$_=$fig{$_}" } sort keys %fig));

is(sql('SELECT count(*) FROM lockfence.locks'), '0', 'no lock is left held');
$node->stop;
done_testing();
