
# Session-bound leases and transaction locks end with their backend (when
# the client disconnects or the backend is terminated), so another session
# can take them at once.  Plain leases belong to their token, not to the
# backend: they survive its exit and can be released from elsewhere.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('scoped');
$node->safe_psql('postgres', 'CREATE EXTENSION lockfence');

set_node($node);

# The lockfence.locks row of a lock, as "token|holder_pid|session_bound|
# expires_at is null|waiters", or '' when it is not held.
sub lock_row
{
	return lock_columns($_[0],
		'token, holder_pid, session_bound, expires_at IS NULL, waiters');
}

# Wait until the backend has left pg_stat_activity.  Its before_shmem_exit
# callbacks (where lockfence releases) have run by then.
sub wait_backend_gone
{
	my ($pid, $label) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid"),
		"$label: backend $pid has exited");
}

sub terminate
{
	my ($pid) = @_;
	is(sql("SELECT pg_terminate_backend($pid)"), 't',
		"pg_terminate_backend($pid)");
}

# ---- session-bound lease, client disconnects ----
{
	my ($s, $pid) = session();
	my $tok = $s->query_safe(
		"SELECT lockfence.acquire_session('sb-quit', '1h')");
	like($tok, qr/^\d+$/, 'session-bound lease taken');
	is(lock_row('sb-quit'), "$tok|$pid|t|f|0",
		'view shows the session-bound lease and its holder');
	is(sql("SELECT lockfence.try_acquire('sb-quit', '1h') IS NULL"),
		't', 'another session cannot take it while it is held');

	$s->quit;
	wait_backend_gone($pid, 'sb-quit');
	is(lock_row('sb-quit'), '',
		'session-bound lease is gone once its backend has exited');
	is(sql("SELECT lockfence.is_held('sb-quit', $tok)"),
		'f', 'old token no longer holds the lock');
	my $tok2 = sql("SELECT lockfence.try_acquire('sb-quit', '1h')");
	like($tok2, qr/^\d+$/, 'another session takes it at once');
	cmp_ok($tok2, '>', $tok, 'with a greater token');
}

# ---- session-bound lease, backend terminated, with a waiter ----
{
	my ($s, $pid) = session();
	my $tok = $s->query_safe(
		"SELECT lockfence.acquire_session('sb-term', '1h')");
	is(lock_row('sb-term'), "$tok|$pid|t|f|0", 'session-bound lease held');

	# A waiter that would wait for up to 60 s (the lease is an hour).
	my ($w, $wpid) = session();
	start_wait($w,
		"SELECT 'tok=' || lockfence.acquire('sb-term', '1h', '60s');");
	wait_waiters('sb-term', 1, 'waiter is queued');

	terminate($pid);
	$s->quit;
	wait_backend_gone($pid, 'sb-term');

	my ($wtok) = wait_out($w, qr/tok=(\d+)/,
		'waiter got the lock when the holder was terminated');
	cmp_ok($wtok, '>', $tok, 'waiter token exceeds the dead holder token');
	is(lock_row('sb-term'), "$wtok|$wpid|f|f|0",
		'view shows the waiter as the new holder');
	$w->quit;
}

# ---- transaction lock, client disconnects inside the transaction ----
{
	my ($s, $pid) = session();
	$s->query_safe('BEGIN');
	my $tok = $s->query_safe("SELECT lockfence.acquire_xact('x-quit')");
	is(lock_row('x-quit'), "$tok|$pid|f|t|0",
		'transaction lock held, without expiry');
	is(sql("SELECT lockfence.try_acquire_xact('x-quit') IS NULL"),
		't', 'another session cannot take it');

	$s->quit;
	wait_backend_gone($pid, 'x-quit');
	is(lock_row('x-quit'), '', 'transaction lock is gone with its backend');
	my $tok2 = sql("SELECT lockfence.try_acquire('x-quit', '1h')");
	like($tok2, qr/^\d+$/, 'another session takes it at once');
	cmp_ok($tok2, '>', $tok, 'with a greater token');
}

# ---- transaction lock, backend terminated inside the transaction ----
{
	my ($s, $pid) = session();
	$s->query_safe('BEGIN');
	my $tok = $s->query_safe("SELECT lockfence.try_acquire_xact('x-term')");
	is(lock_row('x-term'), "$tok|$pid|f|t|0", 'transaction lock held');

	terminate($pid);
	$s->quit;
	wait_backend_gone($pid, 'x-term');
	is(lock_row('x-term'), '', 'transaction lock is gone after terminate');
	is( sql(
			"BEGIN; SELECT lockfence.try_acquire_xact('x-term') > $tok; COMMIT"),
		't',
		'another transaction takes it at once, with a greater token');
	is(lock_row('x-term'), '', 'and that one released it at its commit');
}

# ---- transaction locks end with the transaction, not the session ----
{
	my ($s, $pid) = session();
	$s->query_safe('BEGIN');
	my $tok = $s->query_safe("SELECT lockfence.acquire_xact('x-end')");
	is(sql("SELECT lockfence.try_acquire('x-end', '1h') IS NULL"),
		't', 'transaction lock held inside the transaction');
	$s->query_safe('COMMIT');
	is(lock_row('x-end'), '', 'released at COMMIT');

	$s->query_safe('BEGIN');
	$tok = $s->query_safe("SELECT lockfence.acquire_xact('x-end')");
	is(lock_row('x-end'), "$tok|$pid|f|t|0", 'taken again');
	$s->query_safe('ROLLBACK');
	is(lock_row('x-end'), '', 'released at ROLLBACK');

	# a session-bound lease in the same session is not touched by COMMIT
	$tok = $s->query_safe(
		"SELECT lockfence.acquire_session('x-end-sb', '1h')");
	$s->query_safe('BEGIN; SELECT 1; COMMIT');
	is(lock_row('x-end-sb'), "$tok|$pid|t|f|0",
		'session-bound lease survives the end of a transaction');

	# Released elsewhere by its token, then taken by somebody else: the
	# exit of the first backend must not release the new holder.
	is(sql("SELECT lockfence.release('x-end-sb', $tok)"),
		't', 'session-bound lease released from another connection');
	my $tok2 = sql("SELECT lockfence.try_acquire('x-end-sb', '1h')");
	like($tok2, qr/^\d+$/, 'and taken by another connection');

	# the same for a transaction lock force-released meanwhile
	$s->query_safe('BEGIN');
	my $xtok = $s->query_safe("SELECT lockfence.acquire_xact('x-force')");
	is(sql("SELECT lockfence.force_release('x-force')"),
		't', 'transaction lock force-released');
	my $xtok2 = sql("SELECT lockfence.try_acquire('x-force', '1h')");
	like($xtok2, qr/^\d+$/, 'and taken by another connection');
	$s->query_safe('COMMIT');
	is(sql("SELECT lockfence.is_held('x-force', $xtok2)"),
		't', 'end of the first transaction leaves the new holder alone');

	$s->quit;
	wait_backend_gone($pid, 'x-end');
	is(sql("SELECT lockfence.is_held('x-end-sb', $tok2)"),
		't', 'exit of the first backend leaves the new holder alone');
	sql("SELECT lockfence.release('x-end-sb', $tok2), lockfence.release('x-force', $xtok2)");
}

# ---- plain leases survive their backend ----
for my $how ('quit', 'terminate')
{
	my $name = "plain-$how";
	my ($s, $pid) = session();
	my $tok = $s->query_safe("SELECT lockfence.acquire('$name', '1h')");
	is(lock_row($name), "$tok|$pid|f|f|0", "$name: plain lease held");

	terminate($pid) if $how eq 'terminate';
	$s->quit;
	wait_backend_gone($pid, $name);

	is(lock_row($name), "$tok|$pid|f|f|0",
		"$name: lease is still held after its backend exited");
	is(sql("SELECT lockfence.is_held('$name', $tok)"),
		't', "$name: token still holds it");
	is(sql("SELECT lockfence.try_acquire('$name', '1h') IS NULL"),
		't', "$name: others cannot take it");
	my $wrong = $tok - 1;
	is(sql("SELECT lockfence.release('$name', $wrong)"),
		'f', "$name: release with a wrong token fails");
	is(sql("SELECT lockfence.renew('$name', $tok, '2h')"),
		't', "$name: renew with its token from another connection works");
	is(sql("SELECT lockfence.release('$name', $tok)"),
		't', "$name: release with its token from another connection works");
	is(lock_row($name), '', "$name: not held any more");
	is(sql("SELECT lockfence.release('$name', $tok)"),
		'f', "$name: releasing twice fails");
	my $tok2 = sql("SELECT lockfence.try_acquire('$name', '1h')");
	like($tok2, qr/^\d+$/, "$name: can be taken again");
	cmp_ok($tok2, '>', $tok, "$name: with a greater token");
}

$node->stop;
done_testing();
