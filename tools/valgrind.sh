#!/usr/bin/env bash
# make valgrind: run the pg_regress and isolation suites against a server
# running under valgrind (memcheck), and fail if any valgrind error has a
# frame in lockfence.so.  PostgreSQL's own code, built without valgrind
# annotations here, reports errors of its own; those are listed in the log
# but only lockfence's count.
#
# As root the server runs as $TEST_USER (postgres).  Takes several minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh
LF_PACKAGES="$LF_PACKAGES valgrind"
lf_install_packages
lf_build_and_install
bindir=$(lf_bindir)

if [ "$(id -u)" -eq 0 ]; then
	run_pg() { runuser -u "$TEST_USER" -- "$@"; }
else
	run_pg() { "$@"; }
fi

work=$(mktemp -d /tmp/lockfence-valgrind.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$work"
port=$((20000 + RANDOM % 20000))
cleanup() {
	run_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

run_pg "$bindir/initdb" -D "$work/data" -A trust >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
shared_preload_libraries = 'lockfence'
lockfence.max_locks = 64
max_prepared_transactions = 2
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
CONF

# pg_ctl -p starts this wrapper, which runs postgres under valgrind
mkdir -p "$work/bin"
cat >"$work/bin/postgres" <<WRAP
#!/bin/sh
exec valgrind --quiet --trace-children=yes --track-origins=yes \
	--error-limit=no --num-callers=30 --log-file=$work/valgrind.%p.log \
	$bindir/postgres "\$@"
WRAP
chmod 755 "$work/bin/postgres"
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER" "$work"

run_pg "$bindir/pg_ctl" -p "$work/bin/postgres" -D "$work/data" -l "$work/server.log" -t 300 -w start

pgxs=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
regress_status=0
cp -r "$src/sql_tests" "$src/expected" "$src/specs" "$work/"
mkdir -p "$work/in" && ln -sfn ../sql_tests "$work/in/sql" && ln -sfn ../expected "$work/in/expected" && ln -sfn ../specs "$work/in/specs"
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER" "$work"
tests=$(cd sql_tests && ls *.sql | sed 's/\.sql$//' | sort)
specs=$(cd specs && ls *.spec | sed 's/\.spec$//' | sort)
run_pg "$pgxs/src/test/regress/pg_regress" --inputdir="$work/in" --outputdir="$work/regress" \
	--bindir="$bindir" --host="$work" --port="$port" --load-extension=lockfence \
	--dbname=lockfence_valgrind $tests || regress_status=$?
run_pg "$pgxs/src/test/isolation/pg_isolation_regress" --inputdir="$work/in" --outputdir="$work/isolation" \
	--bindir="$bindir" --host="$work" --port="$port" --load-extension=lockfence \
	--dbname=lockfence_valgrind_iso $specs || regress_status=$?

run_pg "$bindir/pg_ctl" -D "$work/data" -m fast -t 300 -w stop >/dev/null
trap - EXIT

# Errors with a frame in lockfence: valgrind names the object
# (lockfence.so) or, as the module has debug information, its source files.
# Debian's postgres binary has no debug information, so a file name such as
# shmem.c in a frame can only be lockfence's.
frames='lockfence\.so|\((lockfence|shmem|fence_token|lock_table|lock_wait|backend_locks|sql_api|views|fence_check|row_locks|lock_version|role_quota)\.c:[0-9]+\)'
ours=$(grep -lE "$frames" "$work"/valgrind.*.log 2>/dev/null || true)
echo "valgrind logs: $work/valgrind.*.log ($(ls "$work"/valgrind.*.log | wc -l) processes)"
if [ -n "$ours" ]; then
	echo "valgrind found errors in lockfence code:"
	for f in $ours; do grep -B10 -A20 -E "$frames" "$f" | head -80; done
	exit 1
fi
echo "no valgrind error has a frame in lockfence.so"
[ "$regress_status" -eq 0 ] || { echo "but the suites failed under valgrind (status $regress_status); see $work"; exit "$regress_status"; }
echo "suites passed under valgrind"
