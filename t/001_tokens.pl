
# Fence tokens must strictly increase for the whole life of the data
# directory: across clean restarts, crash-restarts of the postmaster after a
# backend dies, immediate shutdowns, and a SIGKILL of the postmaster itself.
# Locks (held in shared memory) must be gone after each of these.

use strict;
use warnings;

use List::Util qw(max min);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

# restart_after_crash: keep the crash-restart cases about the postmaster's
# own behaviour
my $node = start_preloaded_node('tokens', "restart_after_crash = on\n");
$node->safe_psql('postgres', 'CREATE EXTENSION lockfence');
set_node($node);

# Every token handed out so far, in the order it was handed out.
my @all_tokens;

# Take tokens through every way of taking a lock, in separate statements so
# that their order is the grant order.  Two of them are plain leases of an
# hour that stay held after the session ends.  Returns the tokens.
sub take_tokens
{
	my ($label) = @_;

	my $out = $node->safe_psql(
		'postgres', q{
SELECT lockfence.acquire('held-a', '1h', '5s');
SELECT lockfence.try_acquire('held-b', '1h');
SELECT lockfence.try_acquire_session('tmp-s', '1h');
SELECT lockfence.acquire_xact('tmp-x', '5s');
SELECT lockfence.try_acquire_xact('tmp-y');
SELECT lockfence.acquire('tmp-r', '1h', '5s') AS t \gset
SELECT lockfence.release('tmp-r', :t);
SELECT lockfence.acquire('tmp-r', '1h', '5s') AS t \gset
SELECT :t;
SELECT lockfence.release('tmp-r', :t);
});
	my @lines = split /\n/, $out;
	# acquire x2, try_acquire x2, xact x2, then the two 'tmp-r' grants
	# (release results are 't')
	my @tokens = grep { /^\d+$/ } @lines;
	is(scalar(@tokens), 6, "$label: six tokens handed out")
	  or diag("output: $out");
	is(scalar(grep { $_ eq 't' } @lines), 2, "$label: both releases succeeded");

	my $ok = 1;
	for my $i (1 .. $#tokens)
	{
		$ok = 0 unless $tokens[$i] > $tokens[ $i - 1 ];
	}
	ok($ok, "$label: tokens strictly increase in grant order")
	  or diag("tokens: @tokens");
	cmp_ok($tokens[0], '>', 0, "$label: tokens are positive");
	if (@all_tokens)
	{
		my $prev = max(@all_tokens);
		cmp_ok($tokens[0], '>', $prev,
			"$label: first token exceeds every earlier token ($prev)");
	}
	push @all_tokens, @tokens;

	# the two plain leases are held, the rest were released
	is( $node->safe_psql(
			'postgres',
			"SELECT string_agg(name, ',' ORDER BY name) FROM lockfence.locks"),
		'held-a,held-b',
		"$label: only the two plain leases are held");
	return @tokens;
}

# After a restart of any kind nothing may be held, and the names are free.
sub check_locks_gone
{
	my ($label) = @_;

	is($node->safe_psql('postgres', 'SELECT count(*) FROM lockfence.locks'),
		'0', "$label: lock table is empty after the restart");
	my @t = split /\|/, $node->safe_psql(
		'postgres', q{
SELECT lockfence.try_acquire('held-a', '1s'),
       lockfence.try_acquire('held-b', '1s'),
       lockfence.try_acquire('held-s', '1s'),
       lockfence.try_acquire('held-x', '1s')});
	is(scalar(grep { defined $_ && /^\d+$/ } @t),
		4, "$label: locks held before the restart can be taken again")
	  or diag("tokens: @t");
	# those grants count for monotonicity too
	my $prev = max(@all_tokens);
	cmp_ok(min(map { /^\d+$/ ? $_ : 0 } @t), '>', $prev,
		"$label: tokens of the first grants exceed every earlier token");
	push @all_tokens, grep { /^\d+$/ } @t;
	# give the names back for the next round
	$node->safe_psql('postgres',
		"SELECT lockfence.force_release(n) FROM unnest('{held-a,held-b,held-s,held-x}'::text[]) n"
	);
	return;
}

# Background session holding a session-bound lease and a transaction lock
# in an open transaction; returns (session, backend pid).
sub start_holder
{
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	my $tok = $s->query_safe(
		"SELECT lockfence.acquire_session('held-s', '1h', '5s')");
	$s->query_safe('BEGIN');
	my $xtok = $s->query_safe("SELECT lockfence.acquire_xact('held-x', '5s')");
	cmp_ok($tok, '>', max(@all_tokens), 'holder session token is new');
	cmp_ok($xtok, '>', $tok, 'holder transaction token is newer still');
	push @all_tokens, $tok, $xtok;
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM lockfence.locks WHERE holder_pid = $pid"),
		'2',
		'holder session holds its session-bound and transaction locks');
	return ($s, $pid);
}

my $state_file = $node->data_dir . '/lockfence.fence_state';

# ---- first run ----
take_tokens('initial start');
ok(-f $state_file, 'fence state file exists after the first grant');

# ---- (a) clean restart ----
$node->restart;
check_locks_gone('clean restart');
take_tokens('after clean restart');

# ---- (b) crash-restart: SIGKILL of a backend ----
{
	my ($s, $pid) = start_holder();
	my $log_offset = -s $node->logfile;

	ok(kill('KILL', $pid), "sent SIGKILL to backend $pid");
	$node->wait_for_log(qr/all server processes terminated; reinitializing/,
		$log_offset);
	ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
		'server accepts connections again after the crash-restart');
	# psql does not notice until it is used; \q just ends it
	$s->quit;

	check_locks_gone('crash-restart');
	take_tokens('after crash-restart');
}

# ---- (c) immediate shutdown ----
{
	my ($s, $pid) = start_holder();
	$node->stop('immediate');
	$s->quit;
	$node->start;
	check_locks_gone('immediate shutdown');
	take_tokens('after immediate shutdown');
}

# ---- (d) SIGKILL of the postmaster ----
{
	my ($s, $pid) = start_holder();
	# the orphaned children notice the postmaster's death and exit
	my $pm_pid = kill_postmaster(
		sub {
			my @children = @_;
			ok(scalar(grep { $_ == $pid } @children),
				'the holder backend is a child of the postmaster');
		});
	$s->quit;

	ok(-f $node->data_dir . '/postmaster.pid',
		'the killed postmaster left its pid file behind');
	$node->start;
	isnt($node->{_pid}, $pm_pid, 'a new postmaster runs');
	check_locks_gone('postmaster SIGKILL');
	take_tokens('after postmaster SIGKILL');
}

# ---- and once more a plain restart after all that ----
$node->restart;
check_locks_gone('final restart');
take_tokens('after final restart');

$node->stop;
done_testing();
