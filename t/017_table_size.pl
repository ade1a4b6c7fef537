
# No request pays for the size of the lock table:
#
#   1. leases that end are freed by the reclaimer worker without anyone
#      touching them, so their slots come back by themselves;
#   2. with 190,000 leases held, a role at its quota and a full table are
#      refused with their SQLSTATEs and leave nothing behind (how fast: the
#      benchmark, make bench SECTIONS=scale, against the idle table);
#   3. lockfence.locks reads such a table partition by partition, a slice
#      at a time, and shows every live lock once, also while locks come
#      and go; a walk cut short by a cancel or an exit leaves nothing behind.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $nheld = normal_or_valgrind(190000, 19000);
my $max_locks = $nheld + 4000;
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

# refused ROLE STATEMENT STATE: run STATEMENT 21 times as ROLE, each in its
# own subtransaction; how many were refused with STATE.  How long a refusal
# takes with a large table is measured by the benchmark (make bench
# SECTIONS=scale: "over quota" and "full table" against idle), not here.
sub refused
{
	my ($role, $stmt, $state) = @_;
	return sql(qq{
		SET ROLE $role;
		CREATE TEMP TABLE IF NOT EXISTS refusals (n int);
		TRUNCATE refusals;
		DO \$\$
		DECLARE
			n int := 0;
		BEGIN
			FOR i IN 1 .. 21 LOOP
				BEGIN
					$stmt;
				EXCEPTION WHEN $state THEN
					n := n + 1;
				END;
			END LOOP;
			INSERT INTO refusals VALUES (n);
		END \$\$;
		SELECT n FROM refusals;
	});
}
sql('GRANT TEMP ON DATABASE postgres TO quota_role');
sql(q{SET ROLE quota_role; SELECT lockfence.try_acquire('q:1', '1 h'), lockfence.try_acquire('q:2', '1 h')});
my $slots = sql('SELECT slots_used FROM lockfence.stats');
is( refused(
		'quota_role', q{PERFORM lockfence.try_acquire('q:' || (i + 2), '1 h')},
		'configuration_limit_exceeded'),
	'21',
	"with $nheld leases held, a role at its quota is refused every time (53400)");
is(sql('SELECT slots_used FROM lockfence.stats'), $slots,
	'the refused requests leave no slot behind');
is(sql(q{SELECT count(*) FROM lockfence.locks WHERE name LIKE 'q:%'}), '2',
	'and the role still holds its two locks, no more');

reload_setting('lockfence.max_locks_per_role', 0);
my ($ret, $out, $err) = $node->psql('postgres',
	qq{SELECT count(lockfence.try_acquire('fill:' || i, '1 h')) FROM generate_series(1, $max_locks) i});
like($err, qr/lockfence lock table is full/, 'then the table is filled up');
$slots = sql('SELECT slots_used FROM lockfence.stats');
is(sql('SELECT slots_available FROM lockfence.stats'), '0', 'no slot is left');
is( refused(
		'postgres', q{PERFORM lockfence.try_acquire('more:' || i, '1 h')},
		'out_of_memory'),
	'21',
	'a request meeting the full table is refused every time (53200)');
is(sql('SELECT slots_used FROM lockfence.stats'), $slots,
	'and leaves the table as it was');

# 3. the view, partition by partition, in slices
is(sql(q{SELECT count(*), count(*) FILTER (WHERE name LIKE 'held:%') FROM lockfence.locks}),
	sql('SELECT slots_used FROM lockfence.stats') . "|$nheld",
	'lockfence.locks shows every live lock of a large table');

# Read it while another session renews leases (which moves them between
# the expiry lists), takes and frees new locks, and frees and retakes held
# ones (which removes their entries and creates new ones at the end of the
# partition's list).  Every lock held throughout shows exactly once, and no
# name twice.
sql(q{SELECT count(lockfence.force_release(name)) FROM lockfence.locks WHERE name LIKE 'fill:%'});
sql('CREATE TABLE stop_churn (stop bool)');
my ($churn) = session();
$churn->query_safe(q{
	CREATE TEMP TABLE renewed AS
		SELECT 'renewed:' || i AS name, lockfence.try_acquire('renewed:' || i, '1 h') AS token
		FROM generate_series(1, 2000) i;
	CREATE TEMP TABLE retaken AS
		SELECT 'retaken:' || i AS name, lockfence.try_acquire('retaken:' || i, '1 h') AS token
		FROM generate_series(1, 500) i;
});
my $renewals_before = stats()->{renewals};
start_wait($churn, q{
DO $$
DECLARE
	r record;
	n int := 0;
BEGIN
	WHILE NOT EXISTS (SELECT FROM stop_churn) LOOP
		n := n + 1;
		FOR r IN SELECT * FROM renewed LOOP
			IF NOT lockfence.renew(r.name, r.token,
								   CASE WHEN n % 2 = 0 THEN interval '30 s' ELSE interval '1 h' END) THEN
				RAISE EXCEPTION 'lease % was lost', r.name;
			END IF;
		END LOOP;
		UPDATE retaken SET token = lockfence.try_acquire(name, '1 h')
			WHERE lockfence.release(name, token);
		PERFORM lockfence.release('churn:' || i, lockfence.try_acquire('churn:' || i, '1 h'))
			FROM generate_series(1, 500) i;
	END LOOP;
END $$;
\echo churned
});
for my $read (1 .. 8)
{
	is(sql(q{SELECT count(*) FILTER (WHERE name LIKE 'held:%'),
					count(*) FILTER (WHERE name LIKE 'renewed:%'),
					count(*) FILTER (WHERE name LIKE 'retaken:%') <= 500,
					count(*) = count(DISTINCT name)
			 FROM lockfence.locks}),
		"$nheld|2000|t|t",
		"read $read while locks come and go: every held lock once, no name twice");
}

# A walk that is cancelled, or whose backend exits, in the middle leaves no
# trace: the next walks of the same backend slot find every lock.
my ($reader, $reader_pid) = session(on_error_stop => 0);
like(failing($reader, q{SET statement_timeout = '10ms'; SELECT count(*) FROM lockfence.locks}),
	qr/57014/, 'a walk cancelled by statement_timeout');
$reader->query_safe('RESET statement_timeout');
is($reader->query_safe(q{SELECT count(*) FILTER (WHERE name LIKE 'held:%') FROM lockfence.locks}),
	$nheld, 'the next walk of that session finds every lock');
start_wait($reader, q{
DO $$ BEGIN LOOP PERFORM count(*) FROM lockfence.locks; END LOOP; END $$;});
usleep(300_000);
is(sql("SELECT pg_terminate_backend($reader_pid)"), 't',
	'a session is terminated while it reads the view');
finish_dead_session($reader, 'its psql exits');
for my $i (1 .. 3)
{
	my ($s) = session();
	is($s->query_safe(q{SELECT count(*) FILTER (WHERE name LIKE 'held:%'),
							   count(*) FILTER (WHERE name LIKE 'renewed:%'),
							   count(*) = count(DISTINCT name)
						FROM lockfence.locks}),
		"$nheld|2000|t", "walk $i of a new session after that finds every lock once");
	$s->quit;
}

sql('INSERT INTO stop_churn VALUES (true)');
wait_out($churn, qr/churned/, 'the churning session ran to the end without losing a lease');
cmp_ok(stats()->{renewals} - $renewals_before, '>=', 2 * 2000,
	'it renewed every lease at least twice meanwhile');
$churn->quit;
is(sql(q{SELECT count(*) FROM lockfence.locks}),
	sql('SELECT slots_used FROM lockfence.stats'),
	'afterwards the view and the slot count agree');

$node->stop;
done_testing();
