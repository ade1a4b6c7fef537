# Without shared_preload_libraries, CREATE EXTENSION works and every function
# fails with SQLSTATE 55000 and a hint, and the server keeps running.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = PostgreSQL::Test::Cluster->new('not_preloaded');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION lockfence');
is($node->safe_psql('postgres',
		"SELECT extversion FROM pg_extension WHERE extname = 'lockfence'"),
	default_version(), 'CREATE EXTENSION works without the library preloaded');

my @calls = (
	"SELECT lockfence.acquire('a')",
	"SELECT lockfence.try_acquire('a')",
	"SELECT lockfence.acquire_session('a')",
	"SELECT lockfence.try_acquire_session('a')",
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
	like($stderr, qr/HINT:  Add lockfence to "shared_preload_libraries"/,
		"hint: $sql");
}

is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server still running');

# The row-lock helpers and the lock_version trigger use no shared memory.
$node->safe_psql('postgres', q{
	CREATE TABLE items (id int PRIMARY KEY, lock_version int NOT NULL DEFAULT 0);
	INSERT INTO items VALUES (1);
	CREATE TRIGGER items_version BEFORE UPDATE ON items
		FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
});
is($node->safe_psql('postgres',
		"BEGIN; SELECT lockfence.lock_row('items', 1), lockfence.lock_rows('items', ARRAY[1]); COMMIT;"),
	't|1', 'lock_row and lock_rows work without preloading');
$node->safe_psql('postgres', 'UPDATE items SET lock_version = 0');
is($node->safe_psql('postgres', 'SELECT lock_version FROM items'),
	'1', 'lock_version_check works without preloading');
my ($fence_ret, $fence_out, $fence_err) = $node->psql('postgres', q{
	CREATE TABLE fenced (id int, tok bigint);
	CREATE TRIGGER f BEFORE INSERT ON fenced
		FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('tok');
	INSERT INTO fenced VALUES (1, 1);
});
like($fence_err, qr/lockfence must be loaded via "shared_preload_libraries"/,
	'fence_check needs the library preloaded');

# Preloading it afterwards makes the same installation work.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'lockfence'");
$node->restart;
ok($node->safe_psql('postgres', "SELECT lockfence.acquire('a', '1 s')") > 0,
	'works once preloaded');

$node->stop;
done_testing();
