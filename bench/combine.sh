#!/usr/bin/env bash
# Combine the summaries of several make bench runs: for every check, the
# value of each run, the median of those values and its verdict against the
# target, and the rounds that met the target over all runs.  One run's
# ratio is already the median of its rounds; the targets ask for
# the median of at least three runs, and on a noisy machine one run's
# alternating rounds can land on either side of a 5% target.
#
#   ./bench/combine.sh bench/results-A.txt bench/results-B.txt bench/results-C.txt
#
# Reads the "=== SUMMARY" section that bench/run.sh prints (copied or
# redirected into a file); a check missing from some runs is combined over
# the runs that have it, and its last column says over how many.
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 RESULTS_FILE RESULTS_FILE..." >&2
	exit 2
fi
for f in "$@"; do
	[ -r "$f" ] || { echo "combine.sh: cannot read $f" >&2; exit 2; }
	grep -q '^=== SUMMARY' "$f" || { echo "combine.sh: $f has no === SUMMARY section" >&2; exit 2; }
done

exec perl -e '
use strict;
use warnings;

my (@order, %rows, @files);
for my $file (@ARGV) {
	open(my $fh, "<", $file) or die "combine.sh: $file: $!\n";
	my ($in_summary, $commit) = (0, "?");
	while (my $line = <$fh>) {
		chomp $line;
		$commit = $1 if $line =~ /lockfence built from \S+ \((\w+)\)/;
		if ($line =~ /^=== SUMMARY/) { $in_summary = 1; next; }
		next unless $in_summary;
		last if $line =~ /^===/;
		# "  section  check  value unit  target  result  k/n", as run.sh prints it
		next unless $line =~ /^  (\S+)\s+(.*?)\s+(-?\d+(?:\.\d+)?)(x| \w+)\s+(.*?)\s*\b(PASS|MISS|info)\b\s*(?:(\d+)\/(\d+))?\s*$/;
		my ($section, $check, $value, $unit, $target, $result, $met, $rounds) = ($1, $2, $3, $4, $5, $6, $7, $8);
		my $key = "$section\t$check";
		unless ($rows{$key}) {
			push @order, $key;
			$rows{$key} = { section => $section, check => $check, unit => $unit,
							target => $target, info => $result eq "info", values => {},
							met => 0, rounds => 0 };
		}
		my $row = $rows{$key};
		$row->{values}{$file} = $value;
		$row->{passed}{$file} = $result eq "PASS" ? 1 : 0;
		if (defined $rounds) { $row->{met} += $met; $row->{rounds} += $rounds; }
	}
	close $fh;
	push @files, [$file, $commit];
}

sub median {
	my @v = sort { $a <=> $b } @_;
	return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

# The verdict of the median run.  Values are printed rounded (0.95x), so a
# run that met ">= 0.952x" and one that missed it can show the same value;
# the verdict of each run, from its unrounded value, orders them: at equal
# values, a miss ranks below a pass for a lower bound and above it for an
# upper bound.  With an even number of runs the two middle runs must agree,
# else the rounded median decides.
sub median_verdict {
	my ($row, $files, $median) = @_;
	my $upper = $row->{target} =~ /^</;
	my @runs = sort {
		$a->[0] <=> $b->[0] || ($upper ? $b->[1] <=> $a->[1] : $a->[1] <=> $b->[1])
	} map { [$row->{values}{$_}, $row->{passed}{$_}] }
	  grep { defined $row->{values}{$_} } @$files;
	my @middle = @runs % 2 ? ($runs[$#runs / 2]) : @runs[@runs / 2 - 1, @runs / 2];
	my $passes = grep { $_->[1] } @middle;
	return "PASS" if $passes == @middle;
	return "MISS" if $passes == 0;
	my $ok = meets($median, $row->{target});
	return !defined $ok ? "?" : $ok ? "PASS" : "MISS";
}

sub show {
	my ($v, $unit) = @_;
	return "-" unless defined $v;
	return $unit eq "x" ? sprintf("%.2fx", $v) : sprintf("%.1f%s", $v, $unit);
}

# the verdict of the median against a target as run.sh prints it: ">= 0.95x",
# "> 1x", "<= 100 us"
sub meets {
	my ($v, $target) = @_;
	return undef unless $target =~ /^(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)/;
	my ($op, $t) = ($1, $2);
	return $op eq ">=" ? $v >= $t : $op eq "<=" ? $v <= $t : $op eq ">" ? $v > $t : $v < $t;
}

printf "combined %d runs:\n", scalar @files;
printf "  run %d: %s (commit %s)\n", $_ + 1, $files[$_][0], $files[$_][1] for 0 .. $#files;
print "\n";
printf "  %-8s %-50s", "section", "check";
printf " %8s", "run " . ($_ + 1) for 0 .. $#files;
printf "  %10s  %-10s %-6s %s\n", "median", "target", "result", "rounds meeting it, all runs";
my ($pass, $miss) = (0, 0);
for my $key (@order) {
	my $row = $rows{$key};
	my @present = grep { defined } map { $row->{values}{$_->[0]} } @files;
	my $median = median(@present);
	my $result = "info";
	unless ($row->{info}) {
		$result = median_verdict($row, [map { $_->[0] } @files], $median);
		$pass++ if $result eq "PASS";
		$miss++ if $result eq "MISS";
	}
	printf "  %-8s %-50s", $row->{section}, $row->{check};
	printf " %8s", show($row->{values}{$_->[0]}, $row->{unit}) for @files;
	printf "  %10s  %-10s %-6s %s\n", show($median, $row->{unit}), $row->{target}, $result,
		$row->{rounds} ? "$row->{met}/$row->{rounds}" .
			(@present < @files ? " (" . scalar(@present) . " runs)" : "") : "";
}
printf "\n  %d PASS, %d MISS on the median of the runs\n", $pass, $miss;
' "$@"
