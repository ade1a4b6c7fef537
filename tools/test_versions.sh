#!/usr/bin/env bash
# make test-versions: the whole suite (pg_regress, isolation, TAP) and the
# demo on every PostgreSQL major version this machine can get, then a table:
# version, suites, tests passed, failed, minutes.
#
#   15           Debian's packages (what make test uses)
#   17           built from source (tools/pg_source_build.sh), when Debian's
#                archive serves its source
#   18           built from source, as a release build
#   18-cassert   built from source with --enable-cassert: PostgreSQL's and
#                lockfence's Asserts run
#
# 16 is in no Debian release, so neither its source nor its headers can be
# had here.  A version whose source the archive lists but does not serve
# (trixie's postgresql-17 on this project's mirror: 404) is reported as
# SKIPPED, or as a failure with LF_REQUIRE_VERSIONS=1.  LF_TEST_VERSIONS picks others from "15 17 18 15-cassert
# 17-cassert 18-cassert" (CI: "18-cassert", after make test on 15).  Logs go to
# test_output/versions/.  Exits non-zero when any version fails.  Each
# version after 15 also runs t/023_upgrade.pl's pg_upgrade from 15 to it.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh

versions=${LF_TEST_VERSIONS:-"15 17 18 18-cassert"}
logs=$src/test_output/versions
rm -rf "$logs"
mkdir -p "$logs"
lf_install_packages

# counts LOG: "suites passed failed" from a test.sh + demo log
counts() {
	perl -ne '
		BEGIN { ($s, $p, $f) = (0, 0, 0) }
		if (/All (\d+) tests passed/) { $s++; $p += $1 }
		if (/(\d+) of (\d+) tests failed/) { $s++; $f += $1; $p += $2 - $1 }
		if (/^Files=\d+, Tests=(\d+)/) { $s++; $tap = $1 }
		if (/^Failed (\d+)\/\d+ subtests/) { $tapf += $1 }
		if (/^test-versions-demo: (passed|FAILED)/) { $s++; $1 eq "passed" ? $p++ : $f++ }
		END {
			if (defined $tap) { $p += $tap - ($tapf // 0); $f += $tapf // 0 }
			print "$s $p $f\n";
		}' "$1"
}

# t/023_upgrade.pl upgrades a cluster of 15 to each later version under test
# (LF_UPGRADE_FROM).  Not Debian's 15 packages: their 15.20 is newer than the
# 18.6 source the archive serves, and writes a column option (pg_attver)
# that 18.6's pg_restore refuses, for any table.  So 15 from bookworm's
# source package, with this checkout's lockfence.
upgrade_from=
needs_upgrade_from=0
for v in $versions; do [ "${v%%-*}" != 15 ] && needs_upgrade_from=1; done
if [ "$needs_upgrade_from" = 1 ]; then
	if pg15_config=$(tools/pg_source_build.sh 15 2>"$logs/15-source.log"); then
		PG_CONFIG=$pg15_config lf_build_and_install >>"$logs/15-source.log" 2>&1
		upgrade_from=$("$pg15_config" --bindir)
		upgrade_from=${upgrade_from%/bin}
	else
		echo "test-versions: PostgreSQL 15 could not be built from source (see $logs/15-source.log): no upgrade from 15"
	fi
fi

failed=0
table=""
for v in $versions; do
	start=$(date +%s)
	log=$logs/$v.log
	status=ok
	major=${v%%-*}
	variant=${v#"$major"}
	variant=${variant#-}
	if [ "$v" = 15 ]; then
		pg_config=/usr/lib/postgresql/15/bin/pg_config
	else
		rc=0
		pg_config=$(tools/pg_source_build.sh "$major" $variant 2>>"$log") || rc=$?
		if [ "$rc" -eq 3 ] && [ "${LF_REQUIRE_VERSIONS:-0}" != 1 ]; then
			status=SKIPPED
			echo "test-versions: PostgreSQL $v: SKIPPED: Debian's archive lists its source but does not serve it (see $log)"
		elif [ "$rc" -ne 0 ]; then
			status=FAILED
		fi
	fi
	if [ "$status" = ok ]; then
		echo "test-versions: PostgreSQL $v ($pg_config)" | tee -a "$log"
		from=
		[ "$major" != 15 ] && from=$upgrade_from
		PG_CONFIG=$pg_config LF_UPGRADE_FROM=$from tools/test.sh >>"$log" 2>&1 ||
			status=FAILED
		if PG_CONFIG=$pg_config tools/demo.sh >>"$log.demo" 2>&1; then
			echo "test-versions-demo: passed" >>"$log"
		else
			echo "test-versions-demo: FAILED" >>"$log"
			status=FAILED
		fi
		cat "$log.demo" >>"$log"
		rm -f "$log.demo"
		# each version's outputs next to its log
		[ -d test_output/regress ] && cp -r test_output/regress "$logs/$v-regress" 2>/dev/null || true
	fi
	read -r suites passed fails <<<"$(counts "$log")"
	mins=$(awk -v s=$(($(date +%s) - start)) 'BEGIN { printf "%.1f", s / 60 }')
	[ "$status" = FAILED ] && failed=1
	table="$table$(printf '%-12s %-7s %6s %7s %7s %8s' "$v" "$status" "$suites" "$passed" "$fails" "$mins")"$'\n'
	echo "test-versions: PostgreSQL $v: $status ($mins min, log: $log)"
done

echo
printf '%-12s %-7s %6s %7s %7s %8s\n' version result suites passed failed minutes
printf '%s' "$table"
exit "$failed"
