#!/usr/bin/env bash
# lockfence's benchmarks: one driver, one section per comparison.
#
#   make bench                            the default sections, about 17 minutes on 2 vCPUs
#   make bench SECTIONS="locks fence"     the sections named
#   BENCH_QUICK=1 make bench              every section briefly: a smoke run, nothing recorded
#
# Sections (docs/benchmarking.md says what each one decides):
#   locks      pgbench throughput: lockfence against pg_advisory_lock and
#              against a lease kept as a table row, released by UPDATE or by
#              DELETE; random keys at each client count, one hot key at those
#              above 1
#   fence      pgbench throughput of a random-row UPDATE: no trigger,
#              PostgreSQL's minimal C trigger, fence_check (monotonic and
#              lease mode), the monotonic check written in PL/pgSQL
#   handoff    release to the waiter's return on one contended lock
#   inproc     nanoseconds per call inside one statement
#   callgrind  instructions per statement under callgrind: deterministic, the
#              precise figure where tps cannot resolve a few percent
#   shmem      shared memory per lock-table slot
#   scale      (not default) one client's latency while the lock table is
#              large, full, read, waited on or pushed by a role at its quota;
#              needs about 4 GB of shared memory
#   pooler     (not default) through pgbouncer in transaction pooling,
#              against pg_advisory_xact_lock
#
# Method.  A comparison runs its pgbench scripts in one server, one after the
# other, in rounds whose order reverses every other round (linear drift
# cancels), and reports each script's median tps and the median of the
# per-round ratios.  At one client the locks and fence scripts also run
# together in the same pgbench runs (every transaction picks one), which
# takes the VM's run-to-run noise out of their ratios (ratios of latency).  Every figure is printed and appended to
# bench/results.tsv (date, commit, machine, configuration, metric, value).
# Each section has a throwaway server of its own (temporary directory, unix
# socket, free port, run as $TEST_USER when started as root), stopped and
# removed at exit.  The exit status is nonzero only when something failed (a
# build, a query, a pgbench run, a lock left behind); a ratio is a finding.
#
# Environment: SECTIONS; BENCH_SECONDS (5) per pgbench run; BENCH_ROUNDS (5);
# BENCH_CLIENTS ("1 8"); BENCH_PROTOCOL (prepared; simple or extended as
# drivers that do not prepare); BENCH_QUICK; PG_CONFIG, TEST_USER as for
# make test.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh

QUICK=${BENCH_QUICK:-}
quick() { if [ -n "$QUICK" ]; then echo "$1"; else echo "$2"; fi; }
SECTIONS=${SECTIONS:-locks fence handoff inproc callgrind shmem}
RUN_SECONDS=${BENCH_SECONDS:-$(quick 1 5)}
ROUNDS=${BENCH_ROUNDS:-$(quick 1 5)}
CLIENTS=${BENCH_CLIENTS:-$(quick 8 "1 8")}
PROTOCOL=${BENCH_PROTOCOL:-prepared}
NKEYS=1000000                           # random keys: a collision is rare
NROWS=$(quick 1000 100000)              # rows (and leases) of the fence tables
INPROC_N=$(quick 10000 1000000)         # calls per in-process measurement
HANDOFF_N=$(quick 5 200)                # hand-offs per lock kind
CG_N1=$(quick 10 300) CG_N2=$(quick 30 900) # statements per callgrind session
SCALE_SIZES=$(quick 1000 "1000 100000 1000000 10000000")
SCALE_EXPIRING=$(quick 1000 1000000)
SCALE_WAITERS=$(quick 20 1000)
POOLER_CLIENTS=8
NCPU=$(nproc)
lf_require_bench_protocol run.sh "$PROTOCOL"
for s in $SECTIONS; do
	[[ " locks fence handoff inproc callgrind shmem scale pooler " == *" $s "* ]] ||
		{ echo "run.sh: unknown section '$s'" >&2; exit 2; }
done

fail() { echo "run.sh: $*" >&2; exit 1; }
heading() { printf '\n=== %s\n' "$*"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
clients() { if [ "$1" = 1 ]; then echo "1 client"; else echo "$1 clients"; fi; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# record CONFIGURATION METRIC VALUE: append to bench/results.tsv (not in a
# quick run, whose figures mean nothing)
record() { [ -n "$QUICK" ] || lf_bench_record "$@"; }

# the callgrind section also needs valgrind
[[ " $SECTIONS " == *" callgrind "* ]] && LF_PACKAGES+=" valgrind"
lf_install_packages
lf_build_and_install
bindir=$(lf_bindir)
pgversion=$("$bindir/postgres" --version | awk '{ print $3 }')

tmp=$(mktemp -d /tmp/lockfence-bench.XXXXXX)
chmod 755 "$tmp"
server="" port=""
cleanup() {
	jobs -p | xargs -r kill 2>/dev/null || true
	[ -f "$tmp/pgbouncer.pid" ] && kill "$(cat "$tmp/pgbouncer.pid")" 2>/dev/null
	[ -n "$server" ] && lf_server_stop "$server"
	rm -rf "$tmp"
}
trap cleanup EXIT

# The pgbench scripts, readable by the server's user, adapted to the protocol.
mkdir "$tmp/scripts"
cp bench/setup.sql bench/fence_setup.sql bench/locks/*.sql bench/fence/*.sql bench/pooler/*.sql \
	bench/scale/*.sql bench/scale/victim.py "$tmp/scripts/"
lf_bench_scripts_for_protocol "$tmp/scripts" "$PROTOCOL" || fail "could not adapt the scripts to $PROTOCOL"
chmod 644 "$tmp"/scripts/*
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER" "$tmp"
dbuser=$(run_pg id -un)                 # the servers' superuser
: >"$tmp/processed"

# init_datadir NAME: a data directory in $tmp/NAME/data with lockfence
# preloaded and the settings on standard input; sets port.
init_datadir() {
	port=$(lf_pick_port) || fail "no free port"
	run_pg mkdir "$tmp/$1"
	{ echo "shared_preload_libraries = 'lockfence'"; echo "jit = off"; cat; } |
		lf_server_init "$tmp/$1" "$port" || fail "initdb failed"
}
# start_server NAME: a new server in $tmp/NAME, settings as for init_datadir.
start_server() {
	init_datadir "$1"
	server=$tmp/$1
	lf_server_start "$server" "$src" || fail "the $1 server did not start"
}
stop_server() { lf_server_stop "$server"; server=""; }
sql() { run_pg "$bindir/psql" -h "$server" -p "$port" -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# no_locks_left WHERE: fail unless lockfence.locks is empty
no_locks_left() {
	local n
	n=$(sql -c "SELECT count(*) FROM lockfence.locks") || fail "could not read lockfence.locks"
	[ "$n" = 0 ] || fail "$n locks still held after $1"
}

# pgbench_run CLIENTS OPTION...: one pgbench run of RUN_SECONDS against the
# server (or via_host and via_port: pgbouncer); prints its output.  An
# error or any failed transaction fails the benchmark.
via_host="" via_port=""
pgbench_run() {
	local c=$1 out
	shift
	out=$(run_pg "$bindir/pgbench" -h "${via_host:-$server}" -p "${via_port:-$port}" -n -M "$PROTOCOL" \
		-c "$c" -j $((c < NCPU ? c : NCPU)) -T "$RUN_SECONDS" "$@" postgres 2>&1) ||
		{ echo "$out" >&2; fail "pgbench $* failed"; }
	grep -q '^number of failed transactions: 0 ' <<<"$out" ||
		{ echo "$out" >&2; fail "pgbench $* had failed transactions"; }
	echo "$out"
}

# pgbench_tps SCRIPT CLIENTS [OPTION...]: one run of SCRIPT; prints its tps
# and adds "SCRIPT TRANSACTIONS" to $tmp/processed.
pgbench_tps() {
	local script=$1 c=$2 out
	shift 2
	out=$(pgbench_run "$c" -f "$tmp/scripts/$script.sql" "$@") || exit 1
	echo "$script $(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")" >>"$tmp/processed"
	sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out"
}

# rounds GROUP CLIENTS "OPTIONS" SCRIPT...: ROUNDS rounds of one run of each
# script, the order reversed every other round; TPS[GROUP SCRIPT] collects
# each round's tps.  Prints the median tps of each script.
declare -A TPS
rounds() {
	local group=$1 c=$2 opts=$3 r s t order
	shift 3
	for r in $(seq "$ROUNDS"); do
		order=("$@")
		[ $((r % 2)) -eq 0 ] && mapfile -t order < <(printf '%s\n' "$@" | tac)
		for s in "${order[@]}"; do
			# shellcheck disable=SC2086 # OPTIONS are words
			t=$(pgbench_tps "$s" "$c" $opts) || exit 1
			TPS[$group $s]+="$t "
		done
	done
	printf '  median tps:'
	for s in "$@"; do printf ' %s %.0f,' "$s" "$(median <<<"${TPS[$group $s]}")"; done
	echo
}

# compare GROUP A B CONFIGURATION LABEL: the median of the per-round ratios
# tps(A) / tps(B), printed with each round's ratio and recorded.
compare() {
	local -a a b
	local i ratios="" m
	read -ra a <<<"${TPS[$1 $2]}"
	read -ra b <<<"${TPS[$1 $3]}"
	for i in "${!a[@]}"; do ratios+="$(calc %.3f "${a[i]} / ${b[i]}") "; done
	m=$(calc %.3f "$(median <<<"$ratios")")
	printf '  %-64s %6.2f   rounds: %s\n' "$5" "$m" "$ratios"
	record "$4" "tps ratio, median of rounds: $5" "$m"
}

# samerun GROUP CLIENTS "OPTIONS" SCRIPT...: ROUNDS pgbench runs with all
# the scripts at once (each transaction picks one at random), so that every
# script meets the same conditions; TPS[GROUP SCRIPT] collects, per run, the
# inverse of the script's mean latency, so compare() reads latency ratios.
samerun() {
	local group=$1 c=$2 opts=$3 r s out lat files=()
	shift 3
	for s in "$@"; do files+=(-f "$tmp/scripts/$s.sql"); done
	for r in $(seq "$ROUNDS"); do
		# shellcheck disable=SC2086 # OPTIONS are words
		out=$(pgbench_run "$c" "${files[@]}" $opts) || exit 1
		for s in "$@"; do
			lat=$(awk -v f="/$s.sql" 'index($0, "SQL script") == 1 { on = (substr($0, length($0) - length(f) + 1) == f) }
				on && /latency average =/ { sub(/.*latency average = /, ""); print $1; exit }' <<<"$out")
			[ -n "$lat" ] || { echo "$out" >&2; fail "no latency for $s in the same-run output"; }
			TPS[$group $s]+="$(calc %.3f "1000 / $lat") "
		done
	done
}

echo "lockfence benchmarks: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "machine: $NCPU CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo); PostgreSQL $pgversion; sections: $SECTIONS"
[ -n "$QUICK" ] && echo "BENCH_QUICK: a smoke run; the figures mean nothing and are not recorded"

#---- locks and fence: one server, bench/setup.sql ----

start_bench_server() {
	start_server "$1" <<EOF
lockfence.max_locks = $((NROWS * 2))
shared_buffers = 256MB
max_connections = 100
max_wal_size = 16GB
checkpoint_timeout = 1h
EOF
	sql -v nkeys="$NKEYS" -f "$tmp/scripts/setup.sql" >/dev/null || fail "bench/setup.sql failed"
}

section_locks() {
	local c config flush
	heading "locks: pgbench, $ROUNDS rounds of $RUN_SECONDS s, -M $PROTOCOL, synchronous_commit = on"
	echo "  lf_* lockfence, adv_* pg_advisory_lock; 2rt: acquire and release as two statements, 1rt: one;"
	echo "  try: try_acquire or pg_try_advisory_lock; tbl_upd, tbl_del: a lease kept as a row, released by UPDATE, DELETE"
	start_bench_server locks
	# the table lease's commits wait for WAL flushes, lockfence's do not
	flush=$(run_pg "$bindir/pg_test_fsync" -s 1 -f "$server/fsync.test" 2>&1 |
		awk '/one 8kB write/ { on = 1 } on && $1 == "fdatasync" { print $(NF - 1); exit }')
	[[ $flush =~ ^[0-9.]+$ ]] || fail "pg_test_fsync gave no fdatasync time"
	echo "  a WAL flush here (pg_test_fsync, fdatasync of one 8 kB write): $flush us"
	record "locks, PostgreSQL $pgversion" "fdatasync of one 8 kB write, us (pg_test_fsync)" "$flush"
	if [[ " $CLIENTS " == *" 1 "* ]]; then
		config="locks, random keys, 1 client, same run, $ROUNDS runs of $RUN_SECONDS s, pgbench -M $PROTOCOL, PostgreSQL $pgversion"
		echo "random keys, 1 client, all six scripts in the same runs (ratios of mean latencies)"
		samerun same/1 1 "-D nkeys=$NKEYS" lf_2rt adv_2rt lf_1rt adv_1rt lf_try adv_try
		compare same/1 lf_2rt adv_2rt "$config" "acquire; release / pg_advisory_lock; unlock"
		compare same/1 lf_1rt adv_1rt "$config" "release(acquire()) / lock and unlock in one statement"
		compare same/1 lf_try adv_try "$config" "try_acquire; release / pg_try_advisory_lock; unlock"
	fi
	for c in $CLIENTS; do
		config="locks, random keys, $(clients "$c"), $ROUNDS rounds of $RUN_SECONDS s, pgbench -M $PROTOCOL, PostgreSQL $pgversion"
		echo "random keys, $(clients "$c")"
		rounds "keys/$c" "$c" "-D nkeys=$NKEYS" lf_2rt adv_2rt lf_1rt adv_1rt lf_try adv_try tbl_upd tbl_del
		compare "keys/$c" lf_2rt adv_2rt "$config" "acquire; release / pg_advisory_lock; unlock"
		compare "keys/$c" lf_1rt adv_1rt "$config" "release(acquire()) / lock and unlock in one statement"
		compare "keys/$c" lf_try adv_try "$config" "try_acquire; release / pg_try_advisory_lock; unlock"
		compare "keys/$c" lf_2rt tbl_upd "$config" "acquire; release / table lease released by UPDATE"
		compare "keys/$c" lf_2rt tbl_del "$config" "acquire; release / table lease released by DELETE"
	done
	for c in $CLIENTS; do
		[ "$c" -gt 1 ] || continue
		config="locks, one hot key, $(clients "$c"), $ROUNDS rounds of $RUN_SECONDS s, pgbench -M $PROTOCOL, PostgreSQL $pgversion"
		echo "one hot key, $(clients "$c")"
		rounds "hot/$c" "$c" "-D nkeys=1" lf_2rt adv_2rt lf_1rt adv_1rt lf_try adv_try
		compare "hot/$c" lf_2rt adv_2rt "$config" "acquire; release / pg_advisory_lock; unlock"
		compare "hot/$c" lf_1rt adv_1rt "$config" "release(acquire()) / lock and unlock in one statement"
		compare "hot/$c" lf_try adv_try "$config" "try_acquire; release / pg_try_advisory_lock; unlock"
	done
	no_locks_left "the locks section"
	stop_server
}

section_fence() {
	local c config out tokbase tokmax nleases opts
	heading "fence: random-row UPDATE of a $NROWS-row table, pgbench, $ROUNDS rounds of $RUN_SECONDS s, -M $PROTOCOL"
	echo "  fence_plain: no trigger; fence_noop: suppress_redundant_updates_trigger(), PostgreSQL's minimal C trigger;"
	echo "  fence_mono, fence_lease: fence_check in monotonic and lease mode; fence_plpgsql: the monotonic check in PL/pgSQL"
	start_bench_server fence
	out=$(sql -v nrows="$NROWS" -f "$tmp/scripts/fence_setup.sql") || fail "bench/fence_setup.sql failed"
	read -r _ tokbase tokmax nleases <<<"$(grep '^tokbase ' <<<"$out")"
	{ [ "$nleases" = "$NROWS" ] && [ "$tokbase" = "$tokmax" ]; } ||
		fail "the row leases' tokens are not tokbase + id ($tokbase, $tokmax, $nleases rows)"
	opts="-D nrows=$NROWS -D tokbase=$tokbase"
	if [[ " $CLIENTS " == *" 1 "* ]]; then
		config="fence, $NROWS rows, 1 client, same run, $ROUNDS runs of $RUN_SECONDS s, pgbench -M $PROTOCOL, PostgreSQL $pgversion"
		echo "1 client, all five scripts in the same runs (ratios of mean latencies)"
		samerun same/fence "1" "$opts" fence_plain fence_noop fence_mono fence_lease fence_plpgsql
		compare same/fence fence_mono fence_plain "$config" "fence_check monotonic / no trigger"
		compare same/fence fence_lease fence_plain "$config" "fence_check lease mode / no trigger"
		compare same/fence fence_mono fence_noop "$config" "fence_check monotonic / minimal C trigger"
		compare same/fence fence_lease fence_noop "$config" "fence_check lease mode / minimal C trigger"
		compare same/fence fence_mono fence_plpgsql "$config" "fence_check monotonic / the check in PL/pgSQL"
	fi
	for c in $CLIENTS; do
		config="fence, $NROWS rows, $(clients "$c"), $ROUNDS rounds of $RUN_SECONDS s, pgbench -M $PROTOCOL, PostgreSQL $pgversion"
		clients "$c"
		rounds "fence/$c" "$c" "$opts" fence_plain fence_noop fence_mono fence_lease fence_plpgsql
		compare "fence/$c" fence_mono fence_plain "$config" "fence_check monotonic / no trigger"
		compare "fence/$c" fence_lease fence_plain "$config" "fence_check lease mode / no trigger"
		compare "fence/$c" fence_mono fence_noop "$config" "fence_check monotonic / minimal C trigger"
		compare "fence/$c" fence_lease fence_noop "$config" "fence_check lease mode / minimal C trigger"
		compare "fence/$c" fence_mono fence_plpgsql "$config" "fence_check monotonic / the check in PL/pgSQL"
	done
	out=$(sql -c "SELECT count(*) FILTER (WHERE lockfence.release('acct:' || id, fence_token)) FROM bench.acct_lease") ||
		fail "could not release the row leases"
	[ "$out" = "$NROWS" ] || fail "only $out of $NROWS row leases were still held at the end"
	no_locks_left "the fence section"
	stop_server
}

#---- handoff: bench.handoff() drives a waiter through dblink ----

section_handoff() {
	local out config="handoff, $HANDOFF_N per kind, alternating, PostgreSQL $pgversion"
	heading "handoff: release to the waiter's return on one lock, $HANDOFF_N each, alternating (microseconds)"
	start_bench_server handoff
	out=$(sql -F ' ' -c "
		SELECT kind, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us)::numeric, 1),
		       round(percentile_cont(0.9) WITHIN GROUP (ORDER BY us)::numeric, 1)
		FROM bench.handoff($HANDOFF_N, 'host=$server port=$port dbname=postgres')
		GROUP BY kind ORDER BY kind DESC") || fail "the handoff measurement failed"
	printf '  %-10s %10s %10s\n' lock median p90
	while read -r kind p50 p90; do
		printf '  %-10s %10s %10s\n' "$kind" "$p50" "$p90"
		record "$config" "handoff us, median: $kind" "$p50"
		record "$config" "handoff us, p90: $kind" "$p90"
	done <<<"$out"
	no_locks_left "the handoff section"
	stop_server
}

#---- inproc: one statement calls the function INPROC_N times ----

section_inproc() {
	local series="generate_series(1::bigint, $INPROC_N) i" k r ms out
	local config="in-process, $INPROC_N calls in one statement, median of $ROUNDS sessions, PostgreSQL $pgversion"
	declare -A query cleanup ns
	query[lockfence.try_acquire]="SELECT count(lockfence.try_acquire('k' || i, '1 min')) FROM $series"
	cleanup[lockfence.try_acquire]="SELECT count(*) FILTER (WHERE lockfence.force_release('k' || i)) FROM $series"
	query[pg_try_advisory_lock]="SELECT count(*) FILTER (WHERE pg_try_advisory_lock(i)) FROM $series"
	cleanup[pg_try_advisory_lock]="SELECT pg_advisory_unlock_all()"
	query[loop_with_text]="SELECT count('k' || i) FROM $series"
	query[loop]="SELECT count(*) FILTER (WHERE i > 0) FROM $series"
	heading "inproc: $INPROC_N calls in one statement, a new session each, median of $ROUNDS (ns per call)"
	# PostgreSQL's lock table has max_locks_per_transaction * MaxBackends
	# entries (MaxBackends: 20 connections + 3 autovacuum workers + 1 + 8
	# worker processes + 10 WAL senders); one session holds INPROC_N
	start_server inproc <<EOF
lockfence.max_locks = $((INPROC_N + 1000))
max_connections = 20
max_locks_per_transaction = $(((INPROC_N * 11 / 10 + 41) / 42))
EOF
	sql -c "CREATE EXTENSION lockfence" || fail "CREATE EXTENSION failed"
	for r in $(seq "$ROUNDS"); do
		for k in "${!query[@]}"; do
			# the query is timed and must count every call; then the cleanup
			out=$(sql -c '\timing on' -c "${query[$k]}" -c "${cleanup[$k]:-SELECT 1}") ||
				fail "in-process query failed: $k"
			[ "$(sed -n 1p <<<"$out")" = "$INPROC_N" ] || fail "$k returned $(sed -n 1p <<<"$out"), not $INPROC_N"
			ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -n 1)
			ns[$k]+="$(calc %.1f "$ms * 1e6 / $INPROC_N") "
		done
	done
	# the loops alone (with the name's text for lockfence) are the overhead both include
	for k in lockfence.try_acquire pg_try_advisory_lock loop_with_text loop; do
		printf '  %-24s %8.1f   rounds: %s\n' "$k" "$(median <<<"${ns[$k]}")" "${ns[$k]}"
		record "$config" "ns per call: $k" "$(median <<<"${ns[$k]}")"
	done
	no_locks_left "the inproc section"
	stop_server
}

#---- callgrind: instructions per statement in a single-user backend ----

# A single-user backend runs N1, then N2 copies of a statement, each its own
# transaction; (Ir(N2) - Ir(N1)) / (N2 - N1) is one statement's cost, start-up
# and setup cancelling out.  Only parse, analysis, planning, execution and
# the transaction's start and commit are counted.
section_callgrind() {
	local dir=$tmp/callgrind s a b prelude rows=10000
	local config="callgrind, single-user backend, N1=$CG_N1 N2=$CG_N2, PostgreSQL $pgversion"
	command -v valgrind >/dev/null || fail "callgrind: valgrind is not installed"
	heading "callgrind: instructions per statement (single-user backend, $CG_N2 - $CG_N1 statements)"
	init_datadir callgrind <<<"lockfence.max_locks = 100000"
	# bench/setup.sql's fence tables, smaller; -j: statements end with ";\n\n"
	{
		echo "CREATE EXTENSION lockfence;"
		echo "CREATE TABLE acct_plain (id int PRIMARY KEY, balance bigint NOT NULL, fence_token bigint) WITH (fillfactor = 80);"
		for t in noop mono lease plpgsql; do
			echo "CREATE TABLE acct_$t (LIKE acct_plain INCLUDING ALL) WITH (fillfactor = 80);"
		done
		echo "CREATE FUNCTION fence_plpgsql() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN IF NEW.fence_token IS NULL THEN RAISE EXCEPTION 'missing fence token' USING ERRCODE = 'LF001'; END IF; IF TG_OP = 'UPDATE' AND NEW.fence_token < OLD.fence_token THEN RAISE EXCEPTION 'stale fence token' USING ERRCODE = 'LF001'; END IF; RETURN NEW; END \$\$;"
		echo "INSERT INTO acct_plain SELECT i, 0, 1 FROM generate_series(1, $rows) i;"
		for t in noop mono lease plpgsql; do echo "INSERT INTO acct_$t SELECT * FROM acct_plain;"; done
		echo "CREATE TRIGGER t BEFORE UPDATE ON acct_noop FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();"
		echo "CREATE TRIGGER t BEFORE INSERT OR UPDATE ON acct_mono FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token');"
		echo "CREATE TRIGGER t BEFORE INSERT OR UPDATE ON acct_lease FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'acct:', 'id');"
		echo "CREATE TRIGGER t BEFORE INSERT OR UPDATE ON acct_plpgsql FOR EACH ROW EXECUTE FUNCTION fence_plpgsql();"
		echo "VACUUM ANALYZE;"
	} | sed 's/$/\n/' | run_pg "$bindir/postgres" --single -D "$dir/data" -j postgres >"$dir/setup.out" 2>&1
	! grep -q ERROR "$dir/setup.out" || { cat "$dir/setup.out" >&2; fail "callgrind setup failed"; }
	run_pg cp -a "$dir/data" "$dir/pristine"
	# Every session first gives acct_lease's rows live leases (they live in
	# the backend's shared memory only) and gives every table the same
	# UPDATE, triggers off, so that all start in the same state.
	prelude=""
	for t in plain noop mono lease plpgsql; do
		prelude+="ALTER TABLE acct_$t DISABLE TRIGGER USER;"$'\n'
		if [ $t = lease ]; then
			prelude+="UPDATE acct_lease SET fence_token = lockfence.acquire('acct:' || id, '2 h');"$'\n'
		else
			prelude+="UPDATE acct_$t SET fence_token = fence_token + 1;"$'\n'
		fi
		prelude+="ALTER TABLE acct_$t ENABLE TRIGGER USER;"$'\n'
	done
	# ir STATEMENT N: instructions of a session running STATEMENT N times,
	# @ replaced by a row id or key scattered over 1..rows
	ir() {
		run_pg rm -rf "$dir/data"
		run_pg cp -a "$dir/pristine" "$dir/data"
		{
			echo "$prelude"
			for i in $(seq "$2"); do echo "${1//@/$(((i * 7919) % rows + 1))}"; done
		} | run_pg valgrind --tool=callgrind --callgrind-out-file=/dev/null \
			--toggle-collect=StartTransactionCommand --toggle-collect=pg_parse_query \
			--toggle-collect=pg_analyze_and_rewrite_fixedparams --toggle-collect=pg_plan_queries \
			--toggle-collect=PortalRun --toggle-collect=CommitTransactionCommand \
			"$bindir/postgres" --single -D "$dir/data" postgres >"$dir/session.out" 2>"$dir/cg.out"
		# a backend in single-user mode reports errors on standard error
		! grep -q ERROR "$dir/session.out" "$dir/cg.out" ||
			{ grep -h -m 3 ERROR "$dir/session.out" "$dir/cg.out" >&2; fail "callgrind session failed: $1"; }
		sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$dir/cg.out"
	}
	for s in \
		"SELECT 1;" \
		"SELECT pg_advisory_lock(@), pg_advisory_unlock(@);" \
		"SELECT lockfence.release('k@', lockfence.acquire('k@', '1 min', '30 s'));" \
		"SELECT pg_try_advisory_lock(@), pg_advisory_unlock(@);" \
		"SELECT lockfence.release('k@', lockfence.try_acquire('k@', '1 min'));" \
		"UPDATE acct_plain SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
		"UPDATE acct_noop SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
		"UPDATE acct_mono SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
		"UPDATE acct_lease SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
		"UPDATE acct_plpgsql SET balance = balance + 1, fence_token = fence_token WHERE id = @;"; do
		a=$(ir "$s" "$CG_N1") || exit 1
		b=$(ir "$s" "$CG_N2") || exit 1
		printf '  %9d  %s\n' $(((b - a) / (CG_N2 - CG_N1))) "$s"
		record "$config" "instructions per statement: $s" $(((b - a) / (CG_N2 - CG_N1)))
	done
}

#---- shmem: the shared memory in use, from pg_shmem_allocations ----

section_shmem() {
	local dir=$tmp/shmem n bytes base
	heading "shmem: shared memory per lock-table slot (sum of pg_shmem_allocations, lockfence.max_locks = 32 vs N)"
	init_datadir shmem </dev/null
	for n in 32 10000 $(quick "" 1000000); do
		bytes=$(echo "SELECT sum(allocated_size) AS bytes FROM pg_shmem_allocations WHERE name IS NOT NULL;" |
			run_pg "$bindir/postgres" --single -D "$dir/data" -c "lockfence.max_locks=$n" postgres 2>&1 |
			sed -n 's/.*bytes = "\([0-9]*\)".*/\1/p')
		[[ $bytes =~ ^[0-9]+$ ]] || fail "could not read the shared memory size at max_locks = $n"
		if [ "$n" = 32 ]; then base=$bytes; continue; fi
		printf '  32 -> %-8s %6.1f bytes per slot\n' "$n" "$(calc %.1f "($bytes - $base) / ($n - 32)")"
		record "shmem, PostgreSQL $pgversion" "bytes per slot, lockfence.max_locks 32 -> $n" "$(calc %.1f "($bytes - $base) / ($n - 32)")"
	done
}

#---- scale: does any request pay for the size of the lock table? ----

# One client (bench/scale/victim.py) times its own try_acquire + release
# while the table is in each state; p99 and max are compared with idle, or,
# where two background clients load the CPUs, with a control run of as many
# clients doing something else.  Target: p99 and max within 2x, max <= 10 ms.
section_scale() {
	local largest=0 max_locks n held=0 idle="" last="" control pid
	for n in $SCALE_SIZES; do [ "$n" -gt "$largest" ] && largest=$n; done
	max_locks=$((largest > SCALE_EXPIRING ? largest + 1000 : SCALE_EXPIRING + 1000))
	[ "$max_locks" -gt 10000000 ] && max_locks=10000000
	local config="scale: one client's try_acquire + release, lockfence.max_locks = $max_locks, $RUN_SECONDS s, PostgreSQL $pgversion"
	heading "scale: one client's try_acquire + release, $RUN_SECONDS s per state, lockfence.max_locks = $max_locks"
	start_server scale <<EOF
lockfence.max_locks = $max_locks
max_connections = $((SCALE_WAITERS + 50))
shared_buffers = 128MB
synchronous_commit = off
EOF
	sql -f "$tmp/scripts/scale_setup.sql" >/dev/null || fail "bench/scale/scale_setup.sql failed"
	# measure LABEL [REFERENCE]: time the victim; p99 and max as ratios to
	# REFERENCE ("calls/s p50 p99 max" of an earlier state; default: idle)
	measure() {
		local stats
		stats=$(run_pg /usr/bin/python3 "$tmp/scripts/victim.py" "$server" "$port" "$RUN_SECONDS") ||
			fail "the victim failed ($1)"
		# shellcheck disable=SC2086 # four numbers
		set -- "$1" "${2:-}" $stats
		last="$(calc %.0f "$3 / $RUN_SECONDS") $4 $5 $6"
		[ -n "$idle" ] || idle=$last
		record "$config" "p99 ms: $1" "$5"
		record "$config" "max ms: $1" "$6"
		awk -v label="$1" -v cur="$last" -v ref="${2:-$idle}" 'BEGIN {
			split(cur, c, " "); split(ref, r, " ")
			printf "  %-44s %7d %7.3f %7.3f %7.3f   %5.2f %5.2f  %s\n", label, c[1], c[2], c[3], c[4],
				c[3] / r[3], c[4] / r[4], (c[3] <= 2 * r[3] && c[4] <= 2 * r[4] && c[4] <= 10) ? "PASS" : "MISS" }'
	}
	# background SCRIPT ROLE CLIENTS: pgbench load for the next measurement
	background() {
		run_pg "$bindir/pgbench" -h "$server" -p "$port" -n -U "$2" -M prepared -c "$3" -j "$3" \
			-T $((RUN_SECONDS + 2)) -f "$tmp/scripts/$1.sql" postgres >"$tmp/$1.out" 2>&1 &
		sleep 1
	}
	printf "  %-44s %7s %7s %7s %7s   %5s %5s\n" state calls/s "p50 ms" "p99 ms" "max ms" p99/r max/r
	measure "idle"
	sql -c "SET ROLE filler; SELECT count(lockfence.try_acquire('exp:' || i, '3 s')) FROM generate_series(1, $SCALE_EXPIRING) i" >/dev/null
	measure "expiring ($SCALE_EXPIRING leases)"
	sleep 2
	for n in $SCALE_SIZES; do
		n=$((n < max_locks - 1000 ? n : max_locks - 1000))
		sql -c "SET ROLE filler; SELECT count(lockfence.try_acquire('held:' || i, '1 h')) FROM generate_series($((held + 1)), $n) i" >/dev/null
		held=$n
		measure "held $held"
	done
	sql -c "ALTER SYSTEM SET lockfence.max_locks_per_role = 2" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 1
	sql -c "SET ROLE attacker; SELECT lockfence.try_acquire('attack:a', '1 h'), lockfence.try_acquire('attack:b', '1 h')" >/dev/null
	background granter filler 2
	measure "held $held, 2 clients granting (control)"
	wait
	control=$last
	background attacker attacker 2
	measure "held $held, 2 clients over quota" "$control"
	wait
	sql -c "ALTER SYSTEM RESET lockfence.max_locks_per_role" -c "SELECT pg_reload_conf()" >/dev/null
	background cpu "$dbuser" 2
	measure "held $held, 2 clients of CPU load (control)"
	wait
	control=$last
	background reader "$dbuser" 2
	measure "held $held, 2 clients reading the view" "$control"
	wait
	run_pg "$bindir/pgbench" -h "$server" -p "$port" -n -M prepared -c "$SCALE_WAITERS" -j 2 -t 1 \
		-f "$tmp/scripts/sleeper.sql" postgres >/dev/null 2>&1 &
	pid=$!
	for _ in $(seq 120); do
		[ "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")" -ge "$SCALE_WAITERS" ] && break
		sleep 1
	done
	measure "held $held, $SCALE_WAITERS clients in pg_sleep (control)"
	control=$last
	sql -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'" >/dev/null
	wait "$pid" || true
	sql -c "SELECT lockfence.try_acquire('hot', '1 min')" >/dev/null
	run_pg "$bindir/pgbench" -h "$server" -p "$port" -n -M prepared -c "$SCALE_WAITERS" -j 2 -t 1 \
		-f "$tmp/scripts/waiter.sql" postgres >/dev/null 2>&1 &
	pid=$!
	for _ in $(seq 120); do
		[ "$(sql -c "SELECT waiters FROM lockfence.locks WHERE name = 'hot'")" -ge "$SCALE_WAITERS" ] && break
		sleep 1
	done
	measure "held $held, $SCALE_WAITERS waiters on one lock" "$control"
	sql -c "SELECT lockfence.force_release('hot')" >/dev/null
	wait "$pid" || fail "a waiter of the scale section failed"
	sql -c "SET ROLE filler; SELECT count(lockfence.try_acquire('full:' || i, '1 h')) FROM generate_series(1, $max_locks) i" >/dev/null 2>&1 || true
	[ "$(sql -c 'SELECT slots_available FROM lockfence.stats')" = 0 ] || fail "the lock table did not fill"
	measure "full table (every request refused)"
	stop_server
}

#---- pooler: through pgbouncer, against pg_advisory_xact_lock ----

# pgbouncer in transaction pooling, one server connection per client.  A
# lease outlives its transaction, so the lockfence side takes a server
# connection for each of acquire, write and release; the control (no lock,
# the same shapes) is the most any lease can reach here.  The counters must
# hold exactly the UPDATEs pgbench counted, with no wait timed out.
section_pooler() {
	local bport v0 v1 t0 t1 counted c=$POOLER_CLIENTS
	local config
	config="pooler: pgbouncer transaction pooling, $(clients "$c"), pool of $c, $ROUNDS rounds of $RUN_SECONDS s, PostgreSQL $pgversion"
	heading "pooler: through pgbouncer (transaction pooling), $(clients "$c"), pool of $c, lockfence / pg_advisory_xact_lock"
	start_server pooler <<<"max_connections = 100"
	sql -c "CREATE EXTENSION lockfence" -c "CREATE TABLE ctr (id int PRIMARY KEY, v bigint NOT NULL)" \
		-c "INSERT INTO ctr SELECT i, 0 FROM generate_series(0, $c) i" || fail "pooler setup failed"
	bport=$(lf_pick_port) || fail "no free port"
	printf '"%s" ""\n' "$dbuser" >"$tmp/userlist.txt"
	cat >"$tmp/pgbouncer.ini" <<EOF
[databases]
postgres = host=$server port=$port dbname=postgres pool_size=$c
[pgbouncer]
listen_addr =
unix_socket_dir = $tmp
listen_port = $bport
auth_type = trust
auth_file = $tmp/userlist.txt
pool_mode = transaction
max_client_conn = 200
logfile = $tmp/pgbouncer.log
pidfile = $tmp/pgbouncer.pid
EOF
	chmod 644 "$tmp/userlist.txt" "$tmp/pgbouncer.ini"
	[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$tmp"
	run_pg /usr/sbin/pgbouncer -d "$tmp/pgbouncer.ini" || fail "pgbouncer did not start"
	for _ in $(seq 50); do [ -S "$tmp/.s.PGSQL.$bport" ] && break; sleep 0.1; done
	v0=$(sql -c 'SELECT sum(v) FROM ctr')
	t0=$(sql -c 'SELECT wait_timeouts FROM lockfence.stats')
	# pgbench goes through pgbouncer: the simple protocol, as pgbouncer
	# before 1.21 cannot pool prepared statements
	local protocol=$PROTOCOL
	via_host=$tmp via_port=$bport PROTOCOL=simple
	: >"$tmp/processed"
	rounds pool/hot_upd "$c" "" lf_hot_update adv_hot_update
	rounds pool/hot "$c" "" lf_hot adv_hot
	rounds pool/own_upd "$c" "" lf_own_update adv_own_update
	rounds pool/hot_xact "$c" "" lf_hot_xact adv_hot
	rounds pool/own_xact "$c" "" lf_own_xact_update adv_own_update
	rounds pool/control "$c" "" ctl_lease_shape_update ctl_xact_shape_update
	via_host="" via_port="" PROTOCOL=$protocol
	compare pool/hot_upd lf_hot_update adv_hot_update "$config" "hot lock + UPDATE"
	compare pool/hot lf_hot adv_hot "$config" "hot lock"
	compare pool/own_upd lf_own_update adv_own_update "$config" "own lock + UPDATE"
	compare pool/hot_xact lf_hot_xact adv_hot "$config" "hot lock, acquire_xact"
	compare pool/own_xact lf_own_xact_update adv_own_update "$config" "own lock + UPDATE, acquire_xact"
	compare pool/control ctl_lease_shape_update ctl_xact_shape_update "$config" "control without locks: lease shape / transaction shape"
	kill "$(cat "$tmp/pgbouncer.pid")"
	v1=$(sql -c 'SELECT sum(v) FROM ctr')
	t1=$(sql -c 'SELECT wait_timeouts FROM lockfence.stats')
	[ "$t1" = "$t0" ] || fail "$((t1 - t0)) lockfence waits timed out through pgbouncer"
	# every transaction of an *update* script made one UPDATE
	counted=$(awk '$1 ~ /update$/ { n += $2 } END { print n + 0 }' "$tmp/processed")
	echo "  UPDATEs counted by pgbench: $counted, made: $((v1 - v0))"
	{ [ "$counted" -gt 0 ] && [ "$counted" = $((v1 - v0)) ]; } || fail "the UPDATEs made are not the UPDATEs pgbench counted"
	no_locks_left "the pooler section"
	stop_server
}

started=$(date +%s)
for s in $SECTIONS; do "section_$s"; done
printf '\nmeasured in %d s; figures appended to bench/results.tsv%s\n' $(($(date +%s) - started)) "$(quick " (not in a quick run)" "")"
