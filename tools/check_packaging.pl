#!/usr/bin/perl
# Checks that the packaging metadata agrees with the extension (run by
# tools/test.sh, from the top of the tree):
#   - META.json (PGXN meta spec 1.0.0) has the required keys; the
#     distribution version is a semantic version X.Y.Z whose X.Y is
#     lockfence.control's default_version; provides.lockfence has that same
#     X.Y.Z (PGXN requires semantic versions there too), default_version as
#     x_extension_version, and files that exist;
#   - CHANGELOG.md has an entry for default_version;
#   - CREATE EXTENSION can reach default_version: from the one install
#     script (sql/lockfence--X.sql, which META.json names) through upgrade
#     scripts (sql/lockfence--X--Y.sql), as PostgreSQL itself chains them;
#     every upgrade script leads towards default_version.
# Prints one line when all is well; exits 1 with the problems otherwise.

use strict;
use warnings;

use JSON::PP;

my @problems;
sub problem { push @problems, @_; return; }

sub slurp
{
	my ($file) = @_;
	open(my $fh, '<', $file) or die "cannot read $file: $!\n";
	local $/;
	my $text = <$fh>;
	close($fh);
	return $text;
}

my ($ext_version) =
  slurp('lockfence.control') =~ /^\s*default_version\s*=\s*'([^']+)'/m
  or die "lockfence.control has no default_version\n";

my $meta = eval { decode_json(slurp('META.json')) }
  or die "META.json is not valid JSON: $@";

for my $key (qw(name abstract version maintainer license provides meta-spec))
{
	problem("META.json: \"$key\" is missing") unless defined $meta->{$key};
}
problem("META.json: name is not lockfence")
  unless ($meta->{name} // '') eq 'lockfence';
problem("META.json: license is not postgresql")
  unless ($meta->{license} // '') eq 'postgresql';
problem("META.json: meta-spec version is not 1.0.0")
  unless (($meta->{'meta-spec'} // {})->{version} // '') eq '1.0.0';

my $version = $meta->{version} // '';
if ($version =~ /^(\d+)\.(\d+)\.(\d+)$/)
{
	problem("META.json: version $version does not match default_version "
		  . "'$ext_version' of lockfence.control (expected $ext_version.N)")
	  unless "$1.$2" eq $ext_version;
}
else
{
	problem("META.json: version '$version' is not a semantic version X.Y.Z");
}

my $p = ($meta->{provides} // {})->{lockfence};
if (!$p)
{
	problem('META.json: provides has no lockfence');
}
else
{
	problem("META.json: provides.lockfence.version is not $version")
	  unless ($p->{version} // '') eq $version;
	problem("META.json: provides.lockfence.x_extension_version is not '$ext_version'")
	  unless ($p->{x_extension_version} // '') eq $ext_version;
	problem("META.json: provides.lockfence.file is not the install script")
	  unless ($p->{file} // '') =~ m{^sql/lockfence--[\d.]+\.sql$};
	for my $f (qw(file docfile))
	{
		problem("META.json: provides.lockfence.$f names no file")
		  unless defined $p->{$f} && -f $p->{$f};
	}
}

my $pg = ((($meta->{prereqs} // {})->{runtime} // {})->{requires} // {})
  ->{PostgreSQL};
problem('META.json: prereqs.runtime.requires.PostgreSQL is missing')
  unless defined $pg;

# The install scripts and the upgrade steps, and the versions reachable.
my @install = map { m{^sql/lockfence--([\d.]+)\.sql$} ? $1 : () } glob('sql/*.sql');
my %step = map { m{^sql/lockfence--([\d.]+)--([\d.]+)\.sql$} ? ($1 => $2) : () }
  glob('sql/*.sql');
problem('sql/ holds ' . scalar(@install) . ' install scripts, not one: '
	  . 'later versions are reached by upgrade scripts')
  unless @install == 1;
if (@install == 1)
{
	my %seen;
	my $v = $install[0];
	$v = $step{$v} while exists $step{$v} && !$seen{$v}++;
	problem("CREATE EXTENSION cannot reach $ext_version: the upgrade scripts "
		  . "from $install[0] end at $v")
	  unless $v eq $ext_version;
	problem("META.json: provides.lockfence.file is not sql/lockfence--$install[0].sql")
	  unless $p && ($p->{file} // '') eq "sql/lockfence--$install[0].sql";
	problem("an upgrade script leads away from $ext_version: "
		  . join(', ', map { "$_--$step{$_}" } grep { !$seen{$_} } sort keys %step))
	  if grep { !$seen{$_} } keys %step;
}

my $changes = -f 'CHANGELOG.md' ? slurp('CHANGELOG.md') : '';
problem("CHANGELOG.md has no entry (## heading) for $ext_version")
  unless $changes =~ /^##\s.*\b\Q$ext_version\E\b/m;

if (@problems)
{
	print STDERR "packaging check FAILED:\n", map { "  $_\n" } @problems;
	exit 1;
}
print "packaging: META.json $version and CHANGELOG.md agree with "
  . "lockfence.control (default_version $ext_version)\n";
