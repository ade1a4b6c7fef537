
# Helpers shared by lockfence's TAP tests (t/*.pl).
#
# A test creates and starts its node as usual, hands it over once with
# set_node($node), and then uses the helpers, which all work on that node:
#
#   use FindBin;
#   use lib $FindBin::RealBin;
#   use LockfenceTest;
#   ...
#   set_node($node);
#
# Helpers that check something (ok/is) take the label of the check; their
# failures are reported at the caller's line.
#
# Under make valgrind (tools/valgrind.sh sets LOCKFENCE_VALGRIND=1) every
# server runs under valgrind memcheck: a statement or a new connection
# takes tenths of a second instead of milliseconds.  Leases, timeouts and
# the margins of timing checks written with secs()/ival() are stretched
# then by $TIME_SCALE (LOCKFENCE_TIME_SCALE, default 8), so that they keep
# their proportions to the round trips a test makes between them; counts
# written with normal_or_valgrind() are cut down.  In the normal run
# (make test) both give exactly the figures written in the test.

package LockfenceTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use Test::More;
use Time::HiRes qw(usleep);
use IPC::Run;

our @EXPORT = qw(
  under_valgrind normal_or_valgrind secs ival
  start_preloaded_node set_node sql reload_setting
  session failing start_wait wait_stream wait_out wait_err has_output
  finish_dead_session
  wait_waiters lock_columns stats stats_delta_is secs_between
  proc_state stop_process cont_process freeze thaw
  children_of process_alive kill_postmaster
  start_pgbouncer default_version
);

my $node;

my $VALGRIND = $ENV{LOCKFENCE_VALGRIND} ? 1 : 0;
my $TIME_SCALE = $VALGRIND ? ($ENV{LOCKFENCE_TIME_SCALE} || 8) : 1;

# Is this run under make valgrind?
sub under_valgrind { return $VALGRIND; }

# $normal in the normal run, $valgrind under make valgrind.
sub normal_or_valgrind
{
	my ($normal, $valgrind) = @_;
	return $VALGRIND ? $valgrind : $normal;
}

# default_version of lockfence.control: what CREATE EXTENSION installs.
sub default_version
{
	my $control = "$FindBin::RealBin/../lockfence.control";
	open(my $fh, '<', $control) or die "could not open $control: $!";
	my ($v) = join('', <$fh>) =~ /^\s*default_version\s*=\s*'([^']+)'/m;
	close($fh);
	die "no default_version in $control\n" unless defined $v;
	return $v;
}

# $s seconds, stretched under make valgrind.
sub secs { return $_[0] * $TIME_SCALE; }

# The interval literal text of secs($s): ival(2) is '2 s' in the normal run.
sub ival { return secs($_[0]) . ' s'; }

# A new node, initialised and started with lockfence preloaded, plus the
# postgresql.conf lines in $extra_conf.
sub start_preloaded_node
{
	my ($name, $extra_conf) = @_;
	my $new = PostgreSQL::Test::Cluster->new($name);
	$new->init;
	$new->append_conf('postgresql.conf',
		"shared_preload_libraries = 'lockfence'\n" . ($extra_conf // ''));
	$new->start;
	return $new;
}

# The node the helpers work on.
sub set_node
{
	($node) = @_;
	return $node;
}

sub _node
{
	die "LockfenceTest: call set_node(\$node) first\n" unless defined $node;
	return $node;
}

# Run SQL on the node (database postgres); returns its output, dies on an
# error.
sub sql
{
	return _node()->safe_psql('postgres', $_[0]);
}

# Set a reloadable server setting in postgresql.conf, reload, and wait
# until new sessions see it.
sub reload_setting
{
	my ($name, $value) = @_;
	my $n = _node();
	$n->append_conf('postgresql.conf', "$name = $value");
	$n->reload;
	$n->poll_query_until('postgres',
		"SELECT current_setting('$name') = '$value'")
	  or die "$name = $value was not reloaded";
	return;
}

########################################################################
# Background sessions
########################################################################

# A background psql session with SQLSTATEs in its error messages, and its
# backend pid.  %params go to background_psql (on_error_stop => 0, ...).
sub session
{
	my (%params) = @_;
	my $s = _node()->background_psql('postgres', %params);
	$s->query_safe('\set VERBOSITY verbose');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	return ($s, $pid);
}

# Run a statement that is expected to fail; returns its error text, and
# clears it (BackgroundPsql keeps stderr across queries).
sub failing
{
	my ($s, $stmt) = @_;
	my ($out, $err) = $s->query($stmt);
	my $text = $s->{stderr};
	$s->{stderr} = '';
	return $err ? $text : "no error; output: $out";
}

# Send statements that are expected to block; returns once psql sent them.
sub start_wait
{
	my ($s, $stmts) = @_;
	$s->query_until(qr/queued\n/, "\\echo queued\n$stmts\n");
	return;
}

# Pump a session until its stdout or stderr ($stream) matches $re, checking
# that it does with label $label (the session's timer starts again for each
# wait).  Returns the captures (or the whole text when there are none), or
# nothing when it did not match, and clears the stream.
sub wait_stream
{
	my ($s, $stream, $re, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$s->{timeout}->start;
	my $ok = pump_until($s->{run}, $s->{timeout}, \$s->{$stream}, $re);
	ok($ok, $label) or diag("$stream: $s->{$stream}");
	my @m = $s->{$stream} =~ $re;
	my $text = $s->{$stream};
	$s->{$stream} = '';
	return $ok ? (@m ? @m : $text) : ();
}

sub wait_out
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return wait_stream($_[0], 'stdout', $_[1], $_[2]);
}

sub wait_err
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return wait_stream($_[0], 'stderr', $_[1], $_[2]);
}

# Has the blocked statement of session $s printed anything yet, on any of
# @streams (default: stdout and stderr)?
sub has_output
{
	my ($s, @streams) = @_;
	@streams = ('stdout', 'stderr') unless @streams;
	$s->{run}->pump_nb();
	return scalar(grep { $s->{$_} ne '' } @streams) > 0;
}

# Finish a session whose psql exits by itself (its backend was terminated,
# ON_ERROR_STOP after a FATAL error): wait for it to go away instead of
# sending it \q.  With a label, check that it did exit.
sub finish_dead_session
{
	my ($s, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	while ($s->{run}->pumpable() && !$s->{timeout}->is_expired)
	{
		$s->{run}->pump_nb();
		usleep(10_000);
	}
	ok(!$s->{run}->pumpable(), $label) if defined $label;
	$s->{run}->finish;
	return;
}

########################################################################
# lockfence's views
########################################################################

# Wait until lock $name has $n waiters.  The client sees a cancel or
# timeout error before the backend's abort processing has taken it out of
# the queue, so queue checks poll.
sub wait_waiters
{
	my ($name, $n, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok( _node()->poll_query_until(
			'postgres',
			"SELECT waiters FROM lockfence.locks WHERE name = '$name'", $n),
		$label);
	return;
}

# Columns $cols (a select list) of lock $name in lockfence.locks, joined
# with '|', or '' when it is not held.
sub lock_columns
{
	my ($name, $cols) = @_;
	return sql("SELECT $cols FROM lockfence.locks WHERE name = '$name'");
}

# The counters of lockfence.stats as a hash.
sub stats
{
	my @k = qw(grants releases renewals expiries waits wait_timeouts
	  fence_rejections_monotonic fence_rejections_lease slots_used);
	my @v = split /\|/, sql('SELECT ' . join(', ', @k) . ' FROM lockfence.stats');
	my %h;
	@h{@k} = @v;
	return \%h;
}

# Check how the counters named in %$want moved since the snapshot $before
# (taken with stats()).
sub stats_delta_is
{
	my ($before, $want, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $after = stats();
	my %got = map { $_ => $after->{$_} - $before->{$_} } keys %$want;
	is_deeply(\%got, $want, "$label: lockfence.stats moved as expected")
	  or diag(explain { got => \%got, want => $want });
	return;
}

# Seconds from timestamp expression $from to $to, computed by the server.
sub secs_between
{
	my ($from, $to) = @_;
	return sql("SELECT extract(epoch FROM ($to) - ($from))");
}

########################################################################
# Processes: SIGSTOP/SIGCONT, the postmaster and its children
########################################################################

# Processes we stopped and have not let go yet.  A stopped backend must
# never outlive the test, whatever happens: it would block the shutdown.
my %stopped;

END
{
	# This module loads PostgreSQL::Test::Cluster before this block is
	# compiled, so this runs before Cluster's END block stops the nodes.
	kill('CONT', keys %stopped) if %stopped;
}

# The process state letter from /proc (T: stopped), '' when it is gone.
sub proc_state
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return '';
	my $stat = <$fh>;
	close($fh);
	return $stat =~ /^\d+ \(.*\) (\S)/ ? $1 : '';
}

# Send SIGSTOP to $pid and wait (up to 2 s) until the kernel has stopped
# it: the signal is asynchronous.  Returns whether the signal was sent and
# the state letter it ended with.
sub stop_process
{
	my ($pid) = @_;
	$stopped{$pid} = 1;
	my $sent = kill('STOP', $pid);
	my $state = '';
	for (1 .. 200)
	{
		$state = proc_state($pid);
		last if $state eq 'T';
		usleep(10_000);
	}
	return ($sent, $state);
}

# Send SIGCONT to $pid; returns whether the signal was sent.
sub cont_process
{
	my ($pid) = @_;
	my $sent = kill('CONT', $pid);
	delete $stopped{$pid};
	return $sent;
}

# Stop backend $pid, checking "$label: sent SIGSTOP to backend $pid" (unless
# check_kill => 0) and "$label: backend $pid is stopped".
sub freeze
{
	my ($pid, $label, %opt) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($sent, $state) = stop_process($pid);
	ok($sent, "$label: sent SIGSTOP to backend $pid")
	  if $opt{check_kill} // 1;
	is($state, 'T', "$label: backend $pid is stopped");
	return;
}

# Let backend $pid go on; with a label, check "$label: sent SIGCONT to
# backend $pid".
sub thaw
{
	my ($pid, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $sent = cont_process($pid);
	ok($sent, "$label: sent SIGCONT to backend $pid") if defined $label;
	return;
}

# Processes whose parent is $ppid (from /proc).
sub children_of
{
	my ($ppid) = @_;
	my @children;
	opendir(my $dh, '/proc') or die "could not open /proc: $!";
	for my $p (grep { /^\d+$/ } readdir($dh))
	{
		open(my $fh, '<', "/proc/$p/stat") or next;
		my $stat = <$fh>;
		close($fh);
		next unless defined $stat;
		push @children, $p
		  if $stat =~ /^\d+ \(.*\) \S (\d+) /s && $1 == $ppid;
	}
	closedir($dh);
	return @children;
}

# A process is gone when it does not exist or is a zombie nobody reaps.
sub process_alive
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return 0;
	my $stat = <$fh>;
	close($fh);
	return 0 unless defined $stat;
	return $stat !~ /^\d+ \(.*\) Z /s;
}

# SIGKILL the postmaster and wait until it and its children are gone: the
# new postmaster refuses to start while they are still attached to the old
# shared memory, or while the old postmaster's pid exists at all (even as a
# zombie not reaped yet).  Kills any straggler after a while.  $on_children,
# if given, is called with the postmaster's children before the kill.
# Returns the pid of the killed postmaster.
sub kill_postmaster
{
	my ($on_children) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $pm_pid = _node()->{_pid};
	ok(defined $pm_pid && process_alive($pm_pid), 'postmaster pid is known');
	my @children = children_of($pm_pid);
	if ($on_children)
	{
		# its checks report their own lines
		local $Test::Builder::Level = $Test::Builder::Level - 1;
		$on_children->(@children);
	}

	_node()->kill9;

	my $deadline = time() + 30;
	while (kill(0, $pm_pid) || grep { process_alive($_) } @children)
	{
		if (time() > $deadline)
		{
			diag('killing children of the dead postmaster that did not exit');
			kill('KILL', grep { process_alive($_) } @children);
			$deadline = time() + 30;
		}
		usleep(100_000);
	}
	pass('the killed postmaster and its children are gone');
	return $pm_pid;
}

########################################################################
# pgbouncer
########################################################################

# Start a pgbouncer (Debian's /usr/sbin/pgbouncer) in front of the node,
# trusting every client, listening on a unix socket in a new directory.
# %opts: pools => [ [ alias, pool_size ], ... ] (each alias a pgbouncer
# database for the node's database postgres, with a pool of its own),
# pool_mode (default transaction), settings => extra [pgbouncer] lines.
# Returns a hash: connstr => { alias => libpq connection string },
# handle (IPC::Run, for kill_kill), dir; or undef when pgbouncer is not
# installed.  Dies when it does not come up.
sub start_pgbouncer
{
	my (%opts) = @_;
	my $bin = '/usr/sbin/pgbouncer';
	return undef unless -x $bin;
	my $n = _node();
	my $dir = PostgreSQL::Test::Utils::tempdir;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $user = $ENV{USER} || getpwuid($<);
	my $pools = $opts{pools} // [ [ 'postgres', 2 ] ];
	my $max = 0;
	$max += $_->[1] for @$pools;

	open my $ul, '>', "$dir/userlist.txt" or die;
	print $ul qq{"$user" ""\n};
	close $ul;
	open my $ini, '>', "$dir/pgbouncer.ini" or die;
	print $ini "[databases]\n";
	for my $p (@$pools)
	{
		print $ini "$p->[0] = host=" . $n->host . ' port=' . $n->port
		  . " dbname=postgres pool_size=$p->[1]\n";
	}
	print $ini "\n[pgbouncer]\n" . qq{listen_addr =
unix_socket_dir = $dir
listen_port = $port
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = @{[ $opts{pool_mode} // 'transaction' ]}
max_db_connections = $max
min_pool_size = 0
server_round_robin = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
} . join('', map { "$_\n" } @{ $opts{settings} // [] });
	close $ini;

	my $handle = IPC::Run::start([ $bin, "$dir/pgbouncer.ini" ],
		'>', "$dir/out", '2>', "$dir/err");
	my %connstr = map { $_->[0] => "host=$dir port=$port dbname=$_->[0]" } @$pools;
	my $probe = $connstr{ $pools->[0][0] };
	my $error = '';
	for (1 .. 100)
	{
		# psql reads the query from a pipe: if it exits at once because
		# pgbouncer is not listening yet, writing to it dies with EPIPE
		my $ret = eval {
			($n->psql('postgres', 'SELECT 1', connstr => $probe,
				on_error_stop => 1))[0];
		};
		$error = $@ if $@;
		return { connstr => \%connstr, handle => $handle, dir => $dir }
		  if defined $ret && $ret == 0;
		usleep(100_000);
	}
	$handle->kill_kill;
	die "pgbouncer did not accept connections: $error";
}

1;

