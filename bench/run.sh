#!/usr/bin/env bash
# The benchmark command (make bench): builds and installs lockfence, starts a
# throwaway PostgreSQL server with lockfence preloaded, and measures
#
#   locks     acquire + release throughput with pgbench against advisory
#             locks, table-emulated leases and SELECT 1, for uncontended
#             keys, 4 contended keys and a single key;
#   fence     a random-row UPDATE with the fence-check trigger (monotonic
#             and lease mode), without a trigger, and with a PL/pgSQL one;
#   inproc    the cost of one call without round trips, against
#             pg_try_advisory_lock;
#   handoff   the time from a release to the waiter's return;
#   shmem     shared memory per lock-table slot;
#   profile   (not run by default) where the fence trigger's CPU time goes:
#             a timer-sampled perf profile of the plain, monotonic and
#             lease-mode UPDATE at the largest client count;
#
# then prints a summary with the targets of the issue, marked PASS or MISS.
# Benchmarks do not fail the build: the exit status is 0 unless something
# went wrong (a failed build, query or pgbench run).
#
# Measuring on a 2-vCPU VM shared by client and server is noisy (see
# BENCHMARKING notes in bench/README.md): every comparison runs its scripts
# alternately in one server, in rounds whose order reverses every other
# round (A B C, C B A, A B C, ...), and reports the median tps and the median
# of the per-round ratios.  At one client, lockfence and advisory locks, and
# the fence scripts, are also compared within single runs (run_samerun).
#
# Environment:
#   BENCH_SECONDS   length of one pgbench run (default 5)
#   BENCH_RUNS      rounds per comparison (default 5; use >= 3)
#   BENCH_CLIENTS   client counts (default "1 8 32"); contended and
#                   single-key runs use the counts above 1
#   BENCH_KEYS      keys of the uncontended runs (default 1000000)
#   BENCH_LOCK_MODES  key modes of the lock section (default "uncontended
#                   contended single"; uncontended includes the durable group)
#   BENCH_SAMERUN_CLIENTS  client counts at which lockfence and advisory
#                   locks (uncontended keys) and the fence scripts are also
#                   compared within single runs (default "1" when
#                   BENCH_CLIENTS has 1; empty: never; see run_samerun)
#   BENCH_PAIRED_CLIENTS  client counts at which the same pairs are also
#                   compared in paired runs (default: the even counts of
#                   BENCH_CLIENTS up to 4 per CPU; empty: never; see
#                   run_paired)
#   BENCH_METHODS   which comparisons to run (default "alternating same-run
#                   paired"); the table leases and the summary's tps tables
#                   come from the alternating runs
#   BENCH_PROTOCOL  pgbench's query protocol, -M (default prepared: each
#                   statement parsed and planned once per connection;
#                   simple or extended: parsed and planned at every call,
#                   as many drivers do)
#   BENCH_ROWS      rows of the fence-trigger table (default 100000)
#   BENCH_INPROC_N  calls per in-process measurement (default 1000000)
#   BENCH_HANDOFF_N handoffs per lock kind (default 100)
#   BENCH_ONLY      sections to run (default "shmem locks fence inproc handoff";
#                   "profile" and "profile-locks" need root and install linux-perf)
#   BENCH_WAIT_IDLE seconds to wait, before measuring, for the machine to be
#                   idle (under 10% CPU busy over 2 s; default 0: do not wait)
#   BENCH_SETTINGS  more server settings for an experiment, as name=value
#                   words (e.g. "huge_pages=on"); they override the tuning
#   BENCH_HUGE_PAGES  "auto" (default): as root, reserve huge pages for the
#                   server's shared memory and run with huge_pages = on
#                   (the reservation is undone at the end); otherwise, and
#                   with "off", huge_pages = off
#   BENCH_QUICK=1   a 1-2 minute smoke run: 1 s runs, 1 round, clients "8",
#                   100000 in-process calls, 10 handoffs (each overridable)
#   PG_CONFIG, TEST_USER as for make test.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh

#---- Settings ----

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	: "${BENCH_SECONDS:=1}" "${BENCH_RUNS:=1}" "${BENCH_CLIENTS:=8}"
	: "${BENCH_INPROC_N:=100000}" "${BENCH_HANDOFF_N:=10}"
fi
SECONDS_PER_RUN=${BENCH_SECONDS:-5}
RUNS=${BENCH_RUNS:-5}
CLIENTS=${BENCH_CLIENTS:-1 8 32}
NKEYS=${BENCH_KEYS:-1000000}
NROWS=${BENCH_ROWS:-100000}
INPROC_N=${BENCH_INPROC_N:-1000000}
HANDOFF_N=${BENCH_HANDOFF_N:-100}
ONLY=${BENCH_ONLY:-shmem locks fence inproc handoff}
LOCK_MODES=${BENCH_LOCK_MODES:-uncontended contended single}
SAMERUN_CLIENTS=${BENCH_SAMERUN_CLIENTS-1}
# the default follows BENCH_CLIENTS
[ -n "${BENCH_SAMERUN_CLIENTS+set}" ] || [[ " $CLIENTS " == *" 1 "* ]] || SAMERUN_CLIENTS=""
METHODS=${BENCH_METHODS:-alternating same-run paired}
WAIT_IDLE=${BENCH_WAIT_IDLE:-0}
HUGE_PAGES=${BENCH_HUGE_PAGES:-auto}
PROTOCOL=${BENCH_PROTOCOL:-prepared}
MAX_LOCKS=1100000 # lockfence.max_locks: 1,000,000 random keys fit

lf_require_bench_protocol bench "$PROTOCOL"
[[ $HUGE_PAGES =~ ^(auto|off)$ ]] || { echo "bench: BENCH_HUGE_PAGES is auto or off, not '$HUGE_PAGES'" >&2; exit 2; }
[[ $WAIT_IDLE =~ ^[0-9]+$ ]] || { echo "bench: BENCH_WAIT_IDLE must be a number of seconds" >&2; exit 2; }
for v in SECONDS_PER_RUN RUNS NKEYS NROWS INPROC_N HANDOFF_N; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: $v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
for c in $CLIENTS; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_CLIENTS must list positive integers, not '$CLIENTS'" >&2; exit 2; }
done
for c in $SAMERUN_CLIENTS; do
	[[ " $CLIENTS " == *" $c "* ]] || { echo "bench: BENCH_SAMERUN_CLIENTS must list counts of BENCH_CLIENTS, not '$c'" >&2; exit 2; }
done
# the default: the even counts of BENCH_CLIENTS up to 4 per CPU (see
# run_paired)
PAIRED_CLIENTS=${BENCH_PAIRED_CLIENTS-$(for c in $CLIENTS; do
	if [ $((c % 2)) -eq 0 ] && [ "$c" -le $((4 * $(nproc))) ]; then echo "$c"; fi
done | xargs)}
for c in $PAIRED_CLIENTS; do
	if [[ " $CLIENTS " != *" $c "* ]] || [ $((c % 2)) -ne 0 ]; then
		echo "bench: BENCH_PAIRED_CLIENTS must list even counts of BENCH_CLIENTS, not '$c'" >&2
		exit 2
	fi
done
for m in $METHODS; do
	[[ $m =~ ^(alternating|same-run|paired)$ ]] ||
		{ echo "bench: BENCH_METHODS lists alternating, same-run and paired, not '$m'" >&2; exit 2; }
done
[ "$INPROC_N" -le 1000000 ] || { echo "bench: BENCH_INPROC_N is at most 1000000 (the lock table has $MAX_LOCKS slots)" >&2; exit 2; }
# key modes of the lock section: name, keys, title
lock_modes=()
for m in $LOCK_MODES; do
	case $m in
	uncontended) lock_modes+=("uncontended:$NKEYS:uncontended, random key of $NKEYS") ;;
	contended) lock_modes+=("contended:4:contended, random key of 4") ;;
	single) lock_modes+=("single:1:one key") ;;
	*) echo "bench: BENCH_LOCK_MODES lists uncontended, contended and single, not '$m'" >&2; exit 2 ;;
	esac
done
want() { [[ " $ONLY " == *" $1 "* ]]; }

# Server settings, the same for every run.  fsync stays on (the fence
# trigger's UPDATEs and the table leases commit for real); synchronous_commit
# = off takes the WAL flush out of the commit path, which helps only the
# writing baselines (table leases), never lockfence's lock calls; the
# uncontended table leases are measured once more with the default
# synchronous_commit = on (group "durable"), as applications run them.  No
# checkpoint falls into a run (max_wal_size, checkpoint_timeout; one
# CHECKPOINT after setup).  JIT is off so it cannot distort the in-process
# timings.  max_locks_per_transaction is sized below so that one session can
# hold INPROC_N advisory locks.
MAX_CONNECTIONS=64
# MaxBackends = max_connections + autovacuum_max_workers (3) + 1
#               + max_worker_processes (8) + max_wal_senders (10)
MAX_BACKENDS=$((MAX_CONNECTIONS + 3 + 1 + 8 + 10))
# the shared lock table has max_locks_per_transaction * MaxBackends entries
MAX_LOCKS_PER_XACT=$(((INPROC_N * 11 / 10 + MAX_BACKENDS - 1) / MAX_BACKENDS))
[ "$MAX_LOCKS_PER_XACT" -ge 64 ] || MAX_LOCKS_PER_XACT=64
TUNING="shared_buffers=256MB max_connections=$MAX_CONNECTIONS fsync=on synchronous_commit=off"
TUNING+=" max_wal_size=16GB checkpoint_timeout=1h jit=off autovacuum=on"
TUNING+=" max_locks_per_transaction=$MAX_LOCKS_PER_XACT"
TUNING+=" shared_preload_libraries=lockfence lockfence.max_locks=$MAX_LOCKS"
# experiments: more settings, written after these, so they win
for setting in ${BENCH_SETTINGS:-}; do
	[[ $setting =~ ^[a-z_.]+=[^=]+$ ]] || { echo "bench: BENCH_SETTINGS takes name=value words, not '$setting'" >&2; exit 2; }
	TUNING+=" $setting"
done

NCPU=$(nproc)
PGBENCH_OPTS="-n -M $PROTOCOL" # no vacuum (our tables)

#---- Build, install ----

if want profile || want profile-locks; then
	[ "$(id -u)" -eq 0 ] || { echo "bench: the profile sections sample the whole machine and must run as root" >&2; exit 2; }
	LF_PACKAGES="$LF_PACKAGES linux-perf binutils"
fi
lf_install_packages
lf_build_and_install
bindir=$(lf_bindir)
command -v "$bindir/pgbench" >/dev/null || { echo "bench: $bindir/pgbench not found" >&2; exit 1; }

#---- Throwaway server ----

tmp=""
server_started=0
hugepages_before="" # vm.nr_hugepages to restore at exit
fail() {
	printf '\nBENCH FAILED: %s\n' "$*" >&2
	exit 1
}

cleanup() {
	local status=$?
	set +e
	trap - INT TERM
	if [ "$server_started" -eq 1 ]; then
		if [ "$status" -ne 0 ] && [ -s "$tmp/server.log" ]; then
			echo "--- last lines of the server log:" >&2
			tail -n 20 "$tmp/server.log" >&2
		fi
		lf_server_stop "$tmp"
	fi
	[ -n "$tmp" ] && rm -rf "$tmp"
	[ -n "$hugepages_before" ] && echo "$hugepages_before" >/proc/sys/vm/nr_hugepages
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lockfence-bench.XXXXXX")
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$tmp"
cd "$tmp" # the server's user may not be able to enter the source tree
# the scripts, where the server's user can read them
run_pg mkdir "$tmp/scripts"
cp "$src"/bench/*.sql "$src"/bench/locks/*.sql "$src"/bench/fence/*.sql "$tmp/scripts/"
# the A/A control of the paired lock runs: adv_2rt under a second name
cp "$tmp/scripts/adv_2rt.sql" "$tmp/scripts/adv_2rt2.sql"
lf_bench_scripts_for_protocol "$tmp/scripts" "$PROTOCOL" || fail "a lock script still casts a parameter to text"
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER" "$tmp/scripts"
port=$(lf_pick_port) || fail "no unused port found"

for setting in $TUNING; do
	echo "${setting%%=*} = '${setting#*=}'"
done | lf_server_init "$tmp" "$port" || fail "initdb failed"

# Huge pages.  On 4 kB pages, every backend's random reads of a large
# shared memory segment (the buffers, and lockfence's table with its million
# slots: about 1 GB in all) miss the TLB, and on some virtual machines each
# such miss costs microseconds: there, a random-row UPDATE at 32 clients ran
# 3 to 3.5 times faster on huge pages.  PostgreSQL recommends huge pages for
# large shared memory, so the benchmark uses them where it can: as root it
# reserves the pages the server needs (shared_memory_size_in_huge_pages,
# PostgreSQL 15+) and gives them back at exit.  Otherwise, and with
# BENCH_HUGE_PAGES=off, huge_pages = off, so that pages reserved for
# something else never change the figures unannounced.
choose_huge_pages() { # sets huge to on or off
	local need free
	huge=off
	[ "$HUGE_PAGES" = auto ] && [ "$(id -u)" -eq 0 ] && [ -w /proc/sys/vm/nr_hugepages ] || return 0
	need=$(run_pg "$bindir/postgres" -D "$tmp/data" -C shared_memory_size_in_huge_pages 2>/dev/null) || return 0
	[[ $need =~ ^[1-9][0-9]*$ ]] || return 0
	hugepages_before=$(cat /proc/sys/vm/nr_hugepages)
	echo $((hugepages_before + need + 2)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
	free=$(awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo)
	if [ "${free:-0}" -ge "$need" ]; then
		huge=on
	else
		echo "$hugepages_before" >/proc/sys/vm/nr_hugepages
		hugepages_before=""
	fi
}
# an experiment's own huge_pages setting (BENCH_SETTINGS) is left alone
if [[ " ${BENCH_SETTINGS:-} " != *" huge_pages="* ]]; then
	choose_huge_pages
	echo "huge_pages = '$huge'" >>"$tmp/data/postgresql.conf"
	TUNING+=" huge_pages=$huge"
fi

#---- Output helpers ----

results=$tmp/results.tsv # group, script, round, tps, share granted, others' CPU %, CPU us/txn, faults/txn, mean latency us (same-run comparisons)
summary=$tmp/summary.tsv # section, check, value, op, target, unit
: >"$results"
: >"$summary"

heading() { printf '\n=== %s\n' "$*"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# add_check SECTION CHECK VALUE OP TARGET UNIT [ROUNDS]: a summary row (OP:
# >= <= > info; ROUNDS: how many rounds' own ratios met the target, "k/n")
add_check() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "${7:-}" >>"$summary"; }

#---- Shared memory per slot (needs the server stopped) ----

# Exact size of the shared memory in use, in bytes, with lockfence.max_locks
# = $1: the sum over pg_shmem_allocations in a single-user backend, named
# and anonymous allocations, not the free space (the segment's size rounded
# up to whole pages, 2 MB ones with huge pages, would blur the difference).
shmem_bytes() {
	echo "SELECT sum(allocated_size) AS bytes FROM pg_shmem_allocations WHERE name IS NOT NULL;" |
		run_pg "$bindir/postgres" --single -D "$tmp/data" -c "lockfence.max_locks=$1" postgres 2>&1 |
		sed -n 's/.*bytes = "\([0-9]*\)".*/\1/p'
}
shmem_mb() {
	run_pg "$bindir/postgres" -D "$tmp/data" -C shared_memory_size -c "lockfence.max_locks=$1"
}

if want shmem; then
	heading "shared memory per lock slot (lockfence.max_locks = 32 vs N; server not running)"
	declare -A shm_b shm_mb
	for n in 32 10000 1000000; do
		shm_b[$n]=$(shmem_bytes "$n")
		shm_mb[$n]=$(shmem_mb "$n")
		[[ ${shm_b[$n]} =~ ^[0-9]+$ && ${shm_mb[$n]} =~ ^[0-9]+$ ]] ||
			fail "could not measure the shared memory size with lockfence.max_locks = $n"
		printf '  max_locks = %-8s shared_memory_size = %6s MB   in use = %12s bytes\n' \
			"$n" "${shm_mb[$n]}" "${shm_b[$n]}"
	done
	for n in 10000 1000000; do
		per=$(awk -v a="${shm_b[$n]}" -v b="${shm_b[32]}" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / (n - 32) }')
		per_mb=$(awk -v a="${shm_mb[$n]}" -v b="${shm_mb[32]}" -v n="$n" 'BEGIN { printf "%.1f", (a - b) * 1048576 / (n - 32) }')
		printf '  per slot, 32 -> %-8s %8s bytes (exact sizes in use; %s bytes from shared_memory_size in MB)\n' \
			"$n:" "$per" "$per_mb"
		add_check shmem "bytes per slot, max_locks 32 -> $n" "$per" info "~300" bytes
	done
fi

#---- Start the server ----

server_started=1
lf_server_start "$tmp" "$src" || fail "could not start the server"

PSQL=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$tmp" -p "$port")
sql() { run_pg "${PSQL[@]}" -At -d bench "$@"; }
run_pg "${PSQL[@]}" -d postgres -c "CREATE DATABASE bench" ||
	fail "could not create the benchmark database"
sql -v nkeys="$NKEYS" -v nrows="$NROWS" -f "$tmp/scripts/setup.sql" >/dev/null ||
	fail "bench/setup.sql failed"
sql -c "VACUUM ANALYZE" -c "CHECKPOINT" || fail "VACUUM or CHECKPOINT failed"

# Percentage of CPU time the whole machine was busy during 2 s.
cpu_busy() {
	local a b
	a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
	sleep 2
	b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
		busy = y[1] - x[1]; idle = y[2] - x[2]
		printf "%.0f", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}
# Runs during which other work used more than DISTURBED% of the CPU are
# repeated, after waiting (up to 60 s each time, WAIT_BUDGET s in all) for
# the machine to calm down; at most RETRY_BUDGET runs are repeated.  Runs
# still disturbed are marked with * in the tables.
DISTURBED=10
WAIT_BUDGET=300
# wait_quiet SECONDS: wait until the machine is under DISTURBED% busy
wait_quiet() {
	local limit=$1
	while :; do
		busy=$(cpu_busy)
		[ "$busy" -lt "$DISTURBED" ] && return 0
		[ "$limit" -gt 0 ] && [ "$WAIT_BUDGET" -gt 0 ] || return 0
		limit=$((limit - 2))
		WAIT_BUDGET=$((WAIT_BUDGET - 2))
	done
}
WAIT_BUDGET=$((WAIT_BUDGET + WAIT_IDLE))
WAIT_BUDGET_START=$WAIT_BUDGET
if [ "$WAIT_IDLE" -gt 0 ]; then
	wait_quiet "$WAIT_IDLE"
else
	busy=$(cpu_busy)
fi

heading "lockfence benchmark"
echo "  PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'), lockfence built from $src ($(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "  machine: $NCPU CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg), ${busy}% CPU busy before the start"
[ "$busy" -lt "$DISTURBED" ] || echo "  WARNING: the machine is busy with other work; expect noisier figures"
echo "  server: throwaway, unix socket, $TUNING"
echo "  pgbench: $PGBENCH_OPTS -T $SECONDS_PER_RUN, -j min(clients, $NCPU), PGOPTIONS='-c lock_timeout=30s'"
echo "  rounds: $RUNS per comparison, order reversed every other round; clients: $CLIENTS"
echo "  comparisons: $METHODS (same-run at clients: ${SAMERUN_CLIENTS:-none}; paired at clients: ${PAIRED_CLIENTS:-none})"

#---- pgbench runs ----

# The server's own lock table must be empty between lock runs (apart from
# leases a section holds on purpose): a pgbench client that died holding a
# lease would make the next run wait.
expected_locks=0
check_locks() {
	local n
	n=$(sql -c "SELECT count(*) FROM lockfence.locks") || fail "could not read lockfence.locks"
	[ "$n" = "$expected_locks" ] ||
		fail "after $1, lockfence.locks has $n locks instead of $expected_locks"
}

# Counters read before and after each run: lockfence grants, the
# successful table-lease releases (a DELETE of leases_del, an UPDATE of
# leases_upd, which also counts one UPDATE for the acquire), and the
# database's committed transactions.  Advisory grants are counted by the
# latter: every statement of a script is a transaction of its own, and
# adv_try runs a second one (the unlock) only when it got the lock.  (The
# few transactions of this script's own queries between the two readings
# are left in: a handful against the hundreds of thousands of a run.)
counters() {
	sql -F ' ' -c "SELECT (SELECT grants FROM lockfence.stats),
		(SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'bench.leases_del'::regclass),
		(SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'bench.leases_upd'::regclass),
		(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())" ||
		fail "could not read the counters"
}

# Wait until pgbench's backends have exited (and so flushed their
# statistics), so that runs never overlap.
wait_for_backends() {
	local n
	for _ in $(seq 200); do
		n=$(sql -c "SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()") ||
			fail "could not read pg_stat_activity"
		[ "$n" = 0 ] && return 0
		sleep 0.05
	done
	fail "$n pgbench backends did not exit"
}

# CPU time, in clock ticks, as two numbers: what other work on the machine
# (other test suites...) used, that is the machine's busy time minus ours;
# and ours: what our server (the postmaster, its live children, and its
# exited children) and this shell's children (pgbench, psql) used.  Then,
# counted the same way, our minor page faults: a backend maps each page of
# shared memory on its first touch of it, so they tell what share of a
# run's time goes to first touches.
HZ=$(getconf CLK_TCK)
cpu_ticks() {
	local pm
	pm=$(head -n 1 "$tmp/data/postmaster.pid")
	{
		awk '/^cpu / { print "machine", $2 + $3 + $4 }' /proc/stat
		cat "/proc/$pm/stat" "/proc/$$/stat" 2>/dev/null
		# a child that exits between ps and cat is simply not counted; the
		# "|| true" keeps its failed cat from failing the pipeline (pipefail)
		for p in $(ps -o pid= --ppid "$pm"); do cat "/proc/$p/stat" 2>/dev/null || true; done
	} | awk -v pm="$pm" -v me="$$" '
		$1 == "machine" { machine = $2; next }
		{ sub(/^.*\) /, ""); minflt = $8; cminflt = $9
		  utime = $12; stime = $13; cutime = $14; cstime = $15; pid_line++
		  if (pid_line <= 2) {	# postmaster, this shell
			ours += utime + stime + cutime + cstime; faults += minflt + cminflt
		  } else {
			ours += utime + stime; faults += minflt
		  } }
		END { print machine - ours, ours, faults }'
}

# pgbench_cmd SCRIPT CLIENTS SECONDS ARGS...: pgbench with the settings of
# every run, output to $tmp/pgbench.out (SECONDS empty: ARGS give the
# length, -t N).  SCRIPT may be a comma-separated list: one run in which
# every transaction picks one of them at random.  Paired runs set
# pgbench_out (another output file) and pgbench_cpus (the CPUs one of the
# two may use for its threads, instead of all).
pgbench_cmd() {
	local script=$1 clients=$2 secs=$3 cpus=${pgbench_cpus:-$NCPU} f files=()
	shift 3
	for f in ${script//,/ }; do files+=(-f "$tmp/scripts/$f.sql"); done
	# shellcheck disable=SC2086
	PGOPTIONS="-c lock_timeout=30s $run_pgoptions" run_pg "$bindir/pgbench" -h "$tmp" -p "$port" \
		$PGBENCH_OPTS -c "$clients" -j $((clients < cpus ? clients : cpus)) ${secs:+-T "$secs"} "$@" \
		"${files[@]}" bench >"${pgbench_out:-$tmp/pgbench.out}" 2>&1
}

# others_share TICKS0 TICKS1 NS0 NS1: % of the machine's CPU that other work
# used between two cpu_ticks readings taken at two date +%s%N times
others_share() {
	awk -v a="$1" -v b="$2" -v w="$(($4 - $3))" -v hz="$HZ" -v n="$NCPU" \
		'BEGIN { v = 100 * (b - a) / (w / 1e9 * hz * n); printf "%.0f", v < 0 ? 0 : v }'
}

# pgbench_run SCRIPT CLIENTS SECONDS DEFINES...: one run; sets run_tps,
# run_ok (the share of transactions that got the lock, "-" when unknown)
# run_others (% of the machine's CPU that other work used meanwhile) and
# run_cpu_us (CPU time of the server and pgbench per transaction, in µs),
# run_faults (their minor page faults per transaction).  For a list of
# scripts (a same-run comparison), also run_latency: each script's mean
# transaction latency in µs, in list order, from pgbench's transaction log.
pgbench_run() {
	local script=$1 clients=$2 secs=$3 out=$tmp/pgbench.out before after txns t0 t1 w0 w1
	local others0 ours0 faults0 others1 ours1 faults1 log=""
	shift 3
	if [[ $script == *,* ]]; then
		log=$tmp/samerun-log
		rm -f "$log".*
		set -- "$@" -l --log-prefix="$log"
	fi
	before=$(counters)
	t0=$(cpu_ticks)
	w0=$(date +%s%N)
	if ! pgbench_cmd "$script" "$clients" "$secs" "$@"; then
		cat "$out" >&2
		fail "pgbench $script.sql with $clients clients failed"
	fi
	run_tps=$(awk '/^tps = / { print $3 }' "$out")
	txns=$(awk '/^number of transactions actually processed:/ { print $NF }' "$out")
	if [ -z "$run_tps" ] || [ -z "$txns" ]; then
		cat "$out" >&2
		fail "no tps in the output of pgbench $script.sql"
	fi
	wait_for_backends
	w1=$(date +%s%N)
	t1=$(cpu_ticks)
	read -r others0 ours0 faults0 <<<"$t0"
	read -r others1 ours1 faults1 <<<"$t1"
	run_others=$(others_share "$others0" "$others1" "$w0" "$w1")
	run_cpu_us=$(awk -v a="$ours0" -v b="$ours1" -v hz="$HZ" -v n="$txns" \
		'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "-" }')
	run_faults=$(awk -v a="$faults0" -v b="$faults1" -v n="$txns" \
		'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "-" }')
	after=$(counters)
	run_latency=""
	if [ -n "$log" ]; then
		# log lines: client, transaction, latency (µs), script number, ...
		run_latency=$(cat "$log".* | awk -v n="$(tr -cd , <<<"$script" | wc -c)" '
			{ sum[$4] += $3; cnt[$4]++ }
			END { for (i = 0; i <= n; i++) { if (!cnt[i]) exit 1; printf "%.3f ", sum[i] / cnt[i] } }') ||
			fail "a script of $script ran no transaction in the same-run comparison"
		rm -f "$log".*
	fi
	run_ok=$(awk -v s="$script" -v b="$before" -v a="$after" -v n="$txns" 'BEGIN {
		split(b, x, " "); split(a, y, " ")
		if (n == 0 || s ~ /,/) d = -1
		else if (s ~ /^lf_/) d = y[1] - x[1]
		else if (s == "tbl_del") d = y[2] - x[2]
		else if (s == "tbl_upd") d = (y[3] - x[3]) / 2
		else if (s == "adv_try") d = y[4] - x[4] - n
		else d = -1
		if (d < 0) print "-"; else printf "%.3f", d / n }')
}

# awk: is this results row the first of its pgbench run?  (A same-run
# comparison writes a row per script, all with a latency in column 9; a
# paired run two rows, in a group of its pair, group "pair/...".)
# shellcheck disable=SC2016 # awk's $9, not the shell's
RUN_KEY_AWK='function new_run(  k) { k = ($9 == "-" && $1 !~ /^pair\//) ? NR : $1 SUBSEP $3; if (k in seen_run) return 0; seen_run[k] = 1; return 1 }'
# extra session settings of the runs of a group (PGOPTIONS syntax)
run_pgoptions=""
runs_done=0
runs_planned=0
bench_started=$(date +%s)
# progress GROUP: a line on the runs so far; for paired runs GROUP is the
# prefix of the pairs' groups
progress() {
	local elapsed=$(($(date +%s) - bench_started))
	printf '  [%d/%d runs, %d repeated, %d:%02d elapsed; others used at most %s%% of the CPU during a run, %s runs marked *]\n' \
		"$runs_done" "$runs_planned" "$retries" $((elapsed / 60)) $((elapsed % 60)) \
		"$(awk -F'\t' -v g="$1" '($1 == g || index($1, g ":") == 1) && $6 > m { m = $6 } END { print m + 0 }' "$results")" \
		"$(awk -F'\t' -v g="$1" -v d="$DISTURBED" "$RUN_KEY_AWK"'($1 == g || index($1, g ":") == 1) && new_run() && $6 > d { n++ } END { print n + 0 }' "$results")"
}

# round_order ROUND ITEM...: the items, reversed in even rounds (sets order)
round_order() {
	local r=$1 i
	shift
	order=("$@")
	if [ $((r % 2)) -eq 0 ]; then
		order=()
		for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done
	fi
}
# may_repeat ATTEMPT: whether attempt ATTEMPT (0, 1, 2) of a run may go
# ahead; a repeat (ATTEMPT > 0) takes one of the RETRY_BUDGET repeats and
# first waits (up to 60 s) for the machine to calm down
may_repeat() {
	[ "$1" -gt 0 ] || return 0
	[ "$retries" -lt "$RETRY_BUDGET" ] || return 1
	retries=$((retries + 1))
	wait_quiet 60
}

# run_group GROUP CLIENTS "DEFINES" SCRIPT...: RUNS alternating rounds.  A
# disturbed run is repeated (at most twice) and the least disturbed attempt
# kept.
retries=0
run_group() {
	local group=$1 clients=$2 defines=$3 r s order attempt best_tps best_ok best_others best_cpu best_faults best_latency
	shift 3
	for r in $(seq "$RUNS"); do
		round_order "$r" "$@"
		for s in "${order[@]}"; do
			best_others=""
			for attempt in 0 1 2; do
				may_repeat "$attempt" || break
				# shellcheck disable=SC2086
				pgbench_run "$s" "$clients" "$SECONDS_PER_RUN" $defines
				check_locks "$s.sql"
				if [ -z "$best_others" ] || [ "$run_others" -lt "$best_others" ]; then
					best_tps=$run_tps best_ok=$run_ok best_others=$run_others best_cpu=$run_cpu_us best_faults=$run_faults
					best_latency=$run_latency
				fi
				[ "$run_others" -gt "$DISTURBED" ] || break
			done
			if [[ $s == *,* ]]; then
				# a same-run comparison: a row per script, whose "tps" is
				# what one client reaches at its mean latency, 1e6 / µs
				paste <(tr , '\n' <<<"$s") <(tr ' ' '\n' <<<"$best_latency" | grep .) |
					awk -F'\t' -v OFS='\t' -v g="$group" -v r="$r" -v o="$best_others" \
						'{ print g, $1, r, sprintf("%.1f", 1e6 / $2), "-", o, "-", "-", $2 }' >>"$results"
			else
				printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$group" "$s" "$r" "$best_tps" "$best_ok" "$best_others" "$best_cpu" "$best_faults" >>"$results"
			fi
			runs_done=$((runs_done + 1))
		done
	done
}

# median_tps GROUP SCRIPT
median_tps() {
	awk -F'\t' -v g="$1" -v s="$2" '$1 == g && $2 == s { print $4 }' "$results" | median
}
# median_ok GROUP SCRIPT: median share of transactions that got the lock
median_ok() {
	local v
	v=$(awk -F'\t' -v g="$1" -v s="$2" '$1 == g && $2 == s && $5 != "-" { print $5 }' "$results" | median) || { echo -; return; }
	awk -v v="$v" 'BEGIN { printf "%.1f%%", v * 100 }'
}
# median_field GROUP SCRIPT COLUMN: median of a per-transaction column of
# the results, "-" when no run has it
median_field() {
	awk -F'\t' -v g="$1" -v s="$2" -v f="$3" '$1 == g && $2 == s && $f != "-" { print $f }' "$results" | median || echo -
}
# median_cpu GROUP SCRIPT: median CPU time (server and pgbench) per
# transaction, in µs; clock-tick resolution, so meaningful for runs of
# thousands of transactions
median_cpu() { median_field "$1" "$2" 7; }
# median_faults GROUP SCRIPT: median minor page faults per transaction
median_faults() { median_field "$1" "$2" 8; }
# round_ratios GROUP A B [FORMAT]: tps(A) / tps(B) of each round that ran
# both, in round order (printf FORMAT, default %.4f)
round_ratios() {
	awk -F'\t' -v g="$1" -v a="$2" -v b="$3" -v fmt="${4:-%.4f} " '
		$1 == g && $2 == a { ta[$3] = $4 }
		$1 == g && $2 == b { tb[$3] = $4 }
		END { for (r = 1; r in ta; r++) if ((r in tb) && tb[r] > 0) printf fmt, ta[r] / tb[r] }' "$results"
}
# ratio GROUP A B: median over rounds of tps(A) / tps(B) in the same round
ratio() { round_ratios "$1" "$2" "$3" | median; }
fmt_ratio() { awk -v r="$1" 'BEGIN { printf "%.2fx", r }'; }
# awk: does value v meet target t under op (>=, >, <=, <)?  Shared by the
# rounds count and the summary's verdicts.
MEETS_AWK='function meets(v, op, t) { return op == ">=" ? v >= t : op == ">" ? v > t : op == "<=" ? v <= t : v < t }'
# rounds_met GROUP A B OP TARGET: "k/n", the rounds whose own ratio A/B met
# the target.  The verdict is the median's; this shows how near the noise
# of the machine brings it.
rounds_met() {
	round_ratios "$1" "$2" "$3" | awk -v op="$4" -v t="$5" "$MEETS_AWK"'
		{ for (i = 1; i <= NF; i++) k += meets($i + 0, op, t + 0) }
		END { printf "%d/%d", k, NF }'
}
# ratio_check SECTION CHECK GROUP A B OP TARGET: a summary row for A/B
ratio_check() {
	add_check "$1" "$2" "$(ratio "$3" "$4" "$5")" "$6" "$7" x "$(rounds_met "$3" "$4" "$5" "$6" "$7")"
}
# ceiling GROUP A B: the ratio to B that a lock costing nothing but its
# statements would reach in place of A: SELECT 1's tps of the same round,
# divided by A's statements per transaction (2 for lf_2rt; for lf_try 1,
# plus 1 for the release in the share of transactions that got the lock),
# then by B's tps.  Median over rounds.  A target above it cannot be met
# on this machine by any lock that a client calls through statements.
ceiling() {
	awk -F'\t' -v g="$1" -v a="$2" -v b="$3" '
		$1 == g && $2 == a { st[$3] = (a == "lf_try" && $5 != "-") ? 1 + $5 : 2 }
		$1 == g && $2 == b { tb[$3] = $4 }
		$1 == g && $2 == "select1" { s1[$3] = $4 }
		END { for (r in st) if ((r in tb) && (r in s1) && tb[r] > 0) printf "%.4f ", s1[r] / st[r] / tb[r] }' "$results" | median
}

# group_scripts GROUP: the scripts of a group, in the order they first ran
group_scripts() { awk -F'\t' -v g="$1" '$1 == g && !seen[$2]++ { print $2 }' "$results"; }
# show_group GROUP TITLE "A/B ...": tps per script, then the ratios
show_group() {
	local group=$1 title=$2 pairs=$3 s p
	printf '\n  %s\n' "$title"
	printf '    %-13s %12s %9s %10s %9s   %s\n' script "median tps" granted "CPU us/tx" "faults/tx" "tps of each round"
	for s in $(group_scripts "$group"); do
		printf '    %-13s %12.0f %9s %10s %9s   %s\n' "$s" "$(median_tps "$group" "$s")" "$(median_ok "$group" "$s")" \
			"$(median_cpu "$group" "$s")" "$(median_faults "$group" "$s")" \
			"$(awk -F'\t' -v g="$group" -v s="$s" -v d="$DISTURBED" '$1 == g && $2 == s { printf "%.0f%s ", $4, ($6 > d ? "*" : "") }' "$results")"
	done
	show_ratios "$group" "$pairs"
}
# show_ratios GROUP "A/B ...": the median ratio, then each round's
show_ratios() {
	local p
	for p in $2; do
		printf '    %-28s %7s   %s\n' "${p%/*} / ${p#*/}" "$(fmt_ratio "$(ratio "$1" "${p%/*}" "${p#*/}")")" \
			"$(round_ratios "$1" "${p%/*}" "${p#*/}" %.2f)"
	done
}

# Same-run comparisons, at the client counts of BENCH_SAMERUN_CLIENTS
# (default 1).  At one client, the alternating runs above vary by 10-40%
# from round to round on a shared VM: how fast it wakes the client and the
# server for each round trip changes from one run to the next.  Here all
# the scripts of a group run in one pgbench run, each transaction picking
# one at random, so they all meet the same conditions; pgbench logs every
# transaction, and a script's "tps" is 1e6 / its mean latency in µs, the
# rate one client reaches at that latency.  A ratio A/B is thus B's mean
# latency over A's.  Not meant for more clients: there, time spent queueing
# for the CPUs is shared by every transaction whatever its script, which
# pulls the latencies together and the ratios towards 1.
method() { [[ " $METHODS " == *" $1 "* ]]; }
samerun() { method same-run && [[ " $SAMERUN_CLIENTS " == *" $1 "* ]]; }
# run_samerun GROUP CLIENTS "DEFINES" SCRIPT...: RUNS rounds of one run each
run_samerun() {
	local group=$1 clients=$2 defines=$3
	shift 3
	local list="$*"
	run_group "$group" "$clients" "$defines" "${list// /,}"
}
# show_samerun GROUP TITLE "A/B ...": mean latency per script, then ratios
show_samerun() {
	local group=$1 title=$2 pairs=$3 s
	printf '\n  %s\n' "$title"
	printf '    %-13s %12s   %s\n' script "median us" "mean latency (us) of each round"
	for s in $(group_scripts "$group"); do
		printf '    %-13s %12.1f   %s\n' "$s" "$(median_field "$group" "$s" 9)" \
			"$(awk -F'\t' -v g="$group" -v s="$s" -v d="$DISTURBED" '$1 == g && $2 == s { printf "%.1f%s ", $9, ($6 > d ? "*" : "") }' "$results")"
	done
	echo "    ratios A / B: B's mean latency / A's"
	show_ratios "$group" "$pairs"
}

# Paired runs, at the client counts of BENCH_PAIRED_CLIENTS.  With more
# clients than CPUs the same-run comparison reads every ratio near 1, and
# alternating runs differ by up to 10% from one run to the next even for
# two identical scripts.  Here two pgbench processes run at the same time,
# each with half the clients, one running A and the other B: both meet the
# same machine at the same moment, and each gets what its transactions
# cost.  A/B is the ratio of their tps, counted over the time both ran; the
# first to start alternates from round to round.  What the pair shares is
# the CPUs; the locks do not meet (lockfence and advisory locks are
# separate, and the keys random), so only uncontended keys are paired.
# Two controls show what the method reads: an A/A pair, and lf_1rt against
# lf_2rt, which the alternating runs measure too.  Not for many clients per
# CPU: a backend runs a transaction's few dozen microseconds in one go, and
# with long run queues the scheduler serves the backends in turn, one
# transaction each, which pulls the two sides' tps together whatever their
# transactions cost (bench/README.md).  Hence the default: up to 4 clients
# per CPU.  The fence scripts are not paired: their A/A control read
# 0.91-1.08 apart in paired runs, no steadier than alternating ones.
paired() { method paired && [[ " $PAIRED_CLIENTS " == *" $1 "* ]]; }
# pgbench_pair A B CLIENTS FIRST DEFINES...: one paired run; FIRST (a or b)
# starts first.  Sets pair_tps_a, pair_tps_b and run_others.
pgbench_pair() {
	local a=$1 b=$2 clients=$3 first=$4 s t0 t1 w0 w1 others0 others1 st=0
	local -A script=([a]=$1 [b]=$2) pid=()
	shift 4
	t0=$(cpu_ticks)
	w0=$(date +%s%N)
	for s in $first $([ "$first" = a ] && echo b || echo a); do
		# each side's threads on its half of the CPUs
		pgbench_out=$tmp/pair-$s.out pgbench_cpus=$((NCPU / 2 > 0 ? NCPU / 2 : 1)) \
			pgbench_cmd "${script[$s]}" $((clients / 2)) "$SECONDS_PER_RUN" -l --log-prefix="$tmp/pair-log-$s" "$@" &
		pid[$s]=$!
	done
	wait "${pid[a]}" || st=1
	wait "${pid[b]}" || st=1
	if [ "$st" -ne 0 ]; then
		cat "$tmp/pair-a.out" "$tmp/pair-b.out" >&2
		fail "paired pgbench run of $a.sql and $b.sql with $clients clients failed"
	fi
	# Count each side's transactions in the window where both ran: the two
	# pgbench processes start and stop some milliseconds apart, and whoever
	# runs alone meanwhile has the machine to itself.  Log lines: client,
	# transaction, latency, script, end time in epoch seconds and µs.
	read -r pair_tps_a pair_tps_b <<<"$(awk -v margin="$SECONDS_PER_RUN" '
		FNR == 1 { side = (FILENAME ~ /pair-log-a/) ? "a" : "b" }
		{ t = $5 + $6 / 1e6; n[side]++; when[side, n[side]] = t
		  if (!(side in lo) || t < lo[side]) lo[side] = t
		  if (!(side in hi) || t > hi[side]) hi[side] = t }
		END {
			from = (lo["a"] > lo["b"] ? lo["a"] : lo["b"]) + margin / 10
			to = (hi["a"] < hi["b"] ? hi["a"] : hi["b"]) - margin / 10
			if (!n["a"] || !n["b"] || to - from < margin / 2) exit 1
			for (i = 1; i <= n["a"]; i++) if (when["a", i] > from && when["a", i] <= to) ca++
			for (i = 1; i <= n["b"]; i++) if (when["b", i] > from && when["b", i] <= to) cb++
			printf "%.1f %.1f\n", ca / (to - from), cb / (to - from) }' "$tmp"/pair-log-a.* "$tmp"/pair-log-b.*)" ||
		fail "the paired run of $a.sql and $b.sql did not overlap long enough"
	rm -f "$tmp"/pair-log-*
	if [ -z "$pair_tps_a" ] || [ -z "$pair_tps_b" ]; then
		fail "no tps from the paired run of $a.sql and $b.sql"
	fi
	wait_for_backends
	w1=$(date +%s%N)
	t1=$(cpu_ticks)
	read -r others0 _ <<<"$t0"
	read -r others1 _ <<<"$t1"
	run_others=$(others_share "$others0" "$others1" "$w0" "$w1")
}
# run_paired PREFIX CLIENTS "DEFINES" "A/B ...": RUNS rounds of one paired
# run per pair, the pairs' order reversed every other round; each pair's
# rows go to group PREFIX:A/B.  A disturbed run is repeated as in run_group.
run_paired() {
	local prefix=$1 clients=$2 defines=$3 r p a b first attempt best_a best_b best_others order
	for r in $(seq "$RUNS"); do
		first=$([ $((r % 2)) -eq 1 ] && echo a || echo b)
		# shellcheck disable=SC2086 # the pairs are words
		round_order "$r" $4
		for p in "${order[@]}"; do
			a=${p%/*} b=${p#*/} best_others=""
			for attempt in 0 1 2; do
				may_repeat "$attempt" || break
				# shellcheck disable=SC2086
				pgbench_pair "$a" "$b" "$clients" "$first" $defines
				check_locks "the paired run of $a.sql and $b.sql"
				if [ -z "$best_others" ] || [ "$run_others" -lt "$best_others" ]; then
					best_a=$pair_tps_a best_b=$pair_tps_b best_others=$run_others
				fi
				[ "$run_others" -gt "$DISTURBED" ] || break
			done
			printf '%s\t%s\t%s\t%s\t-\t%s\t-\t-\t-\n' "$prefix:$p" "$a" "$r" "$best_a" "$best_others" \
				"$prefix:$p" "$b" "$r" "$best_b" "$best_others" >>"$results"
			runs_done=$((runs_done + 1))
		done
	done
}
# show_paired PREFIX TITLE "A/B ...": per pair, the median tps of both, then
# the median ratio and each round's
show_paired() {
	local prefix=$1 p a b
	printf '\n  %s\n' "$2"
	printf '    %-28s %7s   %-30s %9s %9s\n' pair ratio "ratio of each round" "tps A" "tps B"
	for p in $3; do
		a=${p%/*} b=${p#*/}
		printf '    %-28s %7s   %-30s %9.0f %9.0f\n' "$a / $b" "$(fmt_ratio "$(ratio "$prefix:$p" "$a" "$b")")" \
			"$(round_ratios "$prefix:$p" "$a" "$b" %.2f)" "$(median_tps "$prefix:$p" "$a")" "$(median_tps "$prefix:$p" "$b")"
	done
}
# paired_checks LABEL PREFIX "A/B ...": the summary rows of paired lock runs
paired_checks() {
	local p a b
	for p in $3; do
		a=${p%/*} b=${p#*/}
		case $a/$b in
		lf_*/adv_*) ratio_check locks "$1 $a / $b" "$2:$p" "$a" "$b" '>=' 0.95 ;;
		*) add_check locks "$1 $a / $b" "$(ratio "$2:$p" "$a" "$b")" info - x ;;
		esac
	done
}
# the three shapes against advisory locks; two controls: A/A (adv_2rt2 is
# adv_2rt again), and one round trip against two (lf_1rt / lf_2rt), whose
# answer the alternating runs also give
PAIRED_LOCK_PAIRS="lf_2rt/adv_2rt lf_1rt/adv_1rt lf_try/adv_try adv_2rt2/adv_2rt lf_1rt/lf_2rt"

# lockfence and advisory scripts of the same shape run next to each other
LOCK_SCRIPTS="lf_2rt adv_2rt lf_1rt adv_1rt lf_try adv_try tbl_del tbl_upd"
LOCK_PAIRS="lf_2rt/adv_2rt lf_1rt/adv_1rt lf_try/adv_try lf_2rt/tbl_del lf_2rt/tbl_upd lf_try/tbl_del lf_try/tbl_upd"
FENCE_SCRIPTS="fence_mono fence_plain fence_lease fence_plpgsql fence_noop fence_plain2"
# the scripts with a trigger, and the order of the summary's tps table
FENCE_TRIGGERS="fence_noop fence_mono fence_lease fence_plpgsql"
FENCE_TABLE="fence_plain fence_plain2 $FENCE_TRIGGERS"
FENCE_PAIRS="fence_mono/fence_plain fence_lease/fence_plain fence_mono/fence_plpgsql fence_lease/fence_plpgsql fence_plpgsql/fence_plain fence_noop/fence_plain fence_mono/fence_noop fence_lease/fence_noop fence_plain2/fence_plain"
# fence_checks LABEL GROUP: the summary rows of a fence group
fence_checks() {
	ratio_check fence "$1 fence_mono / fence_plain" "$2" fence_mono fence_plain '>=' 0.952
	ratio_check fence "$1 fence_lease / fence_plain" "$2" fence_lease fence_plain '>=' 0.909
	ratio_check fence "$1 fence_mono / fence_plpgsql" "$2" fence_mono fence_plpgsql '>' 1
	ratio_check fence "$1 fence_lease / fence_plpgsql" "$2" fence_lease fence_plpgsql '>' 1
	add_check fence "$1 fence_plpgsql / fence_plain" "$(ratio "$2" fence_plpgsql fence_plain)" info - x
	# how much of it any BEFORE ROW trigger costs, and how much lockfence
	add_check fence "$1 fence_noop / fence_plain" "$(ratio "$2" fence_noop fence_plain)" info - x
	add_check fence "$1 fence_mono / fence_noop" "$(ratio "$2" fence_mono fence_noop)" info - x
	add_check fence "$1 fence_lease / fence_noop" "$(ratio "$2" fence_lease fence_noop)" info - x
	# A/A control: two identical scripts; how far apart the method reads them
	add_check fence "$1 fence_plain2 / fence_plain (A/A)" "$(ratio "$2" fence_plain2 fence_plain)" info - x
}

# Same-run comparisons are for the targets whose ratios are near 1:
# lockfence against advisory locks, and the fence trigger.  The table
# leases stay in alternating runs only: with synchronous_commit = on each
# waits for WAL flushes, and mixed in, that changes how fast the other
# scripts' round trips are (the CPUs idle while it waits).
SAMERUN_LOCK_SCRIPTS="lf_2rt adv_2rt lf_1rt adv_1rt lf_try adv_try"
SAMERUN_LOCK_PAIRS="lf_2rt/adv_2rt lf_1rt/adv_1rt lf_try/adv_try"
DURABLE_SCRIPTS="lf_2rt tbl_del tbl_upd select1"
DURABLE_PAIRS="lf_2rt/tbl_del lf_2rt/tbl_upd"

# lock_checks LABEL GROUP MODE PAIRS: the summary rows of a lock group
lock_checks() {
	local label=$1 group=$2 mode=$3 pairs=$4 p a b
	for p in $pairs; do
		a=${p%/*} b=${p#*/}
		case $b in
		adv_*) ratio_check locks "$label $a / $b" "$group" "$a" "$b" '>=' 0.95 ;;
		tbl_*)
			# the like-for-like shape: with free keys both always
			# succeed (lf_2rt); with contention the table lease is a
			# try-lock, so compare it with try_acquire
			if { [ "$mode" = uncontended ] && [ "$a" = lf_2rt ]; } ||
				{ [ "$mode" != uncontended ] && [ "$a" = lf_try ]; }; then
				ratio_check locks "$label $a / $b" "$group" "$a" "$b" '>=' 5
				add_check locks "$label $a / $b, ceiling" "$(ceiling "$group" "$a" "$b")" info 5 x
			else
				add_check locks "$label $a / $b" "$(ratio "$group" "$a" "$b")" info 5 x
			fi
			;;
		esac
	done
}
# durable_checks LABEL GROUP: the summary rows of a durable group
durable_checks() {
	local b
	for b in tbl_del tbl_upd; do
		ratio_check locks "$1 lf_2rt / $b" "$2" lf_2rt "$b" '>=' 5
		add_check locks "$1 lf_2rt / $b, ceiling" "$(ceiling "$2" lf_2rt "$b")" info 5 x
	done
}

mode_clients() { # MODE: the client counts it runs with
	local c
	for c in $CLIENTS; do
		[ "$1" = uncontended ] || [ "$c" -gt 1 ] && echo "$c"
	done
	return 0
}

if want locks; then
	for m in "${lock_modes[@]}"; do
		IFS=: read -r mode _ _ <<<"$m"
		for c in $(mode_clients "$mode"); do
			n=0
			method alternating && n=9
			[ "$mode" = uncontended ] && method alternating && n=$((n + 4)) # + the durable group
			[ "$mode" = uncontended ] && samerun "$c" && n=$((n + 1)) # + the same-run comparison
			[ "$mode" = uncontended ] && paired "$c" && n=$((n + $(wc -w <<<"$PAIRED_LOCK_PAIRS")))
			runs_planned=$((runs_planned + n * RUNS))
		done
	done
fi
if want fence; then
	for c in $CLIENTS; do
		n=0
		method alternating && n=6
		samerun "$c" && n=$((n + 1))
		runs_planned=$((runs_planned + n * RUNS))
	done
fi
RETRY_BUDGET=$((runs_planned / 10))
echo "  planned: $runs_planned pgbench runs of $SECONDS_PER_RUN s (about $((runs_planned * (SECONDS_PER_RUN * 10 + 2) / 600 + 1)) minutes in all, up to $RETRY_BUDGET runs more when other work disturbs them)"

if want locks; then
	heading "lock throughput (pgbench; median tps; ratios: median of per-round ratios)"
	echo "  lf_* lockfence; adv_* pg_advisory_lock; tbl_del/tbl_upd table lease released by DELETE/UPDATE;"
	echo "  2rt acquire and release as two statements, 1rt as one, try = try_acquire + release"
	# warm-up: one short run of every script (caches, the pre-filled table)
	for s in $LOCK_SCRIPTS select1; do
		pgbench_run "$s" "$NCPU" 1 -D nkeys="$NKEYS"
		check_locks "warm-up $s.sql"
	done
	for m in "${lock_modes[@]}"; do
		IFS=: read -r mode nkeys title <<<"$m"
		for c in $(mode_clients "$mode"); do
			# SELECT 1 in every group: the round-trip ceiling of the
			# table-lease comparisons
			group_scripts="$LOCK_SCRIPTS select1"
			pairs=$LOCK_PAIRS
			if [ "$mode" = uncontended ]; then
				pairs+=" lf_2rt/select1 lf_1rt/select1 adv_2rt/select1 adv_1rt/select1"
			fi
			if method alternating; then
				# shellcheck disable=SC2086
				run_group "$mode/$c" "$c" "-D nkeys=$nkeys" $group_scripts
				show_group "$mode/$c" "$title, $c clients" "$pairs"
				progress "$mode/$c"
				lock_checks "$mode c=$c" "$mode/$c" "$mode" "$LOCK_PAIRS"
			fi
			if [ "$mode" = uncontended ] && method alternating; then
				for a in lf_2rt lf_1rt; do
					add_check locks "$mode c=$c $a / select1" "$(ratio "$mode/$c" "$a" select1)" info - x
				done
				# The table lease as deployed: PostgreSQL's default
				# synchronous_commit = on, so each acquire and each release
				# waits for its WAL flush.  lockfence writes no WAL, so the
				# setting changes only the baseline.
				run_pgoptions="-c synchronous_commit=on"
				# shellcheck disable=SC2086
				run_group "durable/$c" "$c" "-D nkeys=$nkeys" $DURABLE_SCRIPTS
				run_pgoptions=""
				show_group "durable/$c" "$title, $c clients, synchronous_commit = on (the default)" "$DURABLE_PAIRS"
				progress "durable/$c"
				durable_checks "durable c=$c" "durable/$c"
			fi
			if [ "$mode" = uncontended ] && samerun "$c"; then
				# shellcheck disable=SC2086
				run_samerun "same/$mode/$c" "$c" "-D nkeys=$nkeys" $SAMERUN_LOCK_SCRIPTS
				show_samerun "same/$mode/$c" "$title, $c clients, lockfence and advisory locks in the same run" \
					"$SAMERUN_LOCK_PAIRS"
				progress "same/$mode/$c"
				lock_checks "same-run $mode c=$c" "same/$mode/$c" "$mode" "$SAMERUN_LOCK_PAIRS"
			fi
			if [ "$mode" = uncontended ] && paired "$c"; then
				run_paired "pair/$mode/$c" "$c" "-D nkeys=$nkeys" "$PAIRED_LOCK_PAIRS"
				show_paired "pair/$mode/$c" "$title, $c clients, paired runs: $((c / 2)) clients each, at once (adv_2rt2: adv_2rt again, the A/A control)" \
					"$PAIRED_LOCK_PAIRS"
				progress "pair/$mode/$c"
				paired_checks "paired $mode c=$c" "pair/$mode/$c" "$PAIRED_LOCK_PAIRS"
				if method alternating; then
					add_check locks "alternating $mode c=$c lf_1rt / lf_2rt" "$(ratio "$mode/$c" lf_1rt lf_2rt)" info - x
				fi
			fi
		done
	done
fi

#---- Fence trigger ----

# stall_sites DATA FRAME N: where the samples taken under function FRAME
# were executing: the N most sampled instructions, as shares of all samples,
# each after the two instructions before it (a timer sample usually lands on
# the instruction after the one that waits, for memory say).
stall_sites() {
	local data=$1 frame=$2 n=$3 count sym off dso total code
	perf script -i "$data" -F ip,sym,symoff,dso 2>/dev/null |
		awk -v frame="$frame" 'BEGIN { RS = ""; FS = "\n" }
			{ total++ }
			index($0, " " frame "+") {
				split($1, f, " ")
				if (split(f[2], so, "[+]") != 2) next
				gsub(/[()]/, "", f[3])
				c[so[1] " " so[2] " " f[3]]++
			}
			END { for (k in c) print c[k], k, total }' |
		sort -rn | awk -v n="$n" 'NR <= n' |
		while read -r count sym off dso total; do
			code=""
			# the kernel's frames ([kernel.kallsyms]) have no file to read
			[ -f "$dso" ] && code=$(objdump -d --no-show-raw-insn --disassemble="$sym" "$dso" 2>/dev/null |
				awk -v sym="$sym" -v off="$off" '
					function hex(s,   i, v) { v = 0; s = tolower(s); sub(/^0x/, "", s)
						for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
						return v }
					done { next }	# read on: an early exit would break the pipe
					$2 ~ "^<" sym "[@>]" { start = hex($1); next }
					start && $1 ~ /^[0-9a-f]+:$/ {
						a = hex(substr($1, 1, length($1) - 1)); $1 = ""; sub(/^ +/, "")
						if (a == start + hex(off)) { print prev2 "; " prev " | " $0; done = 1 }
						prev2 = prev; prev = $0 }') || code=""
			printf '      %6.2f%%  %-36s %s\n' "$(awk -v c="$count" -v t="$total" 'BEGIN { print 100 * c / t }')" \
				"$sym+$off" "${code:-?}"
		done
}


# profile_scripts CLIENTS SYMBOLS DEFINES SCRIPT...: one pgbench run per
# script, the whole machine sampled by the CPU timer meanwhile (perf record
# -e cpu-clock: needs no hardware counters, so it works in VMs without
# them).  Prints, per script, the share of all samples spent in each of
# SYMBOLS and their callees, and that share as µs per transaction
# (share x CPUs / tps).  The samples stay in $tmp/perf.SCRIPT.
profile_scripts() {
	local c=$1 symbols=$2 defines=$3 s data share tps sym
	shift 3
	echo "  share of all samples spent in each function and its callees; µs per transaction = share x CPUs / tps"
	printf '    %-13s %8s %8s' script tps samples
	for sym in $symbols; do printf ' %22.22s' "$sym"; done
	echo
	for s in "$@"; do
		data=$tmp/perf.$s
		# shellcheck disable=SC2086
		pgbench_cmd "$s" "$c" $((SECONDS_PER_RUN + 2)) $defines &
		sleep 1
		perf record -q -e cpu-clock -F 1999 -a -g -o "$data" -- sleep "$SECONDS_PER_RUN" >/dev/null 2>&1 ||
			fail "perf record failed"
		wait $! || { cat "$tmp/pgbench.out" >&2; fail "pgbench $s.sql failed during the profile"; }
		wait_for_backends
		perf report -i "$data" --children --sort sym -g none 2>/dev/null >"$data.txt" ||
			fail "perf report failed"
		tps=$(awk '/^tps = / { print $3 }' "$tmp/pgbench.out")
		printf '    %-13s %8.0f %8s' "$s" "$tps" "$(awk '/^# Samples: / { print $3; exit }' "$data.txt")"
		for sym in $symbols; do
			share=$(awk -v sym="$sym" '!/^#/ && $NF == sym { sub(/%/, "", $1); print $1; exit }' "$data.txt")
			printf ' %13s %-8s' "${share:-0}%" \
				"$(awk -v p="${share:-0}" -v n="$NCPU" -v t="$tps" 'BEGIN { printf "%.2fus", p / 100 * n / t * 1e6 }')"
		done
		echo
	done
}

max_clients() { echo "$CLIENTS" | tr ' ' '\n' | sort -n | tail -n 1; }

# profile_fence TOKBASE: the fence scripts, and the do-nothing trigger's,
# at the largest client count: the time under the fence trigger and its
# parts, under the row lock PostgreSQL takes before any BEFORE ROW UPDATE
# trigger, and in every lookup of a shared hash table (the buffer
# mapping's included); then, for lease mode, the instructions the pin's
# samples fell on.
PROFILE_SYMBOLS=${BENCH_PROFILE_SYMBOLS:-"lockfence_fence_check lockfence_pin_token lockfence_xact_callback heap_lock_tuple hash_search_with_hash_value LWLockAcquire"}
profile_fence() {
	local c
	c=$(max_clients)
	heading "profile: fence scripts at $c clients, perf record -e cpu-clock -a -g, ${SECONDS_PER_RUN} s each"
	profile_scripts "$c" "$PROFILE_SYMBOLS" "-D nrows=$NROWS -D tokbase=$1" fence_plain fence_noop fence_mono fence_lease
	echo "  lease mode, the instructions most sampled under lockfence_pin_token (share of all samples;"
	echo "  the two instructions before each, then the sampled one):"
	stall_sites "$tmp/perf.fence_lease" lockfence_pin_token 5
}

# profile_locks: lock scripts (default: try_acquire and
# pg_try_advisory_lock, twice each) on few keys (default one) at the largest
# client count: the lock functions' own share of the time, against the
# system calls and scheduling that every statement costs.
PROFILE_LOCK_SYMBOLS=${BENCH_PROFILE_LOCK_SYMBOLS:-"lockfence_acquire lockfence_try_acquire lockfence_release LockAcquireExtended LockRelease do_syscall_64 __schedule"}
PROFILE_LOCK_SCRIPTS=${BENCH_PROFILE_LOCK_SCRIPTS:-"lf_try adv_try lf_try adv_try"}
PROFILE_LOCK_KEYS=${BENCH_PROFILE_LOCK_KEYS:-1}
profile_locks() {
	local c
	c=$(max_clients)
	heading "profile: $PROFILE_LOCK_SCRIPTS on $PROFILE_LOCK_KEYS key(s) at $c clients, perf record -e cpu-clock -a -g, ${SECONDS_PER_RUN} s each"
	# shellcheck disable=SC2086
	profile_scripts "$c" "$PROFILE_LOCK_SYMBOLS" "-D nkeys=$PROFILE_LOCK_KEYS" $PROFILE_LOCK_SCRIPTS
}
if want profile-locks; then profile_locks; fi

if want fence || want profile; then
	heading "fence trigger: random-row UPDATE of a $NROWS-row table (pgbench; median tps)"
	out=$(sql -v nrows="$NROWS" -f "$tmp/scripts/fence_setup.sql") || fail "bench/fence_setup.sql failed"
	read -r _ tokbase tokmax nleases <<<"$(grep '^tokbase ' <<<"$out")"
	if [ "$nleases" != "$NROWS" ] || [ "$tokbase" != "$tokmax" ]; then
		fail "the row leases' tokens are not tokbase + id (min $tokbase, max $tokmax, $nleases rows)"
	fi
	expected_locks=$NROWS
	echo "  setup: one 2 h lease per row, lockfence.acquire('acct:' || id, '2 h'), taken in id order at the"
	echo "  start of this section, token stored in the row; the UPDATE sets fence_token = $tokbase + id, the"
	echo "  live token of the row's lock (the same values in all six tables), so lease mode accepts and pins it"
	echo "  fence_plain: no trigger; fence_mono: fence_check('fence_token'); fence_lease: fence_check('fence_token',"
	echo "  'acct:', 'id'); fence_plpgsql: the monotonic check in PL/pgSQL; fence_noop: a C BEFORE ROW trigger"
	echo "  that does next to nothing (suppress_redundant_updates_trigger), the price of any such trigger;"
	echo "  fence_plain2: fence_plain on a second table, an A/A control"
	for s in $FENCE_SCRIPTS; do # warm-up
		pgbench_run "$s" "$NCPU" 1 -D nrows="$NROWS" -D tokbase="$tokbase"
	done
	if want fence; then
		for c in $CLIENTS; do
			if method alternating; then
				# shellcheck disable=SC2086
				run_group "fence/$c" "$c" "-D nrows=$NROWS -D tokbase=$tokbase" $FENCE_SCRIPTS
				show_group "fence/$c" "fence trigger, $c clients" "$FENCE_PAIRS"
				progress "fence/$c"
				fence_checks "c=$c" "fence/$c"
				for s in $FENCE_TRIGGERS; do
					add_check fence "c=$c CPU/tx $s / fence_plain" \
						"$(awk -v a="$(median_cpu "fence/$c" "$s")" -v b="$(median_cpu "fence/$c" fence_plain)" \
							'BEGIN { if (b > 0) printf "%.4f", a / b; else print "-" }')" info - x
				done
			fi
			if samerun "$c"; then
				# shellcheck disable=SC2086
				run_samerun "same/fence/$c" "$c" "-D nrows=$NROWS -D tokbase=$tokbase" $FENCE_SCRIPTS
				show_samerun "same/fence/$c" "fence trigger, $c clients, all scripts in the same run" "$FENCE_PAIRS"
				progress "same/fence/$c"
				fence_checks "same-run c=$c" "same/fence/$c"
			fi
		done
		# WAL written per UPDATE, one client, 2,000 transactions each: a
		# count, not a timing, so it is the same from run to run.  Any
		# BEFORE ROW UPDATE trigger makes the executor lock the row before
		# updating it (to hand the trigger the latest version), and that
		# lock is a WAL record of its own.
		heading "fence trigger: WAL per UPDATE (pg_stat_wal, 1 client, 2000 transactions each)"
		printf '    %-14s %12s %12s\n' script records/tx bytes/tx
		declare -A wal_rec wal_bytes
		for s in $FENCE_SCRIPTS; do
			w0=$(sql -F ' ' -c "SELECT wal_records, wal_bytes FROM pg_stat_wal") || fail "could not read pg_stat_wal"
			pgbench_cmd "$s" 1 "" -t 2000 -D nrows="$NROWS" -D tokbase="$tokbase" ||
				{ cat "$tmp/pgbench.out" >&2; fail "pgbench $s.sql (WAL count) failed"; }
			wait_for_backends
			w1=$(sql -F ' ' -c "SELECT wal_records, wal_bytes FROM pg_stat_wal") || fail "could not read pg_stat_wal"
			read -r r0 b0 <<<"$w0"
			read -r r1 b1 <<<"$w1"
			wal_rec[$s]=$(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.2f", (b - a) / 2000 }')
			wal_bytes[$s]=$(awk -v a="$b0" -v b="$b1" 'BEGIN { printf "%.1f", (b - a) / 2000 }')
			printf '    %-14s %12s %12s\n' "$s" "${wal_rec[$s]}" "${wal_bytes[$s]}"
		done
		for s in $FENCE_TRIGGERS; do
			add_check fence "WAL records/tx $s - fence_plain" \
				"$(awk -v a="${wal_rec[$s]}" -v b="${wal_rec[fence_plain]}" 'BEGIN { printf "%.2f", a - b }')" info - records
		done
	fi
	if want profile; then profile_fence "$tokbase"; fi
	released=$(sql -c "SELECT count(*) FILTER (WHERE lockfence.release('acct:' || id, fence_token)) FROM bench.acct_lease") ||
		fail "could not release the row leases"
	[ "$released" = "$NROWS" ] || fail "only $released of $NROWS row leases were still held at the end"
	expected_locks=0
	check_locks "the fence section"
fi

#---- In-process cost ----

# inproc_ms SQL CHECK_RESULT CLEANUP: run SQL in a new session, timed with
# psql's \timing; prints milliseconds.
inproc_ms() {
	local out ms
	out=$(sql -c '\timing on' -c "$1" -c "$3") || fail "in-process query failed: $1"
	[ "$(sed -n 1p <<<"$out")" = "$2" ] ||
		fail "in-process query returned '$(sed -n 1p <<<"$out")', not $2: $1"
	ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -n 1)
	[ -n "$ms" ] || fail "no timing for: $1"
	echo "$ms"
}

if want inproc; then
	heading "in-process cost: $INPROC_N calls in one statement, new session each (ns per call; median of $RUNS)"
	series="generate_series(1::bigint, $INPROC_N) i"
	declare -A inproc_sql inproc_clean
	inproc_sql[lf_try]="SELECT count(lockfence.try_acquire('k' || i, '1 min')) FROM $series"
	inproc_clean[lf_try]="SELECT count(*) FILTER (WHERE lockfence.force_release('k' || i)) FROM $series"
	inproc_sql[adv_try]="SELECT count(*) FILTER (WHERE pg_try_advisory_lock(i)) FROM $series"
	inproc_clean[adv_try]="SELECT pg_advisory_unlock_all()"
	inproc_sql[lf_pair]="SELECT count(*) FILTER (WHERE lockfence.release('k' || i, lockfence.try_acquire('k' || i, '1 min'))) FROM $series"
	inproc_clean[lf_pair]="SELECT 1"
	inproc_sql[adv_pair]="SELECT count(*) FILTER (WHERE CASE WHEN pg_try_advisory_lock(i) THEN pg_advisory_unlock(i) END) FROM $series"
	inproc_clean[adv_pair]="SELECT 1"
	inproc_sql[loop_lf]="SELECT count('k' || i) FROM $series"
	inproc_clean[loop_lf]="SELECT 1"
	inproc_sql[loop_adv]="SELECT count(*) FILTER (WHERE i > 0) FROM $series"
	inproc_clean[loop_adv]="SELECT 1"
	inproc_order=(lf_try adv_try lf_pair adv_pair loop_lf loop_adv)
	declare -A inproc_ns
	for r in $(seq "$RUNS"); do
		for k in "${inproc_order[@]}"; do
			ms=$(inproc_ms "${inproc_sql[$k]}" "$INPROC_N" "${inproc_clean[$k]}")
			inproc_ns[$k]+="$(awk -v ms="$ms" -v n="$INPROC_N" 'BEGIN { printf "%.1f", ms * 1e6 / n }') "
		done
		check_locks "the in-process round $r"
	done
	declare -A inproc_med
	for k in "${inproc_order[@]}"; do
		inproc_med[$k]=$(median <<<"${inproc_ns[$k]}")
	done
	describe() {
		case $1 in
		lf_try) echo "lockfence.try_acquire('k' || i, '1 min')" ;;
		adv_try) echo "pg_try_advisory_lock(i)" ;;
		lf_pair) echo "lockfence.release(.., try_acquire(..))" ;;
		adv_pair) echo "pg_try_advisory_lock + pg_advisory_unlock" ;;
		loop_lf) echo "the loop alone, with 'k' || i" ;;
		loop_adv) echo "the loop alone" ;;
		esac
	}
	printf '    %-44s %8s   %s\n' call "ns/call" "each round"
	for k in "${inproc_order[@]}"; do
		printf '    %-44s %8.1f   %s\n' "$(describe "$k")" "${inproc_med[$k]}" "${inproc_ns[$k]}"
	done
	net_lf=$(awk -v a="${inproc_med[lf_try]}" -v b="${inproc_med[loop_lf]}" 'BEGIN { printf "%.1f", a - b }')
	net_adv=$(awk -v a="${inproc_med[adv_try]}" -v b="${inproc_med[loop_adv]}" 'BEGIN { printf "%.1f", a - b }')
	printf '    net of the loop: try_acquire %s ns, pg_try_advisory_lock %s ns\n' "$net_lf" "$net_adv"
	inproc_ratio=$(awk -v a="${inproc_med[lf_try]}" -v b="${inproc_med[adv_try]}" 'BEGIN { printf "%.4f", a / b }')
	add_check inproc "try_acquire ns / pg_try_advisory_lock ns" "$inproc_ratio" '<=' 1.5 x
	add_check inproc "try_acquire ns per call" "${inproc_med[lf_try]}" info - ns
	add_check inproc "pg_try_advisory_lock ns per call" "${inproc_med[adv_try]}" info - ns
	add_check inproc "net of loop: try_acquire / pg_try_advisory_lock" \
		"$(awk -v a="$net_lf" -v b="$net_adv" 'BEGIN { printf "%.4f", a / b }')" info - x
	add_check inproc "release(try_acquire) / try_advisory+unlock" \
		"$(awk -v a="${inproc_med[lf_pair]}" -v b="${inproc_med[adv_pair]}" 'BEGIN { printf "%.4f", a / b }')" info - x
fi

#---- Handoff latency ----

if want handoff; then
	heading "handoff latency on one contended lock: release -> waiter returns ($HANDOFF_N each, alternating)"
	out=$(sql -F ' ' -c "
		SELECT kind, count(*),
		       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us)::numeric, 1),
		       round(percentile_cont(0.9) WITHIN GROUP (ORDER BY us)::numeric, 1),
		       round(min(us)::numeric, 1), round(max(us)::numeric, 1)
		FROM bench.handoff($HANDOFF_N, 'host=$tmp port=$port dbname=bench')
		GROUP BY kind ORDER BY kind DESC") || fail "the handoff measurement failed"
	printf '    %-10s %6s %10s %10s %10s %10s\n' lock n "median us" "p90 us" "min us" "max us"
	while read -r kind n p50 p90 min max; do
		printf '    %-10s %6s %10s %10s %10s %10s\n' "$kind" "$n" "$p50" "$p90" "$min" "$max"
		if [ "$kind" = lockfence ]; then
			add_check handoff "lockfence median us" "$p50" '<=' 100 us
			add_check handoff "lockfence p90 us" "$p90" info - us
		else
			add_check handoff "advisory median us (for comparison)" "$p50" info - us
			add_check handoff "advisory p90 us" "$p90" info - us
		fi
	done <<<"$out"
	check_locks "the handoff test"
fi

#---- Summary ----

heading "SUMMARY"
echo "  tuning: $TUNING"
echo "  pgbench $PGBENCH_OPTS, $RUNS rounds x $SECONDS_PER_RUN s, clients $CLIENTS"
awk -F'\t' -v d="$DISTURBED" -v r="$retries" "$RUN_KEY_AWK"'new_run() { runs++; if ($6 > d) n++ } END {
	printf "  %d pgbench runs repeated because other processes used more than %d%% of the CPU; %d of %d kept runs still were\n", r, d, n, runs }' "$results"
echo "  waited $((WAIT_BUDGET_START - WAIT_BUDGET)) s in all for other work on the machine to calm down"
if want locks && method alternating; then
	echo
	echo "  lock throughput, median tps"
	printf '  %-12s %4s' mode c
	for s in $LOCK_SCRIPTS select1; do printf ' %9s' "$s"; done
	echo
	for m in "${lock_modes[@]}"; do
		IFS=: read -r mode _ _ <<<"$m"
		for c in $(mode_clients "$mode"); do
			printf '  %-12s %4s' "$mode" "$c"
			for s in $LOCK_SCRIPTS select1; do
				v=$(median_tps "$mode/$c" "$s" || true)
				if [ -n "$v" ]; then printf ' %9.0f' "$v"; else printf ' %9s' -; fi
			done
			echo
		done
	done
	echo
	echo "  share of transactions that got the lock (median; the rest found it taken), contended modes"
	printf '  %-12s %4s' mode c
	for s in lf_try adv_try tbl_del tbl_upd; do printf ' %9s' "$s"; done
	echo
	for m in "${lock_modes[@]}"; do
		IFS=: read -r mode _ _ <<<"$m"
		[ "$mode" = uncontended ] && continue
		for c in $(mode_clients "$mode"); do
			printf '  %-12s %4s' "$mode" "$c"
			for s in lf_try adv_try tbl_del tbl_upd; do printf ' %9s' "$(median_ok "$mode/$c" "$s")"; done
			echo
		done
	done
fi
if want fence && method alternating; then
	echo
	echo "  fence trigger, median tps"
	printf '  %-12s %4s' "" c
	for s in $FENCE_TABLE; do printf ' %13s' "$s"; done
	echo
	for c in $CLIENTS; do
		printf '  %-12s %4s' "" "$c"
		for s in $FENCE_TABLE; do printf ' %13.0f' "$(median_tps "fence/$c" "$s")"; done
		echo
	done
fi
echo
printf '  %-8s %-50s %10s  %-10s %-6s %s\n' section check value target result "rounds meeting it"
awk -F'\t' "$MEETS_AWK"'
	function show(v, unit) { return unit == "x" ? sprintf("%.2fx", v) : sprintf("%.1f %s", v, unit) }
	{
		section = $1; check = $2; value = $3; op = $4; target = $5; unit = $6; rounds = $7
		if (op == "info") { result = "info"; t = (target == "-") ? "" : "(" target (unit == "x" ? "x" : "") ")" }
		else {
			ok = meets(value + 0, op, target + 0)
			result = ok ? "PASS" : "MISS"
			t = op " " target (unit == "x" ? "x" : " " unit)
			if (ok) pass++; else miss++
		}
		printf "  %-8s %-50s %10s  %-10s %-6s %s\n", section, check, show(value, unit), t, result, (op == "info") ? "" : rounds
	}
	END { printf "\n  %d PASS, %d MISS (benchmarks do not fail the build)\n", pass, miss }' "$summary"
elapsed=$(($(date +%s) - bench_started))
printf '  measured in %d:%02d\n' $((elapsed / 60)) $((elapsed % 60))
