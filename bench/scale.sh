#!/usr/bin/env bash
# make bench-scale: does any request pay for the size of the lock table?
#
# One client (the "victim", Python with psycopg2, timing each call) takes
# and releases a lock of its own in a loop (try_acquire + release, through a
# PL/pgSQL wrapper that turns a refusal into a normal return, so that
# refused requests can be timed too), for SCALE_SECONDS per scenario, while
# the table and the rest of the server are in one of these states:
#
#   idle              the table empty
#   held N            N leases held (SCALE_SIZES), by another role
#   over quota        two clients of a role at lockfence.max_locks_per_role
#                     keep asking for more (each refusal used to walk the
#                     whole table under every partition lock); control: two
#                     clients granting and releasing
#   view readers      two clients keep reading lockfence.locks; control: two
#                     clients of CPU work
#   expiring          SCALE_EXPIRING leases ending within about a second
#   waiters           SCALE_WAITERS clients queued on one held lock; control:
#                     as many clients sleeping in pg_sleep
#   full table        every slot held: the victim's requests are refused
#
# Each scenario prints the victim's calls per second and its latency
# median, p99 and maximum (ms), and its
# ratios to the idle figures, or, where background clients load the two
# CPUs, to a control run with the same number of clients doing something
# else (normal grants; CPU work): on a 2-CPU machine two busy clients raise
# every latency by themselves.  Target: p99 and max within 2x, no stall
# above 10 ms.  The server is a throwaway one (temporary directory,
# unix socket, random free port, as postgres when run as root), removed on
# exit.
#
# Environment: SCALE_SIZES (default "1000 100000 1000000 10000000"),
# SCALE_SECONDS (5), SCALE_EXPIRING (1000000), SCALE_WAITERS (1000),
# PG_CONFIG.  The largest size needs about 4 GB of shared memory.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh

SCALE_SIZES=${SCALE_SIZES:-"1000 100000 1000000 10000000"}
SCALE_SECONDS=${SCALE_SECONDS:-5}
SCALE_EXPIRING=${SCALE_EXPIRING:-1000000}
SCALE_WAITERS=${SCALE_WAITERS:-1000}

lf_install_packages
lf_build_and_install
bindir=$(lf_bindir)

# room for the largest size plus the victim's and the other clients' locks,
# within lockfence.max_locks's limit of 10,000,000 (so the largest size may
# be held 1,000 short)
largest=0
for n in $SCALE_SIZES; do [ "$n" -gt "$largest" ] && largest=$n; done
max_locks=$((largest > SCALE_EXPIRING ? largest + 1000 : SCALE_EXPIRING + 1000))
[ "$max_locks" -gt 10000000 ] && max_locks=10000000

tmp=$(mktemp -d /tmp/lockfence-scale.XXXXXX)
chmod 755 "$tmp"
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$tmp"
port=$(lf_pick_port)
cleanup() {
	jobs -p | xargs -r kill 2>/dev/null || true
	lf_server_stop "$tmp"
	rm -rf "$tmp"
}
trap cleanup EXIT

lf_server_init "$tmp" "$port" <<EOF
shared_preload_libraries = 'lockfence'
lockfence.max_locks = $max_locks
max_connections = $((SCALE_WAITERS + 50))
shared_buffers = 128MB
synchronous_commit = off
EOF
lf_server_start "$tmp" "$src"

sql() { run_pg "$bindir/psql" -h "$tmp" -p "$port" -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
pgbench() { run_pg "$bindir/pgbench" -h "$tmp" -p "$port" -n "$@" postgres; }

sql <<'EOF'
CREATE EXTENSION lockfence;
CREATE ROLE filler;
CREATE ROLE victim LOGIN;
CREATE ROLE attacker LOGIN;
GRANT ALL ON SCHEMA public TO victim, attacker;
-- take and release a lock; a refusal (table full, role at its quota) is
-- counted instead of aborting the pgbench client
CREATE FUNCTION public.grant_release(name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lockfence.release(name, lockfence.try_acquire(name, '10 s'));
EXCEPTION WHEN out_of_memory OR configuration_limit_exceeded THEN
    NULL;
END $$;
EOF

cat >"$tmp/attacker.sql" <<'EOF'
\set k random(1, 1000000000)
SELECT public.grant_release('attack:' || :k);
EOF
cat >"$tmp/reader.sql" <<'EOF'
SELECT count(*) FROM lockfence.locks;
EOF
cat >"$tmp/granter.sql" <<'EOF'
SELECT public.grant_release('grant:' || :client_id);
EOF
cat >"$tmp/sleeper.sql" <<'EOF'
SELECT pg_sleep(600);
EOF
cat >"$tmp/cpu.sql" <<'EOF'
SELECT count(*) FROM generate_series(1, 100000);
EOF
cat >"$tmp/waiter.sql" <<'EOF'
SELECT lockfence.release('hot', lockfence.acquire('hot', '1 min', '10 min'));
EOF
chmod 644 "$tmp"/*.sql

idle=""
last=""
# measure LABEL [REFERENCE]: run the victim for SCALE_SECONDS; print its
# line, with its p99 and max as ratios to REFERENCE ("tps p50 p99 max" of
# an earlier run; default: idle).  Sets last.
measure() {
	local label=$1 ref=${2:-} stats
	stats=$(/usr/bin/python3 - "$tmp" "$port" "$SCALE_SECONDS" <<'PY'
# the victim: one connection, a prepared grant + release of its own lock,
# each call timed by the client
import sys, time
import psycopg2

host, port, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = psycopg2.connect(host=host, port=port, dbname="postgres", user="victim")
conn.autocommit = True
cur = conn.cursor()
cur.execute("PREPARE victim AS SELECT public.grant_release('victim:1')")
latencies = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t0 = time.perf_counter()
    cur.execute("EXECUTE victim")
    latencies.append(time.perf_counter() - t0)
latencies.sort()
n = len(latencies)
print(n, "%.3f %.3f %.3f" % (latencies[n // 2] * 1000, latencies[int(n * 0.99)] * 1000,
                             latencies[-1] * 1000))
PY
)
	set -- $stats
	local tps
	tps=$(awk -v n="$1" -v s="$SCALE_SECONDS" 'BEGIN { printf "%.0f", n / s }')
	last="$tps $2 $3 $4"
	[ -z "$idle" ] && idle=$last
	# compared with idle, or with the control run given as $2
	set -- $last ${ref:-$idle}
	(cd "$src" && lf_bench_record "scale: one client's try_acquire + release, lockfence.max_locks = $max_locks, $SCALE_SECONDS s" \
		"p99 ms: $label" "$3" &&
		lf_bench_record "scale: one client's try_acquire + release, lockfence.max_locks = $max_locks, $SCALE_SECONDS s" \
		"max ms: $label" "$4")
	awk -v label="$label" -v tps="$1" -v p50="$2" -v p99="$3" -v mx="$4" \
		-v itps="$5" -v ip50="$6" -v ip99="$7" -v imx="$8" 'BEGIN {
		verdict = (p99 <= 2 * ip99 && mx <= 2 * imx && mx <= 10) ? "PASS" : "MISS";
		printf "%-44s %7d %7.3f %7.3f %7.3f   %5.2f %5.2f  %s\n",
			label, tps, p50, p99, mx, p99 / ip99, mx / imx, verdict
	}'
}

# background LOAD_SCRIPT ROLE CLIENTS: pgbench load for the next measurement
background() {
	pgbench -U "$2" -M prepared -c "$3" -j "$3" -T $((SCALE_SECONDS + 2)) \
		-f "$tmp/$1.sql" >"$tmp/$1.out" 2>&1 &
	sleep 1
}

held=0
# fill N: make N leases of role filler held (1 h)
fill() {
	local n=$(($1 < max_locks - 1000 ? $1 : max_locks - 1000))
	[ "$n" -le "$held" ] && return 0
	sql -c "SET ROLE filler; SELECT count(lockfence.try_acquire('held:' || i, '1 h')) FROM generate_series($((held + 1)), $n) i" >/dev/null
	held=$n
}

echo "lockfence scale figures: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo); PostgreSQL $("$bindir/postgres" --version | awk '{print $3}'); lockfence.max_locks = $max_locks"
echo "the victim: one client, try_acquire + release of its own lock, ${SCALE_SECONDS} s per scenario"
echo
printf "%-44s %7s %7s %7s %7s   %5s %5s\n" "scenario" "calls/s" "p50 ms" "p99 ms" "max ms" "p99/r" "max/r"
measure "idle"

# leases ending within about a second, reclaimed in the background
if [ "$SCALE_EXPIRING" -gt 0 ]; then
	sql -c "SET ROLE filler; SELECT count(lockfence.try_acquire('exp:' || i, '3 s')) FROM generate_series(1, $SCALE_EXPIRING) i" >/dev/null
	measure "expiring ($SCALE_EXPIRING leases)"
	sleep 2
	echo "    slots used after they ended: $(sql -c 'SELECT slots_used FROM lockfence.stats')"
fi

for n in $SCALE_SIZES; do
	fill "$n"
	measure "held $held"
done

# a role at its quota, asking for more from two clients
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
echo "    attacker transactions: $(sed -n 's/^number of transactions actually processed: //p' "$tmp/attacker.out")"
sql -c "ALTER SYSTEM RESET lockfence.max_locks_per_role" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1

# two clients reading the view
background cpu postgres 2
measure "held $held, 2 clients of CPU load (control)"
wait
control=$last
background reader postgres 2
measure "held $held, 2 clients reading the view" "$control"
wait
echo "    view reads: $(sed -n 's/^number of transactions actually processed: //p' "$tmp/reader.out")"

# many waiters on one held lock; control: as many clients in pg_sleep
if [ "$SCALE_WAITERS" -gt 0 ]; then
	pgbench -M prepared -c "$SCALE_WAITERS" -j 2 -t 1 -f "$tmp/sleeper.sql" >"$tmp/sleeper.out" 2>&1 &
	sleeper_pid=$!
	for _ in $(seq 120); do
		[ "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")" -ge "$SCALE_WAITERS" ] && break
		sleep 1
	done
	measure "held $held, $SCALE_WAITERS clients in pg_sleep (control)"
	control=$last
	sql -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'" >/dev/null
	wait "$sleeper_pid" || true
	sql -c "SELECT lockfence.try_acquire('hot', '1 min')" >/dev/null
	pgbench -M prepared -c "$SCALE_WAITERS" -j 2 -t 1 -f "$tmp/waiter.sql" >"$tmp/waiter.out" 2>&1 &
	waiter_pid=$!
	for _ in $(seq 120); do
		[ "$(sql -c "SELECT waiters FROM lockfence.locks WHERE name = 'hot'")" -ge "$SCALE_WAITERS" ] 2>/dev/null && break
		sleep 1
	done
	measure "held $held, $(sql -c "SELECT waiters FROM lockfence.locks WHERE name = 'hot'") waiters on one lock" "$control"
	sql -c "SELECT lockfence.force_release('hot')" >/dev/null
	wait "$waiter_pid" || true
	echo "    waiters served: $(sed -n 's/^number of transactions actually processed: //p' "$tmp/waiter.out")"
fi

# every slot held
sql -c "SET ROLE filler; SELECT count(lockfence.try_acquire('full:' || i, '1 h')) FROM generate_series(1, $max_locks) i" >/dev/null 2>&1 || true
echo "    slots used / available: $(sql -c 'SELECT slots_used, slots_available FROM lockfence.stats')"
measure "full table (every request refused)"
