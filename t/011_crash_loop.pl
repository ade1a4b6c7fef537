
# Crash loop: clients take leases on a few resources, write under the
# lease-mode fence trigger and release, in a loop, while every cycle
# SIGKILLs one backend -- a lease holder, a waiter in acquire(), or a writer
# in the middle of its transaction -- so that the postmaster reinitialises
# and the clients reconnect.
#
# Each client is a psql running a generated script; it prints every token it
# is given (with the grant time from lockfence.locks, server clock) and
# every write whose COMMIT it saw succeed.  Each write logs its grant (lock,
# token, granted_at) and the time of the write in a normal table, in the
# same transaction as the fenced UPDATE.  Afterwards:
#   - tokens are unique, and every cycle's tokens exceed all earlier ones;
#   - per lock, grants ordered by grant time are ordered by token (grants of
#     one lock never overlap, and across a crash-restart they cannot);
#   - per lock, each write happened before the next grant (mutual exclusion:
#     an accepted write pins the lease until it commits);
#   - every write whose COMMIT returned success is in the table, and each
#     counter equals the number of writes logged for it;
#   - after each crash-restart no lock is held and the counters are reset.

use strict;
use warnings;

use IPC::Run;
use List::Util qw(max min shuffle);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

# 6 cycles under valgrind (each kind of victim twice), where a crash-restart
# takes seconds; times are stretched there as in the other files
my $CYCLES = normal_or_valgrind(30, 6);
my $CLIENTS = 4;
my $RESOURCES = 3;
my $seed = $ENV{LOCKFENCE_TEST_SEED} // int(rand(1_000_000));
srand($seed);
note("random seed $seed (set LOCKFENCE_TEST_SEED to repeat)");

my $t_start = time();
my $node = start_preloaded_node(
	'crash_loop', qq{
restart_after_crash = on
});
$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION lockfence;
CREATE TABLE data (id int PRIMARY KEY, value bigint NOT NULL, fence_token bigint);
INSERT INTO data SELECT g, 0, NULL FROM generate_series(1, $RESOURCES) g;
CREATE TRIGGER data_fence BEFORE INSERT OR UPDATE ON data
    FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'res:', 'id');
-- one row per accepted write: its grant and when it wrote
CREATE TABLE writes (client int, cycle int, seq int, res int, token bigint,
                     granted_at timestamptz, written_at timestamptz,
                     PRIMARY KEY (client, cycle, seq));
-- the token, and the grant time as lockfence.locks shows it, or no token
-- after a timeout
CREATE FUNCTION acq(r int, lease interval, timeout interval,
                    OUT tok bigint, OUT gat text)
LANGUAGE plpgsql AS \$\$
BEGIN
    tok := lockfence.acquire('res:' || r, lease, timeout);
    SELECT coalesce((extract(epoch FROM acquired_at) * 1000000)::bigint::text, 'null')
      INTO gat FROM lockfence.locks WHERE name = 'res:' || r AND token = tok;
    gat := coalesce(gat, 'null');
EXCEPTION WHEN lock_not_available THEN
    tok := NULL;
END \$\$;
-- the fenced write and its log row, in one transaction; pause is spent
-- inside it, after the UPDATE
CREATE FUNCTION fenced_write(c int, cy int, s int, r int, tok bigint,
                             gat text, pause float8)
RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    UPDATE data SET value = value + 1, fence_token = tok WHERE id = r;
    PERFORM pg_sleep(pause);
    INSERT INTO writes VALUES (c, cy, s, r, tok,
        to_timestamp(nullif(gat, 'null')::bigint / 1000000.0), clock_timestamp());
END \$\$;
});

# The script of client $c in cycle $cy: acquire, maybe hold past the lease,
# write, release, and print what happened.
sub client_script
{
	my ($c, $cy) = @_;
	my $s = "\\set VERBOSITY terse\n";
	for my $i (1 .. 400)
	{
		my $r = 1 + int(rand($RESOURCES));
		# mostly short; now and then just past the 300 ms lease, so that the
		# next holder may still be holding without having written yet
		my $hold =
		  rand() < 0.06 ? secs(0.31) + rand(secs(0.03)) : rand(secs(0.05));
		my $pause = rand(secs(0.03));
		$s .= qq{\\unset tok
SELECT tok, gat FROM acq($r, '@{[ival(0.3)]}', '@{[ival(1)]}') \\gset
\\if :{?tok}
\\echo G $c $cy $i $r :tok :gat
SELECT pg_sleep($hold);
SELECT fenced_write($c, $cy, $i, $r, :tok, :'gat', $pause);
\\if :ERROR
\\echo F $c $cy $i :SQLSTATE
\\else
\\echo W $c $cy $i
\\endif
SELECT lockfence.release('res:$r', :tok);
\\else
\\echo T $c $cy $i
\\endif
};
	}
	return $s;
}

sub start_client
{
	my ($c, $cy) = @_;
	my $file = $node->basedir . "/client_${c}.sql";
	open(my $fh, '>', $file) or die "could not write $file: $!";
	print $fh client_script($c, $cy);
	close($fh);
	my %cl = (out => '', err => '');
	$cl{h} = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq',
			'-d', $node->connstr('postgres') . " application_name=lfclient$c",
			'-f', $file
		],
		'<', \undef, '>', \$cl{out}, '2>', \$cl{err});
	return \%cl;
}

# Wait for the clients' psql to exit (they do once the server crashed).
sub finish_clients
{
	my @cl = @_;
	my $t = IPC::Run::timer(60);
	$t->start;
	for my $cl (@cl)
	{
		while ($cl->{h}->pumpable && !$t->is_expired)
		{
			$cl->{h}->pump_nb;
			usleep(10_000);
		}
		if ($cl->{h}->pumpable)
		{
			diag('a client did not exit after the crash; killing it');
			$cl->{h}->kill_kill;
		}
		else
		{
			eval { $cl->{h}->finish; };
		}
	}
	return;
}

# Does the server log match $re after $offset, within $secs?
sub log_has
{
	my ($re, $offset, $secs) = @_;
	my $end = time() + $secs;
	while (time() < $end)
	{
		return 1 if slurp_file($node->logfile, $offset) =~ $re;
		usleep(50_000);
	}
	return 0;
}

my %victim_sql = (
	holder => q{
SELECT l.holder_pid FROM lockfence.locks l
  JOIN pg_stat_activity a ON a.pid = l.holder_pid
 WHERE a.application_name LIKE 'lfclient%' AND a.backend_xid IS NULL
 ORDER BY random() LIMIT 1},
	waiter => q{
SELECT pid FROM pg_stat_activity
 WHERE application_name LIKE 'lfclient%' AND state = 'active'
   AND wait_event_type = 'Extension'
 ORDER BY random() LIMIT 1},
	writer => q{
SELECT pid FROM pg_stat_activity
 WHERE application_name LIKE 'lfclient%' AND state = 'active'
   AND query LIKE 'SELECT fenced_write%' AND backend_xid IS NOT NULL
 ORDER BY random() LIMIT 1},
	any => q{
SELECT pid FROM pg_stat_activity
 WHERE application_name LIKE 'lfclient%' ORDER BY random() LIMIT 1},);

my (%killed, @grants, %acked, %failed, $timeouts);
my @cycle_tokens;    # per cycle, the tokens the clients saw
my ($bad_restart, $max_restart_s, $sum_restart_s) = (0, 0, 0);
my @kill_kinds = qw(holder waiter writer);

for my $cy (1 .. $CYCLES)
{
	# after the previous crash: nothing held, counters reset
	my $st = $node->safe_psql('postgres',
		'SELECT (SELECT count(*) FROM lockfence.locks), grants FROM lockfence.stats');
	if ($cy > 1 && $st ne '0|0')
	{
		$bad_restart++;
		diag("cycle $cy: after the crash-restart locks|grants = $st");
	}

	my @cl = map { start_client($_, $cy) } 1 .. $CLIENTS;
	my $mon = $node->background_psql('postgres', on_error_stop => 0);

	# let them run, then look for a victim of this cycle's kind
	usleep(int(secs(0.4 + rand(0.6)) * 1_000_000));
	my $want = $kill_kinds[ $cy % 3 ];
	my ($pid, $kind);
	for my $try (1 .. 100)
	{
		$pid = $mon->query($victim_sql{$want});
		if ($pid =~ /^\d+$/) { $kind = $want; last; }
		usleep(int(secs(0.01) * 1_000_000));
	}
	unless (defined $kind)
	{
		$pid = $mon->query($victim_sql{any});
		$kind = 'other';
	}
	unless ($pid =~ /^\d+$/)
	{
		# every client finished its script: nothing to kill this cycle
		diag("cycle $cy: no client backend to kill");
		$mon->quit;
		finish_clients(@cl);
		next;
	}

	my $offset = -s $node->logfile;
	my $t_kill = time();
	unless (kill('KILL', $pid))
	{
		# it exited just now: any client backend will do
		$pid = $mon->query($victim_sql{any});
		$kind = 'other';
		$t_kill = time();
		kill('KILL', $pid) if $pid =~ /^\d+$/;
	}
	if (!log_has(qr/all server processes terminated; reinitializing/, $offset, secs(60)))
	{
		fail("cycle $cy: the server did not reinitialise after SIGKILL of $kind $pid");
		last;
	}
	$killed{$kind}++;
	$node->poll_query_until('postgres', 'SELECT 1', '1')
	  or BAIL_OUT('the server does not come back after a crash');
	my $restart_s = time() - $t_kill;
	$max_restart_s = $restart_s if $restart_s > $max_restart_s;
	$sum_restart_s += $restart_s;
	$mon->quit;
	finish_clients(@cl);

	# what the clients saw
	for my $cl (@cl)
	{
		for my $line (split /\n/, $cl->{out})
		{
			if ($line =~ /^G (\d+) (\d+) (\d+) (\d+) (\d+) (\S+)$/)
			{
				push @grants,
				  {
					client => $1,
					cycle => $2,
					seq => $3,
					res => $4,
					token => $5,
					gat => $6
				  };
				push @{ $cycle_tokens[$cy] }, $5;
			}
			elsif ($line =~ /^W (\d+) (\d+) (\d+)$/) { $acked{"$1 $2 $3"} = 1; }
			elsif ($line =~ /^F (\d+) (\d+) (\d+) (\S*)$/) { $failed{$4}++; }
			elsif ($line =~ /^T /) { $timeouts++; }
		}
	}
}

my $cycles_done = scalar(grep { defined } @cycle_tokens);
my $kills = 0;
$kills += $_ for values %killed;
cmp_ok($kills, '>=', $CYCLES - 2,
	"at least " . ($CYCLES - 2) . " crash-restarts by SIGKILL of a client backend ($kills)");
ok($killed{holder} && $killed{waiter} && $killed{writer},
	'holders, waiters and writers in mid-transaction were all killed')
  or diag(explain \%killed);
is($bad_restart, 0,
	'after every crash-restart no lock was held and the counters were reset');

# ---- tokens ----
my %seen;
my $dups = grep { $seen{ $_->{token} }++ } @grants;
is($dups, 0, 'every token the clients were given is unique (' . scalar(@grants) . ' grants)');

my ($prev_max, $order_ok) = (0, 1);
for my $cy (1 .. $CYCLES)
{
	next unless $cycle_tokens[$cy] && @{ $cycle_tokens[$cy] };
	my ($lo, $hi) = (min(@{ $cycle_tokens[$cy] }), max(@{ $cycle_tokens[$cy] }));
	if ($lo <= $prev_max)
	{
		$order_ok = 0;
		diag("cycle $cy: token $lo is not above $prev_max from before the crash");
	}
	$prev_max = $hi;
}
ok($order_ok, 'each cycle\'s tokens exceed every token before its crash-restart');

# per lock, grant time order is token order
my ($pairs, $misordered, $nogat) = (0, 0, 0);
for my $r (1 .. $RESOURCES)
{
	my @g = sort { $a->{gat} <=> $b->{gat} || $a->{token} <=> $b->{token} }
	  grep { $_->{res} == $r && $_->{gat} ne 'null' } @grants;
	$nogat += grep { $_->{res} == $r && $_->{gat} eq 'null' } @grants;
	for my $i (1 .. $#g)
	{
		$pairs++;
		next if $g[$i]->{token} > $g[ $i - 1 ]->{token};
		$misordered++;
		diag("res:$r: grant at $g[$i-1]{gat} got token $g[$i-1]{token}, "
			  . "the later grant at $g[$i]{gat} got $g[$i]{token}");
	}
}
is($misordered, 0,
	"per lock, grants ordered by server time are ordered by token ($pairs consecutive pairs)");

# ---- writes ----
my @rows = map { [ split /\|/ ] } split /\n/, $node->safe_psql(
	'postgres', q{
SELECT client, cycle, seq, res, token,
       (extract(epoch FROM granted_at) * 1000000)::bigint,
       (extract(epoch FROM written_at) * 1000000)::bigint
  FROM writes ORDER BY res, token});
my %in_table = map { ("$_->[0] $_->[1] $_->[2]" => 1) } @rows;
my @missing = grep { !$in_table{$_} } sort keys %acked;
is(scalar(@missing), 0,
	'every write whose COMMIT returned success is in the table (' . scalar(keys %acked) . ' acknowledged)')
  or diag("missing: @missing[0 .. min(9, $#missing)]");
my $unacked = scalar(@rows) - scalar(grep { $acked{"$_->[0] $_->[1] $_->[2]"} } @rows);

my %grant_of = map { ("$_->{client} $_->{cycle} $_->{seq}" => $_) } @grants;
my $unmatched = grep {
	my $g = $grant_of{"$_->[0] $_->[1] $_->[2]"};
	!$g || $g->{token} != $_->[4] || $g->{res} != $_->[3]
} @rows;
is($unmatched, 0, 'every logged write carries a token its client was granted for that lock');

my ($overlaps, $wpairs) = (0, 0);
for my $i (1 .. $#rows)
{
	my ($p, $n) = ($rows[ $i - 1 ], $rows[$i]);
	next unless $p->[3] == $n->[3];
	$wpairs++;
	if ($n->[5] eq '' || $p->[6] >= $n->[5])
	{
		$overlaps++;
		diag("res:$n->[3]: token $p->[4] wrote at $p->[6], token $n->[4] was granted at $n->[5]");
	}
}
is($overlaps, 0,
	"per lock, every write came before the next grant ($wpairs consecutive writes)");

my $counts = $node->safe_psql(
	'postgres', q{
SELECT count(*) FILTER (WHERE d.value <> w.n) FROM data d
  LEFT JOIN LATERAL (SELECT count(*) AS n FROM writes WHERE res = d.id) w ON true});
is($counts, '0', 'each counter equals the number of writes logged for it');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM data d
 WHERE d.fence_token IS DISTINCT FROM (SELECT max(token) FROM writes WHERE res = d.id)}),
	'0',
	'each row carries the token of its last logged write');

my $elapsed = time() - $t_start;
diag(
	sprintf(
		'crash loop: %d cycles, kills %s; %d grants, %d timeouts, %d writes acknowledged, '
		  . '%d more committed without an acknowledgement, failed writes %s; '
		  . 'crash-restart %.2f s average, %.2f s max; %.0f s in all',
		$cycles_done,
		join('/', map { "$_=" . ($killed{$_} // 0) } qw(holder waiter writer other)),
		scalar(@grants), $timeouts // 0, scalar(keys %acked), $unacked,
		join('/', map { "$_=$failed{$_}" } sort keys %failed) || 'none',
		$kills ? $sum_restart_s / $kills : 0, $max_restart_s, $elapsed));

$node->stop;
done_testing();
