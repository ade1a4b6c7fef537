
# The real ORMs against lockfence.lock_version_check and the row-lock
# helpers: ActiveRecord 6.1 (Debian's ruby-activerecord, ruby-pg) and
# SQLAlchemy 1.4 (python3-sqlalchemy, python3-psycopg2), each with its own
# optimistic locking switched on, on a table with the trigger and on one
# without it as the control; and raw SQL sending both version protocols
# concurrently on one table.  The clients are in t/orm/; each prints one
# "ok - ..." / "not ok - ..." line per check, which this file reports as its
# own checks.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

# An interpreter, the first of @candidates that can run $probe (given
# after option $flag).
sub interpreter
{
	my ($flag, $probe, @candidates) = @_;
	for my $candidate (grep { defined } @candidates)
	{
		my ($out, $err);
		return $candidate
		  if eval {
			IPC::Run::run([ $candidate, $flag, $probe ],
				'<', \undef, '>', \$out, '2>', \$err);
		  };
	}
	return undef;
}

# Debian's packages belong to /usr/bin's interpreters, which may not be the
# ones first in PATH.
my $ruby = interpreter('-e', "require 'active_record'; require 'pg'",
	$ENV{RUBY}, '/usr/bin/ruby', 'ruby');
my $python = interpreter('-c', 'import sqlalchemy, psycopg2',
	$ENV{PYTHON}, '/usr/bin/python3', 'python3');
ok(defined $ruby, 'a ruby with ActiveRecord and pg is installed')
  or diag('install Debian\'s ruby-activerecord and ruby-pg (make test does, as root)');
ok(defined $python, 'a python3 with SQLAlchemy and psycopg2 is installed')
  or diag('install Debian\'s python3-sqlalchemy and python3-psycopg2 (make test does, as root)');

my $node = start_preloaded_node('orm');
set_node($node);
$node->safe_psql('postgres', 'CREATE EXTENSION lockfence');

local $ENV{PGHOST} = $node->host;
local $ENV{PGPORT} = $node->port;
local $ENV{PGDATABASE} = 'postgres';
local $ENV{PGUSER} = scalar getpwuid($<);
local $ENV{LF_TIME_SCALE} = secs(1);

# Run one client; its check lines become checks of this file.
sub run_client
{
	my ($name, @command) = @_;
	my ($out, $err) = ('', '');
	my $ran = eval {
		IPC::Run::run(\@command, '<', \undef, '>', \$out, '2>', \$err,
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	};
	my $checks = 0;
	for my $line (split /\n/, $out)
	{
		if ($line =~ /^(not )?ok - (.*)$/)
		{
			ok(!defined $1, $2);
			$checks++;
		}
		elsif ($line =~ /^# ?(.*)$/)
		{
			diag("$name: $1");
		}
	}
	ok($ran, "$name exits with status 0") or diag("$name stderr:\n$err");
	like($out, qr/^done: $checks checks, 0 failed$/m,
		"$name ran to its end ($checks checks)");
	cmp_ok($checks, '>', 10, "$name made its checks");
}

SKIP:
{
	skip 'no ruby with ActiveRecord', 1 unless defined $ruby;
	run_client('activerecord', $ruby, 't/orm/activerecord_test.rb');
}
SKIP:
{
	skip 'no python3 with SQLAlchemy', 1 unless defined $python;
	run_client('sqlalchemy', $python, 't/orm/sqlalchemy_test.py');
	run_client('raw protocols', $python, 't/orm/raw_protocols.py');
}

$node->stop;
done_testing();
