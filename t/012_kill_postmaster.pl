
# A SIGKILL of the postmaster, and an immediate shutdown, while grants are
# being handed out: after the restart every new token exceeds every token
# any client was given before (including the grants streaming at the moment
# of the kill), every lease is gone, a write pinned in an open transaction
# is lost with its transaction, and a stale token from before the kill is
# rejected by the fence-check trigger with LF001:
#   - monotonic mode: the row has been written with a newer token since;
#   - lease mode: the lock is free after the restart, and then held by a
#     newer token;
# and lockfence.pin/is_held/renew/release refuse it too.

use strict;
use warnings;

use IPC::Run;
use List::Util qw(max min);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('kill_pm');
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION lockfence;
CREATE TABLE mono (id int PRIMARY KEY, val text, fence_token bigint);
CREATE TRIGGER mono_fence BEFORE INSERT OR UPDATE ON mono
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token');
CREATE TABLE leased (id int PRIMARY KEY, val text, fence_token bigint);
CREATE TRIGGER leased_fence BEFORE INSERT OR UPDATE ON leased
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'res:', 'id');
});

set_node($node);

# Run SQL that must fail; returns its stderr (verbose, with the SQLSTATE).
sub sql_fails
{
	my ($stmt) = @_;
	my ($ret, $out, $err) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$stmt");
	return $ret != 0 ? $err : "no error; output: $out";
}

# Every token a client was ever given.
my @all_tokens;

# A psql that takes and releases lock 'stream' in a loop, one statement per
# grant, printing each token as soon as it has it.  Returns the IPC::Run
# handle and a reference to its output.
sub start_stream
{
	my $file = $node->basedir . "/stream_$_[0].sql";
	open(my $fh, '>', $file) or die "could not write $file: $!";
	print $fh
	  "SELECT t, lockfence.release('stream', t) FROM lockfence.acquire('stream', '1 h') t;\n"
	  for 1 .. 200_000;
	close($fh);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq', '-d',
			$node->connstr('postgres'), '-f', $file
		],
		'<', \undef, '>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}

# Wait until the stream has printed $n tokens.
sub stream_running
{
	my ($h, $out, $n, $label) = @_;
	my $t = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
	$t->start;
	while (($$out =~ tr/\n//) < $n && !$t->is_expired && $h->pumpable)
	{
		$h->pump_nb;
		usleep(5_000);
	}
	cmp_ok(($$out =~ tr/\n//), '>=', $n, "$label: grants are streaming");
	return;
}

# The stream dies with the server; returns the tokens it was given.
sub stream_tokens
{
	my ($h, $out, $err, $label) = @_;
	eval { $h->finish; };
	my @lines = split /\n/, $$out;
	my @tokens = map { /^(\d+)\|t$/ ? $1 : () } @lines;
	# at most one line, the last, may be cut short by the kill
	cmp_ok(scalar(@tokens), '>=', scalar(@lines) - 1,
		"$label: every output line of the stream is a token and a release");
	like($$err, qr/connection|terminat|server closed/i,
		"$label: the stream lost its connection");
	my $inc = 1;
	for my $i (1 .. $#tokens)
	{
		$inc = 0 unless $tokens[$i] > $tokens[ $i - 1 ];
	}
	ok($inc, "$label: the stream's tokens increase");
	return @tokens;
}

my %fig;

sub round
{
	my ($how) = @_;
	my $label = $how;

	# Before: a lock whose token wrote both tables, and one whose token
	# only wrote in a transaction that is open at the kill.
	my $t_old = sql("SELECT lockfence.acquire('res:1', '1 h')");
	my $t_old2 = sql("SELECT lockfence.acquire('res:2', '1 h')");
	sql("INSERT INTO leased VALUES (1, 'old', $t_old) ON CONFLICT (id) DO UPDATE SET val = 'old', fence_token = $t_old");
	sql("INSERT INTO mono VALUES (1, 'old', $t_old) ON CONFLICT (id) DO UPDATE SET val = 'old', fence_token = $t_old");
	sql("INSERT INTO leased VALUES (2, 'committed', $t_old2) ON CONFLICT (id) DO UPDATE SET val = 'committed', fence_token = $t_old2");
	push @all_tokens, $t_old, $t_old2;
	is(sql("SELECT count(*) FROM lockfence.locks WHERE name LIKE 'res:%'"), '2',
		"$label: two leases held");

	my $open = $node->background_psql('postgres', on_error_stop => 0);
	$open->query_safe('BEGIN');
	$open->query_safe(
		"UPDATE leased SET val = 'uncommitted', fence_token = $t_old2 WHERE id = 2");
	is(sql("SELECT pins FROM lockfence.locks WHERE name = 'res:2'"),
		'1', "$label: an open transaction pinned res:2 with an accepted write");

	my ($h, $out, $err) = start_stream($how =~ /kill/ ? 'kill' : 'imm');
	stream_running($h, $out, 300, $label);

	if ($how =~ /kill/)
	{
		kill_postmaster();
	}
	else
	{
		$node->stop('immediate');
	}
	my @streamed = stream_tokens($h, $out, $err, $label);
	push @all_tokens, @streamed;
	$fig{"$label: tokens streamed before the kill"} = scalar(@streamed);
	$open->quit;

	$node->start;
	my $max_old = max(@all_tokens);

	is(sql('SELECT count(*) FROM lockfence.locks'), '0',
		"$label: no lease survived");
	is(sql("SELECT val, fence_token FROM leased WHERE id = 2"),
		"committed|$t_old2",
		"$label: the pinned write of the open transaction is lost with it");
	is(sql('SELECT grants, fence_rejections_monotonic, fence_rejections_lease FROM lockfence.stats'),
		'0|0|0', "$label: counters start again from zero");

	# lease mode, lock free: the old token does not hold it
	my $e = sql_fails(
		"UPDATE leased SET val = 'stale', fence_token = $t_old WHERE id = 1");
	like($e,
		qr/LF001: stale fence token for lock "res:1" in relation "leased"\nDETAIL:  Token $t_old does not hold the lock; the lock is not held\./,
		"$label: lease mode, lock free: the stale token is rejected with LF001");
	$e = sql_fails("SELECT lockfence.pin('res:2', $t_old2)");
	like($e, qr/LF001: stale fence token for lock "res:2"/,
		"$label: pin() with a stale token fails with LF001");
	is(sql("SELECT lockfence.is_held('res:1', $t_old), lockfence.renew('res:1', $t_old, '1 h'),
	               lockfence.release('res:1', $t_old)"),
		'f|f|f', "$label: is_held, renew and release refuse the stale token");

	# new grants: all larger than anything given out before
	my $t_new = sql("SELECT lockfence.acquire('res:1', '1 h')");
	cmp_ok($t_new, '>', $max_old,
		"$label: the first token after the restart exceeds all " . scalar(@all_tokens) . " earlier ones");
	$fig{"$label: token jump"} = $t_new - $max_old;
	my @more = split /\n/, sql(
		"SELECT t FROM generate_series(1, 50) g, lockfence.try_acquire('more:' || g, '1 s') t");
	is(scalar(@more), 50, "$label: fifty more grants");
	cmp_ok(min(@more), '>', $t_new, "$label: and they are larger still");
	push @all_tokens, $t_new, @more;

	# monotonic mode: the row gets the newer token, the old one is refused
	sql("UPDATE mono SET val = 'new', fence_token = $t_new WHERE id = 1");
	$e = sql_fails("UPDATE mono SET val = 'stale', fence_token = $t_old WHERE id = 1");
	like($e,
		qr/LF001: stale fence token in column "fence_token" of relation "mono"\nDETAIL:  Token $t_old is older than the row's current token $t_new\./,
		"$label: monotonic mode: the stale token is rejected with LF001");
	is(sql("SELECT val, fence_token FROM mono WHERE id = 1"), "new|$t_new",
		"$label: monotonic mode: the row keeps the new write");

	# lease mode, lock held by the new token
	$e = sql_fails(
		"UPDATE leased SET val = 'stale', fence_token = $t_old WHERE id = 1");
	like($e,
		qr/LF001: stale fence token for lock "res:1" in relation "leased"\nDETAIL:  Token $t_old does not hold the lock; the current holder's token is $t_new\./,
		"$label: lease mode, lock taken again: the stale token is rejected with LF001");
	sql("UPDATE leased SET val = 'new', fence_token = $t_new WHERE id = 1");
	is(sql("SELECT val, fence_token FROM leased WHERE id = 1"), "new|$t_new",
		"$label: lease mode: the new holder writes");
	is(sql('SELECT fence_rejections_monotonic, fence_rejections_lease FROM lockfence.stats'),
		'1|3', "$label: the rejections are counted (1 monotonic, 3 lease)");

	sql("SELECT lockfence.release('res:1', $t_new)");
	return;
}

round('postmaster SIGKILL');
round('immediate shutdown');
# and the kill once more after the immediate shutdown
round('postmaster SIGKILL again');

diag(join(', ', map { "$_=$fig{$_}" } sort keys %fig));
$node->stop;
done_testing();
