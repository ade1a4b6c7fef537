# Without shared_preload_libraries, CREATE EXTENSION works and every function
# fails with SQLSTATE 55000 and a hint, and the server keeps running.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('not_preloaded');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION lockfence');
is($node->safe_psql('postgres',
		"SELECT extversion FROM pg_extension WHERE extname = 'lockfence'"),
	'0.1', 'CREATE EXTENSION works without the library preloaded');

my @calls = (
	"SELECT lockfence.acquire('a')",
	"SELECT lockfence.try_acquire('a')",
	"SELECT lockfence.acquire_xact('a')",
	"SELECT lockfence.try_acquire_xact('a')",
	"SELECT lockfence.release('a', 1)",
	"SELECT lockfence.renew('a', 1)",
	"SELECT lockfence.is_held('a', 1)",
	"SELECT lockfence.force_release('a')",
	"SELECT * FROM lockfence.locks",);

foreach my $sql (@calls)
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"\\set VERBOSITY verbose\n$sql");
	isnt($ret, 0, "fails: $sql");
	like($stderr, qr/ERROR:  55000: lockfence must be loaded via "shared_preload_libraries"/,
		"SQLSTATE 55000: $sql");
	like($stderr, qr/HINT:  Add lockfence to shared_preload_libraries/,
		"hint: $sql");
}

is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server still running');

# Preloading it afterwards makes the same installation work.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'lockfence'");
$node->restart;
ok($node->safe_psql('postgres', "SELECT lockfence.acquire('a', '1 s')") > 0,
	'works once preloaded');

$node->stop;
done_testing();
