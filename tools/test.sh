#!/usr/bin/env bash
# The test command (make test): installs what is missing, checks that
# META.json and CHANGELOG.md agree with lockfence.control, checks that the
# code compiles and links against PostgreSQL 17 and 18 (check_pg_versions.sh),
# builds, installs, and runs the pg_regress, isolation and TAP suites on
# throwaway servers.
#
# As root it installs Debian packages with apt-get, installs the extension,
# and runs the suites as the unprivileged user "postgres" (PostgreSQL refuses
# to run as root) in a copy of the tree.  As another user it expects the
# packages to be present and the extension to be installable by that user.
#
# Environment: PG_CONFIG (default: PostgreSQL 15's; make test-versions runs
# it with others), PROVE_TESTS (a subset of t/*.pl), TEST_USER (default
# postgres).
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh

lf_install_packages
perl tools/check_packaging.pl
tools/check_pg_versions.sh
lf_build_and_install

if [ "$(id -u)" -ne 0 ]; then
	make PG_CONFIG="$PG_CONFIG" installcheck ${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"}
	exit
fi

# Run the suites as $TEST_USER in a private copy of the tree.
work=$(mktemp -d /tmp/lockfence-test.XXXXXX)
lf_copy_tree "$src" "$work"
chown -R "$TEST_USER" "$work"

status=0
runuser -u "$TEST_USER" -- make -C "$work" PG_CONFIG="$PG_CONFIG" installcheck \
	${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"} || status=$?

# Keep the outputs where the developer looks for them.
rm -rf "$src/test_output/regress" "$src/test_output/isolation" "$src/test_output/tap_log"
mkdir -p "$src/test_output"
cp -r "$work/test_output/." "$src/test_output/" 2>/dev/null || true
[ -d "$work/tmp_check/log" ] && cp -r "$work/tmp_check/log" "$src/test_output/tap_log"

if [ "$status" -ne 0 ]; then
	for diffs in "$work"/test_output/*/regression.diffs; do
		[ -s "$diffs" ] && { echo "=== $diffs"; cat "$diffs"; }
	done
	for log in "$work"/tmp_check/log/regress_log_*; do
		[ -f "$log" ] && { echo "=== $log (last 60 lines)"; tail -n 60 "$log"; }
	done
	echo "lockfence tests FAILED (outputs in test_output/)" >&2
else
	rm -rf "$work"
	echo "lockfence tests passed"
fi
exit "$status"
