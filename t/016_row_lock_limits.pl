
# What lock_rows and lock_row may cost a server, whatever they are given:
#
#   1. lock_rows over 100,000 rows keeps its memory bounded (it kept about
#      8 kB per locked row until it returned: 792 MB for 100,000 keys); the
#      backend's peak resident size is read from log_statement_stats;
#   2. its timeout bounds the whole call, not each row: three held rows and a
#      timeout of T end the call after about T, not 3T;
#   3. a timeout beyond what lock_timeout can hold, and a relation OID that
#      names nothing, get clear errors.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('row_lock_limits');
set_node($node);
sql(q{
	CREATE EXTENSION lockfence;
	CREATE TABLE many (id int PRIMARY KEY, v int);
	INSERT INTO many SELECT i, 0 FROM generate_series(1, 100000) AS i;
	VACUUM ANALYZE many;
});

# 1. memory: the peak resident size of a fresh backend that locks 100,000
# rows, from the statement statistics it logs
my $nkeys = normal_or_valgrind(100000, 20000);
my $log_offset = -s $node->logfile;
is( $node->safe_psql(
		'postgres', qq{
	SET log_statement_stats = on;
	BEGIN;
	SELECT lockfence.lock_rows('many', ARRAY(SELECT generate_series(1, $nkeys)), '10 s');
	COMMIT;
}),
	$nkeys,
	"lock_rows locked $nkeys rows");
my $log = slurp_file($node->logfile, $log_offset);
my @rss = $log =~ /(\d+) kB max resident size/g;
ok(@rss > 0, 'the statement statistics were logged')
  or diag($log);
my $peak_mb = (sort { $a <=> $b } @rss)[-1] / 1024;
note sprintf('peak resident size of the backend: %.0f MB', $peak_mb);
# shared_buffers (128 MB by default) counts once touched; 8 kB per row
# would add 800 MB
cmp_ok($peak_mb, '<', 250, 'its memory stayed bounded');

# 2. one deadline for the whole call: three rows held by three
# transactions; the first lets go halfway through the timeout, so a timeout
# per row would end the call at 1.5 T, one deadline at T
sql('INSERT INTO many VALUES (-3, 0), (-2, 0), (-1, 0) ON CONFLICT DO NOTHING');
my @holders;
for my $id (-3, -2, -1)
{
	my ($h) = session();
	$h->query_safe('BEGIN');
	$h->query_safe("SELECT lockfence.lock_row('many', $id)");
	push @holders, $h;
}
my ($waiter) = session(on_error_stop => 0);
my $timeout = secs(1);
my $t0 = time;
start_wait($waiter,
	"SELECT lockfence.lock_rows('many', ARRAY[-1, -2, -3], '$timeout s');");
Time::HiRes::sleep($timeout / 2);
$holders[0]->query_safe('ROLLBACK');
wait_err($waiter, qr/55P03/, 'lock_rows on rows held by others times out with 55P03');
my $waited = time - $t0;
cmp_ok($waited, '<', 1.3 * $timeout,
	"... after its timeout of $timeout s in all (waited "
	  . sprintf('%.2f', $waited) . ' s), not a timeout per row');
cmp_ok($waited, '>=', 0.9 * $timeout, '... and not before it');
$_->query_safe('ROLLBACK') for @holders[1 .. 2];
$_->quit for @holders, $waiter;

# 3. the timeout's range, and relation OIDs that name nothing
my ($ret, $out, $stderr) = $node->psql('postgres',
	"SELECT lockfence.lock_row('many', 1, '30 days')");
like($stderr, qr/row lock timeout must not exceed 2147483647 ms/,
	'a row lock timeout beyond lock_timeout\'s range is refused as such');
($ret, $out, $stderr) = $node->psql('postgres',
	'\set VERBOSITY verbose' . "\nSELECT lockfence.lock_row(0::oid::regclass, 1)");
like($stderr, qr/42P01/, 'a relation OID that names nothing: 42P01');
($ret, $out, $stderr) = $node->psql('postgres',
	'\set VERBOSITY verbose' . "\nSELECT lockfence.lock_rows(123456789::oid::regclass, ARRAY[1])");
like($stderr, qr/42P01/, '... for lock_rows too');

$node->stop;
done_testing();
