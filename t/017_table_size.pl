
# No request pays for the size of the lock table:
#
#   1. leases that end are freed by the reclaimer worker without anyone
#      touching them, so their slots come back by themselves;
#   2. with 190,000 leases held, a role at its quota and a full table are
#      answered about as fast as a grant (each walked the whole table under
#      every partition lock: about 30 ms here, 154 ms at 1M slots);
#   3. lockfence.locks reads such a table partition by partition, and shows
#      every live lock.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $nheld = normal_or_valgrind(190000, 19000);
my $max_locks = $nheld + 1000;
my $node = start_preloaded_node('table_size', qq{
lockfence.max_locks = $max_locks
lockfence.max_locks_per_role = 0
});
set_node($node);
sql(q{
	CREATE EXTENSION lockfence;
	CREATE ROLE quota_role;
});

# 1. short leases, then nobody touches them
is(sql(qq{SELECT count(lockfence.try_acquire('short:' || i, '@{[ival(3)]}')) FROM generate_series(1, 1000) i}),
	'1000', 'a thousand short leases are granted');
is(sql('SELECT slots_used FROM lockfence.stats'), '1000', 'they use a thousand slots');
ok( $node->poll_query_until('postgres',
		'SELECT slots_used = 0 FROM lockfence.stats'),
	'after they end, the reclaimer frees their slots without anyone touching them');

# a long lease (on the far list) renewed to a short one ends on time too
my $long = sql(q{SELECT lockfence.try_acquire('long', '1 h')});
is(sql(qq{SELECT lockfence.renew('long', $long, '@{[ival(0.3)]}')}), 't',
	'a one-hour lease is renewed to a short one');
ok( $node->poll_query_until('postgres',
		'SELECT slots_used = 0 FROM lockfence.stats'),
	'after it ends, the reclaimer frees its slot too');

# 2. a large table, a role at its quota, and a full table
is(sql(qq{SELECT count(lockfence.try_acquire('held:' || i, '1 h')) FROM generate_series(1, $nheld) i}),
	$nheld, "$nheld leases are held");
reload_setting('lockfence.max_locks_per_role', 2);

# the median time of 21 refused requests, measured in the server
sub median_ms
{
	my ($role, $stmt, $state) = @_;
	return sql(qq{
		SET ROLE $role;
		CREATE TEMP TABLE IF NOT EXISTS times (ms float8);
		TRUNCATE times;
		DO \$\$
		DECLARE
			t0 timestamptz;
		BEGIN
			FOR i IN 1 .. 21 LOOP
				t0 := clock_timestamp();
				BEGIN
					$stmt;
				EXCEPTION WHEN $state THEN
					NULL;
				END;
				INSERT INTO times VALUES (1000 * extract(epoch FROM clock_timestamp() - t0));
			END LOOP;
		END \$\$;
		SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) FROM times;
	});
}
sql('GRANT CREATE, TEMP ON DATABASE postgres TO quota_role');
sql(q{SET ROLE quota_role; SELECT lockfence.try_acquire('q:1', '1 h'), lockfence.try_acquire('q:2', '1 h')});
my $quota_ms = median_ms('quota_role',
	q{PERFORM lockfence.try_acquire('q:' || (i + 2), '1 h')}, 'configuration_limit_exceeded');
note "median ms of an over-quota refusal: $quota_ms";
cmp_ok($quota_ms, '<', 2,
	"a role at its quota is refused in $quota_ms ms with $nheld leases held");

reload_setting('lockfence.max_locks_per_role', 0);
my ($ret, $out, $err) = $node->psql('postgres',
	qq{SELECT count(lockfence.try_acquire('fill:' || i, '1 h')) FROM generate_series(1, $max_locks) i});
like($err, qr/lockfence lock table is full/, 'then the table is filled up');
my $full_ms = median_ms('postgres',
	q{PERFORM lockfence.try_acquire('more:' || i, '1 h')}, 'out_of_memory');
note "median ms: a request meeting a full table $full_ms";
cmp_ok($full_ms, '<', 2,
	"a full table is reported in $full_ms ms");

# 3. the view, partition by partition
is(sql(q{SELECT count(*), count(*) FILTER (WHERE name LIKE 'held:%') FROM lockfence.locks}),
	sql('SELECT slots_used FROM lockfence.stats') . "|$nheld",
	'lockfence.locks shows every live lock of a large table');

$node->stop;
done_testing();
