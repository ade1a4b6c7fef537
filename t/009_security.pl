# Security: search_path capture and privileges.
#
# A hostile schema first in search_path shadows the operators and functions
# the install script and the SQL built by lockfence could resolve through
# search_path.  Each shadowing object records its call in an audit table and
# then behaves like the real one, so nothing else fails; the audit table
# must stay empty through CREATE EXTENSION and normal use.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use LockfenceTest;

my $node = start_preloaded_node('security');

$node->safe_psql('postgres', q{
	CREATE TABLE public.audit (what text);
	GRANT INSERT ON public.audit TO PUBLIC;
	CREATE SCHEMA evil;
	GRANT USAGE ON SCHEMA evil TO PUBLIC;
});

# shadow "=", "<" and "<>" for the types lockfence's SQL compares, and a few
# functions by name
my @types = ('integer', 'bigint', 'text', 'name', 'oid', 'regclass');
foreach my $t (@types)
{
	foreach my $op (['=', 'eq', 'OPERATOR(pg_catalog.=)'],
		['<', 'lt', 'OPERATOR(pg_catalog.<)'],
		['<>', 'ne', 'OPERATOR(pg_catalog.<>)'])
	{
		my ($sym, $word, $real) = @$op;
		(my $fn = "evil_${word}_$t") =~ s/ /_/g;
		$node->safe_psql('postgres', qq{
			CREATE FUNCTION evil.$fn(a $t, b $t) RETURNS boolean
			LANGUAGE plpgsql AS \$\$
			BEGIN
				INSERT INTO public.audit VALUES ('$sym($t)');
				RETURN a $real b;
			END \$\$;
			CREATE OPERATOR evil.$sym (LEFTARG = $t, RIGHTARG = $t, FUNCTION = evil.$fn);
		});
	}
}
$node->safe_psql('postgres', q{
	CREATE FUNCTION evil.format(fmt text, VARIADIC args text[]) RETURNS text
		LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.audit VALUES ('format'); RETURN fmt; END $$;
	CREATE FUNCTION evil.quote_ident(text) RETURNS text
		LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.audit VALUES ('quote_ident'); RETURN $1; END $$;
	CREATE FUNCTION evil.now() RETURNS timestamptz
		LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.audit VALUES ('now'); RETURN pg_catalog.now(); END $$;
	CREATE FUNCTION evil.acquire(name text, lease interval DEFAULT NULL, timeout interval DEFAULT NULL) RETURNS bigint
		LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.audit VALUES ('acquire'); RETURN 1; END $$;
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.audit'),
	'0', 'the hostile objects are in place and unused');

my $hostile = "SET search_path = evil, public, pg_catalog;\n";

# install with the hostile path
$node->safe_psql('postgres', $hostile . 'CREATE EXTENSION lockfence;');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.audit'),
	'0', 'CREATE EXTENSION ran none of the hostile objects');

# normal use with the hostile path: every function, both triggers, the views
$node->safe_psql('postgres', $hostile . q{
	CREATE TABLE public.accounts (id integer PRIMARY KEY, balance bigint, fence_token bigint, lock_version integer NOT NULL DEFAULT 0);
	INSERT INTO public.accounts VALUES (1, 100, NULL), (2, 100, NULL);
	CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON public.accounts
		FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'account:', 'id');
	CREATE TRIGGER version BEFORE UPDATE ON public.accounts
		FOR EACH ROW EXECUTE FUNCTION lockfence.lock_version_check();
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.audit'),
	'0', 'setting up the test table ran none of the hostile objects');

$node->safe_psql('postgres', $hostile . q{
	DO $$
	DECLARE
		t bigint;
		t2 bigint;
	BEGIN
		t := lockfence.acquire('account:1', '1 min', '1 s');
		PERFORM lockfence.renew('account:1', t, '2 min');
		PERFORM lockfence.is_held('account:1', t);
		UPDATE public.accounts SET balance = 90, fence_token = t, lock_version = 0 WHERE id OPERATOR(pg_catalog.=) 1;
		PERFORM lockfence.pin('account:1', t);
		PERFORM lockfence.release('account:1', t);
		t2 := lockfence.try_acquire_session('account:2', '1 min');
		PERFORM lockfence.acquire_xact('x');
		PERFORM lockfence.try_acquire_xact('y');
		PERFORM lockfence.lock_row('public.accounts', 2, '1 s');
		PERFORM lockfence.lock_rows('public.accounts', ARRAY[2, 1], '1 s', 'share');
		PERFORM lockfence.force_release('account:2');
		PERFORM count(*) FROM lockfence.locks;
		PERFORM count(*) FROM lockfence.stats;
	END $$;
});
is($node->safe_psql('postgres', 'SELECT string_agg(DISTINCT what, \', \') FROM public.audit'),
	'', 'calls, triggers and views ran none of the hostile objects');
is($node->safe_psql('postgres', 'SELECT balance, lock_version FROM public.accounts WHERE id = 1'),
	'90|1', 'and did their work');

# ---- privileges ----
$node->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE mallory LOGIN;
});
my $token = $node->safe_psql('postgres',
	"SET ROLE alice; SELECT lockfence.acquire('alice:job', '1 h')");
ok($token > 0, 'an ordinary role can take locks (public by design)');

is($node->safe_psql('postgres',
		"SET ROLE mallory; SELECT token IS NULL, holder_pid IS NOT NULL FROM lockfence.locks WHERE name = 'alice:job'"),
	't|t', 'another role sees the lock but not its token');
is($node->safe_psql('postgres',
		"SET ROLE alice; SELECT token FROM lockfence.locks WHERE name = 'alice:job'"),
	$token, 'the holder\'s role sees its token');
is($node->safe_psql('postgres',
		"SELECT token FROM lockfence.locks WHERE name = 'alice:job'"),
	$token, 'a superuser sees it too');

my ($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE mallory; SELECT lockfence.force_release('alice:job')");
like($err, qr/permission denied for function force_release/,
	'an unprivileged role cannot force-release');
is($node->safe_psql('postgres',
		"SET ROLE mallory; SELECT lockfence.release('alice:job', $token + 1), lockfence.renew('alice:job', $token + 1, '1 s'), lockfence.is_held('alice:job', $token + 1)"),
	'f|f|f', 'nor release, renew or probe it without the token');
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE mallory; SELECT lockfence.pin('alice:job', $token + 1)");
like($err, qr/stale fence token for lock "alice:job"/, 'nor pin it');
is($node->safe_psql('postgres',
		"SET ROLE mallory; SELECT lockfence.release('alice:job', $token), lockfence.renew('alice:job', $token, '1 s'), lockfence.is_held('alice:job', $token)"),
	'f|f|f', 'nor with her very token: a lease belongs to its role');
my $log_offset = -s $node->logfile;
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE mallory; SELECT lockfence.pin('alice:job', 9223372036854775807)");
like($err, qr/a lease of another role holds it/,
	'an LF001 tells another role only that the lock is held');
unlike($err, qr/\b$token\b/, '... and shows it no token of hers');
unlike(slurp_file($node->logfile, $log_offset), qr/\b$token\b/,
	'... nor does the server log');
is($node->safe_psql('postgres',
		"SELECT lockfence.is_held('alice:job', $token)"),
	't', 'alice still holds it');

# another database's locks are invisible
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION lockfence');
is($node->safe_psql('other', "SET ROLE mallory; SELECT count(*) FROM lockfence.locks"),
	'0', 'the view shows nothing of another database');
is($node->safe_psql('other', "SET ROLE mallory; SELECT lockfence.is_held('alice:job', $token)"),
	'f', 'and a token is only good in its own database');

# lockfence_admin members may force-release; the role exists once
$node->safe_psql('postgres', 'GRANT lockfence_admin TO mallory');
is($node->safe_psql('postgres',
		"SET ROLE mallory; SELECT token FROM lockfence.locks WHERE name = 'alice:job'"),
	$token, 'members of lockfence_admin see every token');
is($node->safe_psql('postgres',
		"SET ROLE mallory; SELECT lockfence.force_release('alice:job')"),
	't', 'a member of lockfence_admin can force-release');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_roles WHERE rolname = 'lockfence_admin'"),
	'1', 'installing in two databases created the admin role once');

# the install needs a superuser
($ret, $out, $err) = $node->psql('other',
	"DROP EXTENSION lockfence; SET ROLE alice; CREATE EXTENSION lockfence");
like($err, qr/permission denied to create extension "lockfence"/,
	'an ordinary role cannot install the extension');

# a role lockfence_admin made by someone else, able to log in, is not adopted
$node->safe_psql('postgres', q{
	CREATE DATABASE fresh;
	DROP OWNED BY lockfence_admin;
});
$node->safe_psql('other', 'DROP EXTENSION IF EXISTS lockfence');
$node->safe_psql('postgres', q{
	DROP EXTENSION lockfence CASCADE;
	DROP ROLE lockfence_admin;
	CREATE ROLE lockfence_admin LOGIN PASSWORD 'chosen-by-mallory';
});
($ret, $out, $err) = $node->psql('fresh', 'CREATE EXTENSION lockfence');
like($err, qr/role "lockfence_admin" exists and is not a plain NOLOGIN role/,
	'CREATE EXTENSION refuses a lockfence_admin that can log in');
$node->safe_psql('postgres', 'ALTER ROLE lockfence_admin NOLOGIN PASSWORD NULL');
$node->safe_psql('fresh', 'CREATE EXTENSION lockfence');
is($node->safe_psql('fresh',
		"SELECT count(*) FROM pg_extension WHERE extname = 'lockfence'"),
	'1', 'made plain, it is adopted');

# a schema that a superuser did not create is refused at install
$node->safe_psql('postgres', 'CREATE DATABASE squat OWNER mallory');
$node->safe_psql('squat', q{
	SET ROLE mallory;
	CREATE SCHEMA lockfence;
	CREATE FUNCTION lockfence.release(name varchar, token int) RETURNS boolean
		LANGUAGE sql AS 'SELECT true';
});
($ret, $out, $err) = $node->psql('squat', 'CREATE EXTENSION lockfence');
like($err, qr/schema "lockfence" is not owned by a superuser/,
	'CREATE EXTENSION refuses a schema squatted by the database owner');
is($node->safe_psql('squat',
		"SELECT count(*) FROM pg_extension WHERE extname = 'lockfence'"),
	'0', '... and installs nothing');
$node->safe_psql('squat', q{
	DROP SCHEMA lockfence CASCADE;
	CREATE SCHEMA lockfence;
	CREATE FUNCTION lockfence.release(name varchar, token int) RETURNS boolean
		LANGUAGE sql AS 'SELECT true';
});
($ret, $out, $err) = $node->psql('squat', 'CREATE EXTENSION lockfence');
like($err, qr/schema "lockfence" is not empty/,
	'it refuses a superuser\'s schema that holds objects already');
$node->safe_psql('squat', 'DROP SCHEMA lockfence CASCADE; CREATE EXTENSION lockfence');
is($node->safe_psql('squat',
		"SELECT r.rolsuper FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE nspname = 'lockfence'"),
	't', 'once the schema is gone it installs, into a schema of a superuser');
($ret, $out, $err) = $node->psql('squat', 'SET ROLE mallory; DROP SCHEMA lockfence CASCADE');
like($err, qr/must be owner of schema lockfence/,
	'which the database owner cannot drop');

$node->stop;
done_testing();
