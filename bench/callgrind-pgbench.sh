#!/usr/bin/env bash
# Instructions per transaction of the lock scripts of make bench, over the
# wire: a server runs under callgrind, and pgbench (itself under callgrind)
# runs each script for N1, then N2 transactions on one connection.  Each
# pgbench run has a backend of its own, so (Ir(N2) - Ir(N1)) / (N2 - N1) is
# the cost of one transaction in the backend, and likewise in pgbench,
# connection start-up and exit cancelling out.  Unlike bench/callgrind.sh
# (a single-user backend, one statement at a time) this counts the
# protocol's own work, for any of pgbench's query protocols.  Under a
# minute per protocol on the development VM:
#
#   ./bench/callgrind-pgbench.sh [SCRIPT...]
#
# (default: select1 and the lockfence and advisory-lock scripts; builds and
# installs this tree's library first, like make bench).
#
# Environment: BENCH_PROTOCOL (pgbench -M: prepared, the default, simple or
# extended; the scripts are adapted to it as make bench does), CG_N1, CG_N2
# (default 300 and 1300), PG_CONFIG, TEST_USER as for make test.
set -euo pipefail

cd "$(dirname "$0")/.."
. tools/common.sh
bindir=$(lf_bindir)
N1=${CG_N1:-300}
N2=${CG_N2:-1300}
PROTOCOL=${BENCH_PROTOCOL:-prepared}
lf_require_bench_protocol callgrind-pgbench.sh "$PROTOCOL"
[ $# -gt 0 ] || set -- select1 adv_2rt lf_2rt adv_1rt lf_1rt adv_try lf_try
command -v valgrind >/dev/null || { echo "callgrind-pgbench.sh: valgrind is not installed" >&2; exit 1; }
src=$(pwd)
lf_install_packages
lf_build_and_install
lf_require_installed_build callgrind-pgbench.sh "$src"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lockfence-cgpgbench.XXXXXX")
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$tmp"
stop_server() {
	run_pg "$bindir/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1 || true
	# the server's processes may still be writing their counts
	for _ in $(seq 30); do
		rm -rf "$tmp" 2>/dev/null && return
		sleep 1
	done
}
trap stop_server EXIT
cd "$tmp"
run_pg mkdir "$tmp/scripts" "$tmp/cg"
cp "$src"/bench/locks/*.sql "$tmp/scripts/"
lf_bench_scripts_for_protocol "$tmp/scripts" "$PROTOCOL" || {
	echo "callgrind-pgbench.sh: a lock script still casts a parameter to text" >&2
	exit 1
}
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER" "$tmp/scripts"

port=$(lf_pick_port)
lf_server_init "$tmp" "$port" <<EOF
shared_preload_libraries = 'lockfence'
lockfence.max_locks = 100000
synchronous_commit = off
jit = off
autovacuum = off
EOF
# Only backends run PostgresMain, so only they collect; callgrind writes a
# process's counts when it exits, to a file named after its pid.
run_pg bash -c "valgrind --tool=callgrind --callgrind-out-file='$tmp/cg/server.%p' \
	--toggle-collect=PostgresMain '$bindir/postgres' -D '$tmp/data' \
	>'$tmp/server.log' 2>&1 &"
for _ in $(seq 120); do
	run_pg "$bindir/pg_isready" -h "$tmp" -p "$port" -q && break
	sleep 1
done
touch "$tmp/marker"
run_pg "$bindir/psql" -h "$tmp" -p "$port" -d postgres -qX -c "CREATE EXTENSION lockfence" ||
	{ cat "$tmp/server.log" >&2; exit 1; }

total_ir() { sed -n 's/^totals: \([0-9]*\).*/\1/p' "$1"; }

# complete_files_since MARKER: the count files of backends that exited
# since MARKER was touched (a file is complete once its totals line is in).
complete_files_since() {
	local f
	for f in "$tmp"/cg/server.*; do
		[ -e "$f" ] && [ "$f" -nt "$1" ] && [ -n "$(total_ir "$f")" ] && echo "$f"
	done
	return 0
}

# wait_for_files MARKER N: until N backends have written their counts.
wait_for_files() {
	for _ in $(seq 120); do
		[ "$(complete_files_since "$1" | wc -l)" -ge "$2" ] && return 0
		sleep 0.5
	done
	echo "callgrind-pgbench.sh: no counts from the server's backends" >&2
	exit 1
}

# ir SCRIPT N: "backend pgbench" instructions of a pgbench run of N
# transactions.  pgbench also opens a connection of its own, and closes it
# before the run starts; the backend that ran the transactions exits last,
# so its file is the newer of the two.
ir() {
	local client newest f
	touch "$tmp/marker"
	sleep 0.1 # the files' times must come after the marker's
	run_pg valgrind --tool=callgrind --callgrind-out-file="$tmp/client.out" \
		"$bindir/pgbench" -h "$tmp" -p "$port" -n -M "$PROTOCOL" -c 1 -t "$2" \
		--random-seed=1 -D nkeys=1000000 -f "$tmp/scripts/$1.sql" postgres \
		>"$tmp/pgbench.log" 2>"$tmp/pgbench.err" ||
		{ cat "$tmp/pgbench.log" "$tmp/pgbench.err" >&2; exit 1; }
	grep -q "actually processed: $2/$2$" "$tmp/pgbench.log" ||
		{ cat "$tmp/pgbench.log" >&2; exit 1; }
	client=$(total_ir "$tmp/client.out")
	wait_for_files "$tmp/marker" 2
	newest=""
	for f in $(complete_files_since "$tmp/marker"); do
		if [ -z "$newest" ] || [ "$f" -nt "$newest" ]; then newest=$f; fi
	done
	echo "$(total_ir "$newest") $client"
}

wait_for_files "$tmp/marker" 1 # psql's backend, before the first run's marker

echo "pgbench -M $PROTOCOL, one client; instructions per transaction, ($N2 - $N1 transactions)"
printf '%-10s %12s %12s\n' script backend pgbench
for s in "$@"; do
	[ -f "$tmp/scripts/$s.sql" ] || { echo "callgrind-pgbench.sh: no script bench/locks/$s.sql" >&2; exit 2; }
	r1=$(ir "$s" "$N1")
	r2=$(ir "$s" "$N2")
	read -r b1 c1 <<<"$r1"
	read -r b2 c2 <<<"$r2"
	printf '%-10s %12d %12d\n' "$s" $(((b2 - b1) / (N2 - N1))) $(((c2 - c1) / (N2 - N1)))
done
lf_require_installed_build callgrind-pgbench.sh "$src"
