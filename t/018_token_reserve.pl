
# A commit never writes the token state file, so an I/O error there cannot
# turn into a PANIC ("cannot abort transaction ..., it was already
# committed").  Fence tokens are made durable a block ahead, outside every
# lock; a hand-off at commit only takes a token from that reserve, and when
# it is empty leaves the lock free for the waiter, whose own request then
# reports the error.  The write failure is injected by putting a directory
# where the state file's temporary file is created.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('token_reserve', 'lockfence.token_block_size = 64');
set_node($node);
sql('CREATE EXTENSION lockfence');
my $tmp = $node->data_dir . '/lockfence.fence_state.tmp';
my $start_time = sql('SELECT pg_postmaster_start_time()');

# tokens are made durable ahead of need: 200 grants with blocks of 64
is(sql(q{SELECT count(lockfence.release('t' || i, lockfence.try_acquire('t' || i, '1 s'))) FROM generate_series(1, 200) i}),
	'200', '200 grants with token blocks of 64');

# the holder of a transaction lock, and a waiter for it
my ($holder) = session();
$holder->query_safe('BEGIN');
my $held = $holder->query_safe(q{SELECT lockfence.acquire_xact('x')});
my ($waiter) = session(on_error_stop => 0);
start_wait($waiter, q{SELECT lockfence.acquire('x', '10 s', timeout => '60 s') AS token;});
wait_waiters('x', 1, 'a waiter queues for the transaction lock');

# writes of the state file fail from now on
mkdir $tmp or die "mkdir $tmp: $!";

# grants go on from the reserve, with a warning, until it is used up
my ($ret, $out, $err) = $node->psql('postgres', q{
	DO $$
	DECLARE
		n int := 0;
	BEGIN
		LOOP
			PERFORM lockfence.release('drain', lockfence.try_acquire('drain', '1 s'));
			n := n + 1;
		END LOOP;
	EXCEPTION WHEN OTHERS THEN
		RAISE NOTICE 'granted % more, then: %', n, SQLERRM;
	END $$;
});
like($err, qr/WARNING:  could not create file "lockfence.fence_state.tmp"/,
	'a failed write ahead of need is a warning while the reserve lasts');
my ($more) = $err =~ /granted (\d+) more/;
ok(defined $more && $more > 0 && $more <= 128, 'grants used up the reserve ('
	  . ($more // 'none') . ' more)');
like($err, qr/then: could not create file "lockfence.fence_state.tmp"/,
	'then a grant of its own reports the error');

# the holder commits: the hand-off finds the reserve empty
$holder->query_safe('COMMIT');
pass('the holder commits although its hand-off has no token to give');
wait_err($waiter, qr/could not create file "lockfence.fence_state.tmp"/,
	'the waiter, left to take the lock itself, gets the error in its own request');
is(sql('SELECT pg_postmaster_start_time()'), $start_time,
	'the server did not restart');
unlike(slurp_file($node->logfile), qr/PANIC/, 'and nothing was a PANIC');
is(sql(q{SELECT count(*) FROM lockfence.locks WHERE name = 'x'}), '0',
	'the lock is free');

# writes work again: grants resume above every earlier token
rmdir $tmp or die "rmdir $tmp: $!";
# the rest of the error's text may come after the part matched above
$waiter->query('SELECT 1');
$waiter->{stderr} = '';
my $token = $waiter->query_safe(q{SELECT lockfence.acquire('x', '10 s', timeout => '5 s')});
cmp_ok($token, '>', $held, 'once the state file can be written, the waiter takes the lock');
$waiter->quit;
$holder->quit;

$node->stop;
done_testing();
