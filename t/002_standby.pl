
# A streaming standby grants no locks.  Once promoted it runs on a new
# timeline, so its tokens exceed every token of the old primary, even
# though its copy of the fence state file is older than the primary's.

use strict;
use warnings;

use List::Util qw(max min);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf',
	"shared_preload_libraries = 'lockfence'");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION lockfence');

my @primary_tokens;

# Take $n tokens on $node (distinct names, released again) and check that
# they increase; returns them.
sub take_tokens
{
	my ($node, $prefix, $n, $label) = @_;
	my @t;
	for my $i (1 .. $n)
	{
		push @t,
		  $node->safe_psql('postgres',
			"SELECT lockfence.acquire('$prefix-$i', '1h', '5s')");
		$node->safe_psql('postgres',
			"SELECT lockfence.release('$prefix-$i', $t[-1])");
	}
	is(scalar(grep { /^\d+$/ } @t), $n, "$label: $n tokens");
	my $inc = 1;
	for my $i (1 .. $#t) { $inc = 0 unless $t[$i] > $t[ $i - 1 ]; }
	ok($inc, "$label: tokens increase") or diag("tokens: @t");
	return @t;
}

# The high-water mark in a data directory's fence state file.  Used only to
# check that the scenario below really leaves the standby with an older file.
sub state_high_water
{
	my ($node) = @_;
	my $f = $node->data_dir . '/lockfence.fence_state';
	open(my $fh, '<:raw', $f) or die "could not open $f: $!";
	local $/;
	my $data = <$fh>;
	close($fh);
	my ($magic, $version, $hw) = unpack('V V Q<', $data);
	return $hw;
}

# Run $sql on $node, expect an error; returns stderr (with SQLSTATE).
sub psql_error
{
	my ($node, $sql) = @_;
	my ($stdout, $stderr);
	my $rc = $node->psql(
		'postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$stdout,
		stderr => \$stderr);
	isnt($rc, 0, "fails: $sql");
	return $stderr;
}

# ---- tokens on the primary, before and after the base backup ----
push @primary_tokens, take_tokens($primary, 'pre', 3, 'primary before backup');
my $held = $primary->safe_psql('postgres',
	"SELECT lockfence.acquire('held-p', '1h')");
push @primary_tokens, $held;

$primary->backup('bk');

my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bk', has_streaming => 1);
$standby->append_conf('postgresql.conf',
	"shared_preload_libraries = 'lockfence'");
$standby->start;

# More tokens on the primary after the backup, across a restart (so that the
# primary reserves a new block and its state file moves past the copy).
push @primary_tokens, take_tokens($primary, 'post', 3, 'primary after backup');
$primary->restart;
push @primary_tokens, take_tokens($primary, 'post2', 3, 'primary after restart');
cmp_ok(min(@primary_tokens[-3 .. -1]), '>', max(@primary_tokens[0 .. $#primary_tokens - 3]),
	'primary tokens after its restart exceed the earlier ones');
$primary->wait_for_catchup($standby);

# The scenario is meaningful only if the standby's copy of the state file
# is behind the tokens the primary handed out.
my $standby_hw = state_high_water($standby);
cmp_ok($standby_hw, '<', state_high_water($primary),
	'standby state file is older than the primary\'s');
cmp_ok($standby_hw, '<=', max(@primary_tokens),
	'primary handed out tokens beyond the standby state file high-water mark');

# ---- the standby refuses ----
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	't', 'standby is in recovery');
is( $standby->safe_psql(
		'postgres',
		"SELECT extversion FROM pg_extension WHERE extname = 'lockfence'"),
	default_version(),
	'extension is replicated to the standby');

like(
	psql_error($standby, "SELECT lockfence.acquire('s1', '1h', '1s')"),
	qr/ERROR:  25006: cannot grant lockfence locks during recovery/,
	'standby: acquire fails with 25006');
like(psql_error($standby, "SELECT lockfence.try_acquire('s1', '1h')"),
	qr/25006/, 'standby: try_acquire fails with 25006');
like(psql_error($standby, "SELECT lockfence.acquire_xact('s1', '1s')"),
	qr/25006/, 'standby: acquire_xact fails with 25006');
like(psql_error($standby, "SELECT lockfence.try_acquire_xact('s1')"),
	qr/25006/, 'standby: try_acquire_xact fails with 25006');
like(psql_error($standby, "SELECT lockfence.acquire_session('held-p', '1h', '1s')"),
	qr/25006/, 'standby: acquire of a name held on the primary fails with 25006');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM lockfence.locks'),
	'0', 'standby: lock table is empty');

# a session opened before the promotion, which tries and fails now
my $early = $standby->background_psql('postgres', on_error_stop => 0);
$early->query_safe('\set VERBOSITY verbose');
$early->query("SELECT lockfence.acquire('early', '1h', '1s')");
like($early->{stderr}, qr/25006/, 'standby: early session is refused too');
$early->{stderr} = '';

# ---- the primary dies, the standby is promoted ----
$primary->stop('immediate');
$standby->promote;
ok($standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
	'standby promoted');

my $max_primary = max(@primary_tokens);
my $t_early = $early->query("SELECT lockfence.acquire('early', '1h', '5s')");
like($t_early, qr/^\d+$/, 'promoted: session opened before promotion gets a token');
is($early->{stderr}, '', 'promoted: without an error');
cmp_ok($t_early, '>', $max_primary,
	'promoted: its token exceeds every token of the old primary');
$early->quit;

my @promoted = take_tokens($standby, 'prom', 3, 'promoted');
cmp_ok(min(@promoted), '>', $t_early, 'promoted: later tokens are greater still');

my $held_new = $standby->safe_psql('postgres',
	"SELECT lockfence.try_acquire('held-p', '1h')");
like($held_new, qr/^\d+$/,
	'promoted: a lock held on the old primary is free on the new one');
cmp_ok($held_new, '>', $held, 'promoted: with a greater token');
push @promoted, $t_early, $held_new;

# the timeline is part of the token
$standby->safe_psql('postgres', 'CHECKPOINT');
my $tli = $standby->safe_psql('postgres',
	'SELECT timeline_id FROM pg_control_checkpoint()');
cmp_ok($tli, '>', 1, 'promoted: on a new timeline');
is($standby->safe_psql('postgres', "SELECT $held_new >> 48"),
	$tli - 1, 'promoted: token carries the new timeline');

# ---- and tokens keep increasing across a restart of the new primary ----
$standby->restart;
is($standby->safe_psql('postgres', 'SELECT count(*) FROM lockfence.locks'),
	'0', 'promoted restart: lock table is empty');
my @after = take_tokens($standby, 'prom2', 3, 'promoted after restart');
cmp_ok(min(@after), '>', max(@promoted),
	'promoted after restart: tokens exceed all earlier ones');

# ---- a resurrected old primary stays below the new primary ----
# (split brain: the old primary is started again on its old timeline; its
# tokens must not pass a fence set by the new primary)
$primary->start;
my $zombie = $primary->safe_psql('postgres',
	"SELECT lockfence.acquire('zombie', '1h', '5s')");
cmp_ok($zombie, '>', $max_primary,
	'old primary restarted: its tokens still increase');
cmp_ok($zombie, '<', min(@promoted),
	'old primary restarted: its tokens stay below the promoted node\'s');

$primary->stop;
$standby->stop;
done_testing();
