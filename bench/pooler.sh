#!/usr/bin/env bash
# make bench-pooler: lockfence through pgbouncer against the only advisory
# lock that works through a transaction pooler, pg_advisory_xact_lock.
#
# pgbouncer (transaction pooling) in front of a throwaway server; pgbench
# clients go through it.  Each comparison runs the two sides alternately
# (A B A B ...), POOLER_ROUNDS times POOLER_SECONDS each, same clients,
# same pool, and prints each side's transactions per second and the median
# of the per-round ratios lockfence / advisory (higher is better for
# lockfence; target: at least 1.0).  Every run must finish without an
# error or a failed transaction: a client never retries, so a wait that
# ended in 55P03 would show up as a failure here.
#
#   hot lock + UPDATE   every client takes the same lock, increments a
#                       counter row, frees the lock (the read-modify-write
#                       a lock protects).  lockfence: acquire; UPDATE;
#                       release.  advisory: BEGIN; pg_advisory_xact_lock;
#                       UPDATE; COMMIT.
#   hot lock            the same without the UPDATE: acquire; release
#                       against BEGIN; pg_advisory_xact_lock; COMMIT.
#   own lock + UPDATE   each client its own lock and row: the cost of the
#                       calls when nobody waits.
#   ... acquire_xact    the same with lockfence's transaction lock, in the
#                       advisory side's shape (BEGIN; acquire_xact; ...;
#                       COMMIT): the two lock implementations alone.
#   control             no lock: the lease shape (three transactions:
#                       SELECT 1; UPDATE; SELECT 1) against the transaction
#                       shape (BEGIN; SELECT 1; UPDATE; COMMIT) on each
#                       client's own row.  A lease outlives its transaction,
#                       so acquire, write and release are separate
#                       transactions, and pgbouncer hands out a server
#                       connection for each: this ratio is the most any
#                       lease can reach against pg_advisory_xact_lock here.
#
# The pool has one server connection per client: pgbench gives a client
# one connection, so the set-up the README recommends for pools smaller
# than the clients (waits through a pool of their own) cannot be driven by
# it; t/022_pooler_queue.pl runs that one.  After the runs the counters
# must hold exactly the UPDATEs pgbench counted.  Environment: POOLER_CLIENTS (8), POOLER_SECONDS (10),
# POOLER_ROUNDS (3), PG_CONFIG.  Output: standard output and, with
# POOLER_RESULTS=file, appended to that file.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh

POOLER_CLIENTS=${POOLER_CLIENTS:-8}
POOLER_SECONDS=${POOLER_SECONDS:-10}
POOLER_ROUNDS=${POOLER_ROUNDS:-3}

lf_install_packages
lf_build_and_install
bindir=$(lf_bindir)

tmp=$(mktemp -d /tmp/lockfence-pooler.XXXXXX)
chmod 755 "$tmp"
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$tmp"
port=$(lf_pick_port)
bport=$(lf_pick_port)
cleanup() {
	[ -f "$tmp/pgbouncer.pid" ] && kill "$(cat "$tmp/pgbouncer.pid")" 2>/dev/null || true
	lf_server_stop "$tmp"
	rm -rf "$tmp"
}
trap cleanup EXIT

lf_server_init "$tmp" "$port" <<EOF
shared_preload_libraries = 'lockfence'
max_connections = 100
shared_buffers = 128MB
EOF
lf_server_start "$tmp" "$src"

sql() { run_pg "$bindir/psql" -h "$tmp" -p "$port" -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
sql <<EOF
CREATE EXTENSION lockfence;
CREATE TABLE ctr (id int PRIMARY KEY, v bigint NOT NULL);
INSERT INTO ctr SELECT i, 0 FROM generate_series(0, $POOLER_CLIENTS) i;
EOF

# pgbouncer: one pool for both sides, one server connection per client
printf '"%s" ""\n' "$TEST_USER" >"$tmp/userlist.txt"
cat >"$tmp/pgbouncer.ini" <<EOF
[databases]
same = host=$tmp port=$port dbname=postgres pool_size=$POOLER_CLIENTS

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
chmod 644 "$tmp"/userlist.txt "$tmp"/pgbouncer.ini
run_pg /usr/sbin/pgbouncer -d "$tmp/pgbouncer.ini"
for _ in $(seq 50); do
	[ -S "$tmp/.s.PGSQL.$bport" ] && break
	sleep 0.1
done

# the scripts; :client_id picks the own lock and row
cat >"$tmp/lf_hot_update.sql" <<'EOF'
SELECT lockfence.acquire('hot', '10 s', '60 s') AS tok \gset
UPDATE ctr SET v = v + 1 WHERE id = 0;
SELECT lockfence.release('hot', :tok);
EOF
cat >"$tmp/adv_hot_update.sql" <<'EOF'
BEGIN;
SELECT pg_advisory_xact_lock(0);
UPDATE ctr SET v = v + 1 WHERE id = 0;
COMMIT;
EOF
cat >"$tmp/lf_hot.sql" <<'EOF'
SELECT lockfence.acquire('hot', '10 s', '60 s') AS tok \gset
SELECT lockfence.release('hot', :tok);
EOF
cat >"$tmp/adv_hot.sql" <<'EOF'
BEGIN;
SELECT pg_advisory_xact_lock(0);
COMMIT;
EOF
cat >"$tmp/lf_own_update.sql" <<'EOF'
\set id :client_id + 1
SELECT lockfence.acquire('own:' || ':id', '10 s', '60 s') AS tok \gset
UPDATE ctr SET v = v + 1 WHERE id = :id;
SELECT lockfence.release('own:' || ':id', :tok);
EOF
cat >"$tmp/adv_own_update.sql" <<'EOF'
\set id :client_id + 1
BEGIN;
SELECT pg_advisory_xact_lock(:id);
UPDATE ctr SET v = v + 1 WHERE id = :id;
COMMIT;
EOF
cat >"$tmp/lf_hot_xact.sql" <<'EOF'
BEGIN;
SELECT lockfence.acquire_xact('hot', '60 s');
COMMIT;
EOF
cat >"$tmp/lf_own_xact_update.sql" <<'EOF'
\set id :client_id + 1
BEGIN;
SELECT lockfence.acquire_xact('own:' || ':id', '60 s');
UPDATE ctr SET v = v + 1 WHERE id = :id;
COMMIT;
EOF
cat >"$tmp/ctl_lease_shape_update.sql" <<'EOF'
\set id :client_id + 1
SELECT 1;
UPDATE ctr SET v = v + 1 WHERE id = :id;
SELECT 1;
EOF
cat >"$tmp/ctl_xact_shape_update.sql" <<'EOF'
\set id :client_id + 1
BEGIN;
SELECT 1;
UPDATE ctr SET v = v + 1 WHERE id = :id;
COMMIT;
EOF
chmod 644 "$tmp"/*.sql

# run DB SCRIPT: one pgbench run through pgbouncer database DB; prints its
# tps, counts a failed run in $tmp/failures and the UPDATEs it made in
# $tmp/updates
: >"$tmp/failures"
: >"$tmp/updates"
run() {
	local db=$1 script=$2 out
	out=$(run_pg "$bindir/pgbench" -h "$tmp" -p "$bport" -n -M simple \
		-c "$POOLER_CLIENTS" -j 2 -T "$POOLER_SECONDS" -f "$tmp/$script" "$db" 2>&1) || {
		{ echo "pgbench failed ($script through $db):"; echo "$out"; } >&2
		echo x >>"$tmp/failures"
		echo 0
		return
	}
	if ! grep -q '^number of failed transactions: 0 ' <<<"$out"; then
		{ echo "failed transactions ($script through $db):"; grep failed <<<"$out"; } >&2
		echo x >>"$tmp/failures"
	fi
	case $script in
	*update*) sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" >>"$tmp/updates" ;;
	esac
	sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out"
}

# compare LABEL LF_DB LF_SCRIPT ADV_DB ADV_SCRIPT
compare() {
	local label=$1 lf_db=$2 lf_script=$3 adv_db=$4 adv_script=$5 lf adv ratios=""
	local lf_all="" adv_all=""
	for _ in $(seq "$POOLER_ROUNDS"); do
		lf=$(run "$lf_db" "$lf_script")
		adv=$(run "$adv_db" "$adv_script")
		lf_all="$lf_all $lf"
		adv_all="$adv_all $adv"
		ratios="$ratios $(awk -v a="$lf" -v b="$adv" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
	done
	median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
	printf '%-24s %10.0f %10.0f %8.2f   ratios:%s\n' "$label" \
		"$(median <<<"$lf_all")" "$(median <<<"$adv_all")" "$(median <<<"$ratios")" "$ratios"
	lf_bench_record "pgbouncer transaction pooling, $POOLER_CLIENTS clients, pool of $POOLER_CLIENTS, $POOLER_ROUNDS rounds of $POOLER_SECONDS s, alternating" \
		"tps, lockfence / pg_advisory_xact_lock, median of rounds: $label" "$(median <<<"$ratios")"
}

v0=$(sql -c 'SELECT sum(v) FROM ctr')
stats0=$(sql -c 'SELECT wait_timeouts FROM lockfence.stats')
{
	echo "lockfence through pgbouncer $(/usr/sbin/pgbouncer --version | head -1 | awk '{print $2}') (transaction pooling) against pg_advisory_xact_lock: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo "?")$(git diff --quiet HEAD -- src sql bench 2>/dev/null || echo " with changes")"
	echo "machine: $(nproc) CPUs; PostgreSQL $("$bindir/postgres" --version | awk '{print $3}'); $POOLER_CLIENTS pgbench clients, pool of $POOLER_CLIENTS server connections, $POOLER_ROUNDS rounds of $POOLER_SECONDS s, alternating"
	echo
	printf '%-24s %10s %10s %8s\n' "comparison" "lockfence" "advisory" "ratio"
	compare "hot lock + UPDATE" same lf_hot_update.sql same adv_hot_update.sql
	compare "hot lock" same lf_hot.sql same adv_hot.sql
	compare "own lock + UPDATE" same lf_own_update.sql same adv_own_update.sql
	compare "control: no lock" same ctl_lease_shape_update.sql same ctl_xact_shape_update.sql
	compare "hot, acquire_xact" same lf_hot_xact.sql same adv_hot.sql
	compare "own + UPDATE, acq_xact" same lf_own_xact_update.sql same adv_own_update.sql
} | tee "$tmp/report"
v1=$(sql -c 'SELECT sum(v) FROM ctr')
stats1=$(sql -c 'SELECT wait_timeouts FROM lockfence.stats')
failures=$(wc -l <"$tmp/failures")
updates=$(awk '{ n += $1 } END { print n + 0 }' "$tmp/updates")
echo "runs with an error or a failed transaction: $failures; lockfence wait timeouts: $((stats1 - stats0)); UPDATEs counted by pgbench: $updates, made: $((v1 - v0))" | tee -a "$tmp/report"

[ -n "${POOLER_RESULTS:-}" ] && { cat "$tmp/report"; echo; } >>"$POOLER_RESULTS"
[ "$failures" -eq 0 ] && [ "$stats1" -eq "$stats0" ] && [ "$updates" -eq $((v1 - v0)) ] && [ "$updates" -gt 0 ]
