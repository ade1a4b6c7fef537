# Through pgbouncer in transaction pooling mode: a lease taken on one server
# connection is used (fenced write) and released on another, and one
# client's disconnect never releases another client's lease.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('bouncer');
set_node($node);
$node->safe_psql('postgres', q{
	CREATE EXTENSION lockfence;
	CREATE TABLE jobs (id int PRIMARY KEY, state text, fence_token bigint);
	INSERT INTO jobs VALUES (1, 'new', NULL);
	CREATE TRIGGER jobs_fence BEFORE INSERT OR UPDATE ON jobs
		FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'job:', 'id');
});

# pgbouncer with two server connections, transaction pooling
my $bouncer = start_pgbouncer(pools => [ [ 'postgres', 2 ] ]);
plan skip_all => 'pgbouncer is not installed' unless $bouncer;
my $connstr = $bouncer->{connstr}{postgres};
pass('pgbouncer accepts connections');

# clients through pgbouncer (background_psql of PostgreSQL 15 takes no
# connection string, so its connstr is pointed at pgbouncer meanwhile)
sub bouncer_session
{
	no warnings 'redefine';
	local *PostgreSQL::Test::Cluster::connstr = sub { return $connstr; };
	return $node->background_psql('postgres', on_error_stop => 0);
}
my $a = bouncer_session();
my $c = bouncer_session();

my ($token, $acquire_pid) = split /\|/,
  $a->query_safe("SELECT lockfence.acquire('job:1', '1 min'), pg_backend_pid()");
ok($token > 0, "client A acquired job:1 on server backend $acquire_pid");

# C1 and C2 open a transaction each, taking both server connections; the
# one on A's acquire backend stays open, the other commits, so A's next
# transaction has to run on the other server connection
my $c2 = bouncer_session();
$c->query_safe('BEGIN');
$c2->query_safe('BEGIN');
my $c_pid = $c->query_safe('SELECT pg_backend_pid()');
my $c2_pid = $c2->query_safe('SELECT pg_backend_pid()');
ok(($c_pid == $acquire_pid) != ($c2_pid == $acquire_pid),
	'C1 and C2 hold the two server connections');
my ($keeper, $other) = $c_pid == $acquire_pid ? ($c, $c2) : ($c2, $c);
$other->query_safe('COMMIT');
my $write_pid = $a->query_safe(
	"UPDATE jobs SET state = 'running', fence_token = $token WHERE id = 1; SELECT pg_backend_pid()");
isnt($write_pid, $acquire_pid,
	'A writes with its token on another server connection than it acquired on');
$keeper->query_safe('COMMIT');
my ($released, $release_pid) = split /\|/, $a->query_safe(
	"SELECT lockfence.release('job:1', $token), pg_backend_pid()");
is($released, 't', "A releases with its token (server backend $release_pid)");
$c2->quit;
is($node->safe_psql('postgres', 'SELECT state, fence_token FROM jobs'),
	"running|$token", 'the fenced write went through');

# a client's disconnect releases nobody's lease, not even its own
my $d = bouncer_session();
my $d_token = $d->query_safe("SELECT lockfence.acquire('job:2', '1 min')");
my $e_token = $a->query_safe("SELECT lockfence.acquire('job:3', '1 min')");
$d->quit;
is($node->safe_psql('postgres',
		"SELECT lockfence.is_held('job:2', $d_token), lockfence.is_held('job:3', $e_token)"),
	't|t', 'after client D disconnects, both leases are still held');
is($c->query_safe("SELECT lockfence.release('job:2', $d_token)"), 't',
	'another client can release D\'s lease with its token');

# a stale token through the pooler is refused like any other
my ($ret, $out, $err) = $node->psql('postgres',
	"UPDATE jobs SET state = 'stale', fence_token = $token WHERE id = 1",
	connstr => $connstr);
like($err, qr/stale fence token for lock "job:1"/, 'a write with the released token is rejected');

$a->quit;
$c->quit;
$bouncer->{handle}->kill_kill;
$node->stop;
done_testing();
