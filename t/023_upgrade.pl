
# Fence tokens keep increasing when a database moves to a new cluster:
# pg_upgrade, and pg_dump with a restore into a new cluster or into one
# that already grants tokens.  After the move the first token exceeds every
# token of the old cluster, and fenced writes with new tokens succeed while
# writes with old ones are still refused.  When LF_UPGRADE_FROM names the
# installation directory of an older major version with lockfence
# installed (tools/test_versions.sh sets it), the upgrade also runs from
# that version to the one under test.

use strict;
use warnings;

use Cwd;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $BAND = 2**48;

# A cluster with lockfence preloaded, from $install_path if given.
sub new_node
{
	my ($name, $install_path) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name,
		defined $install_path ? (install_path => $install_path) : ());
	# with checksums: 18 has them by default, and pg_upgrade needs the same
	$node->init(extra => ['--data-checksums']);
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'lockfence'\n");
	return $node;
}

# Databases of the old cluster, each with lockfence and two fenced tables:
#   app		tokens from one restart on (above 2^24: the restart skips a block)
#   banded	tokens in band 6, as after five promotions or moves
#   idle	lockfence installed, never granted a token
# Leaves leases held.  Returns the largest token each database handed out.
sub populate
{
	my ($old) = @_;
	my %max;

	for my $db (qw(app banded idle))
	{
		$old->safe_psql('postgres', "CREATE DATABASE $db");
		$old->safe_psql(
			$db, q{
CREATE EXTENSION lockfence;
CREATE TABLE account (id int PRIMARY KEY, balance int, token bigint);
CREATE TRIGGER fence BEFORE INSERT OR UPDATE ON account
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('token');
CREATE TABLE seat (id int PRIMARY KEY, holder text, token bigint);
CREATE TRIGGER fence BEFORE INSERT OR UPDATE ON seat
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('token', 'seat:', 'id');
});
	}
	$old->safe_psql('banded',
		"SELECT lockfence.advance_tokens(5 * (2::bigint ^ 48)::bigint)");

	for my $db (qw(app banded))
	{
		$old->safe_psql($db,
			"INSERT INTO account VALUES (1, 100, lockfence.try_acquire('account', '1h'))");
	}
	$old->restart;
	for my $db (qw(app banded))
	{
		my $out = $old->safe_psql(
			$db, q{
SELECT lockfence.acquire('account', '1h', '1s');
UPDATE account SET balance = 90,
    token = (SELECT token FROM lockfence.locks WHERE name = 'account');
BEGIN;
SELECT lockfence.acquire_xact('seat:1');
INSERT INTO seat VALUES (1, 'old', (SELECT token FROM lockfence.locks WHERE name = 'seat:1'));
COMMIT;
SELECT lockfence.acquire('held', '1h');
SELECT max(token) FROM (SELECT token FROM account UNION ALL SELECT token FROM seat
                        UNION ALL SELECT token FROM lockfence.locks) AS t;
});
		my @lines = split /\n/, $out;
		$max{$db} = $lines[-1];
	}
	cmp_ok($max{app}, '>', 2**24,
		'old cluster: tokens of database app are far above 1 (a restart skipped a block)');
	cmp_ok($max{banded}, '>', 6 * $BAND,
		'old cluster: tokens of database banded are in band 6');
	return %max;
}

# What every moved database must show in the cluster $node.
sub check_moved
{
	my ($node, $label, %max) = @_;

	for my $db (qw(app banded))
	{
		my $first = $node->safe_psql($db, "SELECT lockfence.acquire('account', '1h')");
		cmp_ok($first, '>', $max{$db},
			"$label, $db: the first token exceeds every token of the old cluster");
		cmp_ok(int($first / $BAND), '>', int($max{$db} / $BAND),
			"$label, $db: and is in a higher band");
		is( $node->safe_psql(
				$db, "UPDATE account SET balance = 80, token = $first RETURNING balance"),
			'80',
			"$label, $db: a fenced write (monotonic) with the new token succeeds");

		my ($rc, $out, $err) = $node->psql($db,
			"UPDATE account SET balance = 1, token = $max{$db}",
			extra_params => [ '-v', 'VERBOSITY=verbose' ]);
		like($err, qr/LF001/,
			"$label, $db: a write with the old cluster's last token is refused");

		is( $node->safe_psql(
				$db, q{
BEGIN;
SELECT lockfence.acquire_xact('seat:1') AS t \gset
UPDATE seat SET holder = 'new', token = :t RETURNING holder;
COMMIT;
}), 'new', "$label, $db: a fenced write (lease mode) with a new token succeeds");

		my $second = $node->safe_psql($db, "SELECT lockfence.try_acquire('other', '1h')");
		cmp_ok($second, '>', $first, "$label, $db: later tokens keep increasing");
	}
	like($node->safe_psql('idle', "SELECT lockfence.try_acquire('x', '1h')"),
		qr/^\d+$/, "$label, idle: a database that never granted grants");
	is( $node->safe_psql(
			'app',
			"SELECT last_value::text = (SELECT system_identifier::text FROM pg_control_system())"
			  . " FROM lockfence.token_history_system"),
		't',
		"$label, app: the record names the new cluster");
	return;
}

# pg_upgrade from $old (stopped) to a new cluster of the version under test.
sub upgrade
{
	my ($old, $name) = @_;
	my $new = new_node($name);
	my $cwd = PostgreSQL::Test::Utils::tempdir;
	my $here = Cwd::getcwd();
	chdir $cwd or die "could not chdir to $cwd: $!";
	command_ok(
		[
			'pg_upgrade', '--no-sync',
			'-d', $old->data_dir,
			'-D', $new->data_dir,
			'-b', $old->config_data('--bindir'),
			'-B', $new->config_data('--bindir'),
			'-s', $new->host,
			'-p', $old->port,
			'-P', $new->port
		],
		"pg_upgrade $name");
	chdir $here;
	$new->start;
	return $new;
}

# ---- pg_upgrade within the version under test ----
my $old = new_node('old');
$old->start;
my %max = populate($old);
$old->stop;
my $upgraded = upgrade($old, 'upgraded');
check_moved($upgraded, 'after pg_upgrade', %max);

# ---- pg_dump and restore, into a new cluster and into a busy one ----
$old->start;
my $restored = new_node('restored');
$restored->start;
for my $db (qw(app banded idle))
{
	my $dump = PostgreSQL::Test::Utils::tempdir . "/$db.sql";
	command_ok(
		[ 'pg_dump', '-d', $old->connstr($db), '-f', $dump ],
		"pg_dump $db");
	for my $node ($restored, $upgraded)
	{
		my $target = $node == $upgraded ? "${db}_c" : $db;
		$node->safe_psql('postgres', "CREATE DATABASE $target");
		$node->command_ok(
			[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
			  $node->connstr($target), '-f', $dump ],
			"restore $db into $target");
	}
}
$old->stop;
check_moved($restored, 'after restore into a new cluster', %max);

# The busy cluster already grants far above 1 in its own databases; the
# copies must still start above the old cluster's tokens.
{
	my $t = $upgraded->safe_psql('app_c', "SELECT lockfence.acquire('account', '1h')");
	cmp_ok($t, '>', $max{app},
		'after restore into a cluster that grants: the first token exceeds the old cluster\'s');
	is($upgraded->safe_psql('app_c', "UPDATE account SET token = $t RETURNING balance"),
		'90', 'after restore into a cluster that grants: fenced write succeeds');
	my $b = $upgraded->safe_psql('banded_c', "SELECT lockfence.acquire('account', '1h')");
	cmp_ok($b, '>', $max{banded},
		'after restore into a cluster that grants: banded too');
}

# ---- a logical copy: no record; the trigger says so, advance_tokens fixes it ----
{
	my $node = $restored;
	$node->safe_psql('postgres', 'CREATE DATABASE logical');
	$node->safe_psql(
		'logical', q{
CREATE EXTENSION lockfence;
CREATE TABLE account (id int PRIMARY KEY, balance int, token bigint);
CREATE TRIGGER fence BEFORE INSERT OR UPDATE ON account
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('token');
});
	# rows as a subscriber receives them: the apply worker fires no triggers
	$node->safe_psql('logical',
		"SET session_replication_role = replica; INSERT INTO account VALUES (1, 100, $max{banded})");
	my $t = $node->safe_psql('logical', "SELECT lockfence.acquire('account', '1h')");
	cmp_ok($t, '<', $max{banded}, 'logical copy: without the record tokens are lower');
	my ($rc, $out, $err) = $node->psql('logical',
		"UPDATE account SET token = $t",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/LF001.*above every token this database grants/s,
		'logical copy: the refused write says why');
	like($err, qr/lockfence\.advance_tokens\($max{banded}\)/,
		'logical copy: and hints at advance_tokens with the row\'s token');

	my ($rc2, $o2, $e2) = $node->psql('logical',
		"SET ROLE pg_monitor; SELECT lockfence.advance_tokens(1)",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($e2, qr/42501/, 'advance_tokens: refused to a role that is not a superuser');

	my $bound = $node->safe_psql('logical', "SELECT lockfence.advance_tokens($max{banded})");
	cmp_ok($bound, '>', $max{banded}, 'advance_tokens returns a bound above its argument');
	my $t2 = $node->safe_psql('logical',
		"SELECT lockfence.acquire('account', '1h', '0') WHERE lockfence.force_release('account')");
	cmp_ok($t2, '>', $bound, 'logical copy: after advance_tokens, tokens exceed the bound');
	is($node->safe_psql('logical', "UPDATE account SET token = $t2 RETURNING balance"),
		'100', 'logical copy: and the fenced write succeeds');
}

# ---- pg_upgrade from an older major version ----
SKIP:
{
	my $from = $ENV{LF_UPGRADE_FROM};
	skip 'LF_UPGRADE_FROM is not set: no older major version to upgrade from', 1
	  unless $from;
	my $old2 = new_node('old_major', $from);
	$old2->start;
	my %max2 = populate($old2);
	$old2->stop;
	my $up2 = upgrade($old2, 'upgraded_major');
	check_moved($up2, "after pg_upgrade from $from", %max2);
}

done_testing();
