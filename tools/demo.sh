#!/usr/bin/env bash
# The demo command (make demo): builds and installs lockfence, starts a
# throwaway PostgreSQL server with lockfence preloaded, and then
#
#   part 1  shows two clients, A and B, contending for one lock.  Every step
#           is checked; the demo exits non-zero as soon as something does not
#           behave as narrated.
#   part 2  plays the classic race conditions with real concurrent clients
#           (pgbench with custom scripts, and A and B again), each first
#           without protection and then with lockfence, and prints one table
#           of results (tools/demo_races.sh).  Unprotected runs are expected
#           to show the anomaly but may by chance not; the demo exits
#           non-zero if a protected run shows one.
#
# As root it installs missing Debian packages and runs the server and the
# clients as $TEST_USER (default postgres); as another user it runs them
# directly and expects the packages to be present.
#
# Environment: PG_CONFIG (default: PostgreSQL 15's), TEST_USER.
#
# shellcheck disable=SC2015  # "check && check || fail" is meant
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh

lf_install_packages
lf_build_and_install
bindir=$(lf_bindir)

LOCK='order:42'

#---- Output helpers ----

heading() { printf '\n=== %s\n' "$*"; }
say() { printf -- '-- %s\n' "$*"; }
passed() { printf '   [ok] %s\n' "$*"; }
failed=0
fail() {
	printf '\nDEMO FAILED: %s\n' "$*" >&2
	failed=1
	exit 1
}

# Float arithmetic and comparisons on epoch seconds.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
holds() { awk "BEGIN { exit !($1) }"; }
ms() { awk "BEGIN { printf \"%.1f ms\", ($1) * 1000 }"; }
secs() { awk "BEGIN { printf \"%.2f s\", $1 }"; }

is_int() { [[ $1 =~ ^[0-9]+$ ]]; }

#---- Throwaway server ----

tmp=""
server_started=0
declare -A sess_in sess_out sess_pid backend_pid
frozen_pids=()	# backends stopped with SIGSTOP (part 2), to resume on exit

cleanup() {
	local status=$?
	set +e
	trap - INT TERM
	# a stopped backend would hold up the server's shutdown
	for pid in "${frozen_pids[@]}"; do
		kill -CONT "$pid" 2>/dev/null
	done
	for c in "${!sess_in[@]}"; do
		fd=${sess_in[$c]}
		exec {fd}>&-
	done
	if [ "$server_started" -eq 1 ]; then
		if [ "$failed" -eq 1 ] && [ -s "$tmp/server.log" ]; then
			echo "--- last lines of the server log:" >&2
			tail -n 20 "$tmp/server.log" >&2
		fi
		lf_server_stop "$tmp"
	fi
	for c in "${!sess_out[@]}"; do
		fd=${sess_out[$c]}
		exec {fd}<&-
	done
	for c in "${!sess_pid[@]}"; do
		wait "${sess_pid[$c]}" 2>/dev/null
	done
	[ -n "$tmp" ] && rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lockfence-demo.XXXXXX")
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$tmp"
cd "$tmp"	# the server's user may not be able to enter the source tree
port=$(lf_pick_port) || fail "no unused port found"

lf_server_init "$tmp" "$port" <<EOF || fail "initdb failed"
shared_preload_libraries = 'lockfence'
fsync = off
EOF
server_started=1
lf_server_start "$tmp" "$src" || fail "could not start the server"

conninfo="host=$tmp port=$port dbname=postgres"

# A third connection that looks on (one psql per query, stops on error).
observer_psql() {
	run_pg "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -P footer=off -P null='(null)' \
		-d "$conninfo application_name=observer" "$@"
}
# Show a query and its result.
observe() {
	printf 'observer=> %s\n' "$1"
	observer_psql -c "$1" >"$tmp/observer.out" 2>&1 ||
		{ cat "$tmp/observer.out" >&2; fail "observer query failed: $1"; }
	sed -e '/^$/d' -e 's/^/    /' "$tmp/observer.out"
}
# observe_value VAR SQL: set VAR to the single value SQL returns.
nwaiting='' row='' expires='' holder=''
observe_value() {
	observer_psql -At -c "$2" >"$tmp/observer.out" 2>&1 ||
		{ cat "$tmp/observer.out" >&2; fail "observer query failed: $2"; }
	printf -v "$1" '%s' "$(cat "$tmp/observer.out")"
}
show_locks() {
	observe "SELECT name, token, holder_pid, waiters, round(extract(epoch FROM expires_at - now()), 1) AS expires_in_s FROM lockfence.locks;"
}
# Wait until n clients queue for the lock.
wait_for_waiters() {
	local n=$1
	for _ in $(seq 200); do
		observe_value nwaiting "SELECT coalesce(sum(waiters), 0) FROM lockfence.locks WHERE name = '$LOCK'"
		[ "$nwaiting" = "$n" ] && return 0
		sleep 0.05
	done
	fail "$n client(s) never showed up as waiting for $LOCK"
}

#---- Client sessions ----
#
# Each client is one long-lived psql reading from a FIFO.  A step sends one
# statement followed by a marker; collect reads the output up to the marker.
# Sessions do not stop on errors, since one step is meant to fail: instead
# every step resets LAST_ERROR_SQLSTATE and the marker reports it, so the
# script checks the SQLSTATE of each step (00000 unless an error is expected).
# The marker also carries server clock readings from just before and just
# after the statement, for timings.

start_session() {
	local c=$1
	mkfifo "$tmp/$c.in" "$tmp/$c.out"
	run_pg "$bindir/psql" -X -q -d "$conninfo application_name=$c" \
		<"$tmp/$c.in" >"$tmp/$c.out" 2>&1 &
	sess_pid[$c]=$!
	exec {fd}>"$tmp/$c.in"
	sess_in[$c]=$fd
	exec {fd}<"$tmp/$c.out"
	sess_out[$c]=$fd
	printf '%s\n' \
		'\set VERBOSITY verbose' \
		'\set SHOW_CONTEXT never' \
		"\\pset null '(null)'" \
		'\pset footer off' \
		'SELECT pg_backend_pid() AS lf_pid \gset' \
		'\echo @@done@@ :LAST_ERROR_SQLSTATE :lf_pid' >&"${sess_in[$c]}"
	collect "$c" quiet
	[ "$step_state" = 00000 ] && is_int "$step_start" ||
		fail "client $c could not connect: ${out[*]}"
	backend_pid[$c]=$step_start
}

# send CLIENT SQL: show and run one statement in CLIENT's session.
send() {
	local c=$1 sql=$2
	printf '%s=> %s\n' "$c" "$sql"
	printf '%s\n' \
		'\set LAST_ERROR_SQLSTATE 00000' \
		'SELECT extract(epoch FROM clock_timestamp()) AS lf_start \gset' \
		"$sql" \
		'SELECT extract(epoch FROM clock_timestamp()) AS lf_done \gset' \
		'\echo @@done@@ :LAST_ERROR_SQLSTATE :lf_start :lf_done' >&"${sess_in[$c]}"
}

# collect CLIENT [quiet]: read CLIENT's output up to the marker into out[],
# show it (unless quiet), set step_state (SQLSTATE), step_start, step_done.
collect() {
	local c=$1 line
	out=()
	while :; do
		IFS= read -r -t 30 -u "${sess_out[$c]}" line ||
			fail "client $c did not answer within 30 s"
		case $line in
		@@done@@*)
			read -r _ step_state step_start step_done <<<"$line"
			break
			;;
		'') ;;
		*) out+=("${line#psql:<stdin>:*: }") ;;
		esac
	done
	if [ "${2:-}" != quiet ]; then
		for line in "${out[@]}"; do
			printf '    %s\n' "$line"
		done
	fi
}

# run CLIENT SQL: send, then collect.
run() {
	send "$1" "$2"
	collect "$1"
}

# value COLUMN: the value of COLUMN in the first row of the last result.
value() {
	printf '%s\n' "${out[@]}" | awk -F'|' -v col="$1" '
		function trim(s) { gsub(/^ +| +$/, "", s); return s }
		found && /^-+(\+-+)*$/ { getline; print trim($idx); exit }
		{ found = 0; for (i = 1; i <= NF; i++) if (trim($i) == col) { idx = i; found = 1 } }'
}

expect_ok() {
	[ "$step_state" = 00000 ] || fail "$1 failed with SQLSTATE $step_state: ${out[*]}"
}

#---- The demo ----

demo_start=$(date +%s.%N)
heading "lockfence demo, part 1: two clients, one lock ('$LOCK')"
say "throwaway PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}') in $tmp (port $port), shared_preload_libraries = 'lockfence'"
observe "CREATE EXTENSION lockfence;"
start_session A
start_session B
say "client A is backend pid ${backend_pid[A]}, client B is backend pid ${backend_pid[B]}"

heading "1. A takes the lock and gets a fence token"
run A "SELECT lockfence.acquire('$LOCK', lease => '30 s') AS token;"
expect_ok "A's acquire"
a1=$(value token)
is_int "$a1" && [ "$a1" -gt 0 ] || fail "A's acquire returned '$a1', not a token"
passed "A holds $LOCK with token $a1"
show_locks
observe_value row "SELECT token || '/' || holder_pid FROM lockfence.locks WHERE name = '$LOCK'"
[ "$row" = "$a1/${backend_pid[A]}" ] ||
	fail "lockfence.locks does not show A holding $LOCK with token $a1"

heading "2. B tries without waiting: NULL, the lock is taken"
run B "SELECT lockfence.try_acquire('$LOCK') AS token;"
expect_ok "B's try_acquire"
[ "$(value token)" = "(null)" ] || fail "B's try_acquire returned '$(value token)', not NULL"
passed "try_acquire returned NULL"

heading "3. B waits at most 500 ms: the wait times out with SQLSTATE 55P03"
run B "SELECT lockfence.acquire('$LOCK', timeout => '500 ms') AS token;"
[ "$step_state" = 55P03 ] || fail "B's acquire with a 500 ms timeout ended with SQLSTATE $step_state, not 55P03: ${out[*]}"
waited=$(calc "$step_done - $step_start")
holds "$waited >= 0.45 && $waited < 5" || fail "B's timed-out wait took $waited s, not about 0.5 s"
passed "SQLSTATE 55P03 (lock_not_available) after waiting $(secs "$waited")"

heading "4. B waits (timeout 20 s) while A finishes its work and releases"
send B "SELECT lockfence.acquire('$LOCK', timeout => '20 s') AS token;"
say "B is now blocked in acquire; the lock shows one waiter:"
wait_for_waiters 1
show_locks
say "A works for half a second more, then releases with its token:"
sleep 0.5
run A "SELECT lockfence.release('$LOCK', $a1) AS released;"
expect_ok "A's release"
[ "$(value released)" = t ] || fail "A's release returned '$(value released)', not true"
release_start=$step_start
say "B's acquire returns:"
collect B
expect_ok "B's waiting acquire"
b1=$(value token)
is_int "$b1" || fail "B's acquire returned '$b1', not a token"
[ "$b1" -gt "$a1" ] || fail "B's token $b1 is not larger than A's token $a1"
waited=$(calc "$step_done - $step_start")
handoff=$(calc "$step_done - $release_start")
holds "$waited >= 0.5" || fail "B waited only $waited s although A held the lock for 0.5 s more"
holds "$handoff >= 0 && $handoff < 0.5" || fail "B returned $handoff s after A started releasing"
passed "B waited $(secs "$waited") and got token $b1 > $a1, $(ms "$handoff") after A's release began"
show_locks
run B "SELECT lockfence.release('$LOCK', $b1) AS released;"
expect_ok "B's release"
[ "$(value released)" = t ] || fail "B's release returned '$(value released)', not true"

heading "5. A takes the lock again with a 1 s lease, then stalls (no release, no renew)"
run A "SELECT lockfence.acquire('$LOCK', lease => '1 s') AS token;"
expect_ok "A's second acquire"
a2=$(value token)
is_int "$a2" || fail "A's second acquire returned '$a2', not a token"
[ "$a2" -gt "$b1" ] || fail "A's new token $a2 is not larger than B's token $b1"
observe_value expires "SELECT extract(epoch FROM expires_at) FROM lockfence.locks WHERE name = '$LOCK' AND token = $a2"
[ -n "$expires" ] || fail "lockfence.locks does not show A's lease with token $a2"
passed "A holds $LOCK with token $a2 until its lease runs out"
send B "SELECT lockfence.acquire('$LOCK', timeout => '20 s') AS token;"
say "B is now blocked in acquire behind A's lease:"
wait_for_waiters 1
show_locks
say "nobody releases; B's acquire returns when A's lease expires:"
collect B
expect_ok "B's acquire after the lease"
b2=$(value token)
is_int "$b2" || fail "B's acquire returned '$b2', not a token"
[ "$b2" -gt "$a2" ] || fail "B's token $b2 is not larger than A's token $a2"
waited=$(calc "$step_done - $step_start")
late=$(calc "$step_done - $expires")
holds "$step_start < $expires" || fail "B only asked for the lock after A's lease had expired"
holds "$late >= 0" || fail "B got the lock $late s before A's lease expired"
holds "$late < 0.5" || fail "B got the lock only $late s after A's lease expired"
passed "B waited $(secs "$waited") and got token $b2 > $a2, $(ms "$late") after A's lease expired"
show_locks

heading "6. A wakes up: its old token $a2 is fenced off"
run A "SELECT lockfence.renew('$LOCK', $a2) AS renewed;"
expect_ok "A's renew"
[ "$(value renewed)" = f ] || fail "A's renew with its expired token returned '$(value renewed)', not false"
run A "SELECT lockfence.release('$LOCK', $a2) AS released;"
expect_ok "A's late release"
[ "$(value released)" = f ] || fail "A's release with its expired token returned '$(value released)', not false"
observe_value holder "SELECT token FROM lockfence.locks WHERE name = '$LOCK'"
[ "$holder" = "$b2" ] ||
	fail "after A's late renew and release, B no longer holds $LOCK with token $b2"
passed "renew and release with token $a2 return false; B still holds $LOCK with token $b2"
say "tokens handed out: A $a1 < B $b1 < A $a2 < B $b2, so a store that remembers the"
say "largest token it has seen can reject whatever A still tries to write with $a2"
say "B finishes; no locks are left:"
run B "SELECT lockfence.release('$LOCK', $b2) AS released;"
expect_ok "B's final release"
[ "$(value released)" = t ] || fail "B's final release returned '$(value released)', not true"
show_locks
part1_secs=$(calc "$(date +%s.%N) - $demo_start")
say "part 1 took $(secs "$part1_secs")"

#---- Part 2 ----

. "$src/tools/demo_races.sh"
