#!/usr/bin/env bash
# make valgrind: run the pg_regress, isolation and TAP suites with every
# server under valgrind (memcheck), and fail if any valgrind error has a
# frame in lockfence.so.  PostgreSQL's own code, built without valgrind
# annotations here, reports errors of its own; those are listed in the logs
# but only lockfence's count.
#
# 1. pg_regress and isolation run against one server started under valgrind.
# 2. The TAP files (t/*.pl) run through PGXS's prove_installcheck with
#    bindir pointing at a directory whose postgres runs the real one under
#    valgrind, so that every server PostgreSQL::Test::Cluster starts (and
#    every backend it forks) is traced.  LOCKFENCE_VALGRIND=1 tells the
#    tests; see t/LockfenceTest.pm for what they scale under valgrind.
#
# As root the servers run as $TEST_USER (postgres).  Takes about 20 minutes
# on two CPUs (the TAP files 18 of them).  make test never runs this.
# While working on it: VALGRIND_PARTS ("regress tap" by default) picks the
# parts, VALGRIND_TAP_TESTS (a subset of t/*.pl) the TAP files.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
. tools/common.sh
LF_PACKAGES="$LF_PACKAGES valgrind"
lf_install_packages
lf_build_and_install
bindir=$(lf_bindir)
parts=${VALGRIND_PARTS:-regress tap}

work=$(mktemp -d /tmp/lockfence-valgrind.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/logs"
cp tools/valgrind.supp "$work/valgrind.supp"
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$work" "$work/logs"
t_start=$(date +%s)

# The valgrind command line for every traced server.  Each process writes
# its own log (%p: valgrind opens a new one in every forked child); the
# wrapper puts a per-start prefix in front, as pids are reused over a long
# run.
valgrind_opts="--quiet --trace-children=yes --track-origins=yes --error-limit=no --num-callers=30 --suppressions=$work/valgrind.supp"

# A postgres that runs the real one under valgrind: "$1" is the wrapper to
# write.  Quick calls that print and exit (pg_ctl checks postgres -V next to
# itself, -C reads a setting) run the real binary: valgrind would only slow
# them down.  The log prefix names the TAP node from its data directory
# (tmp_check/t_NNN_<test>_<node>_data/pgdata).
write_postgres_wrapper() {
	cat >"$1" <<WRAP
#!/bin/sh
real=$bindir/postgres
for a in "\$@"; do
	case "\$a" in
	-V | --version | -C | --describe-config | --help | -\?) exec "\$real" "\$@" ;;
	esac
done
tag=regress
for a in "\$@"; do
	case "\$a" in
	*/tmp_check/t_*_data/*) tag=\$(basename "\$(dirname "\$a")") ;;
	esac
done
exec valgrind $valgrind_opts \\
	--log-file=$work/logs/valgrind.\$tag.\$(date +%s%N).%p.log "\$real" "\$@"
WRAP
	chmod 755 "$1"
}

status=0

########################################################################
# 1. pg_regress and isolation against one server under valgrind
########################################################################
if [[ " $parts " == *" regress "* ]]; then
	port=$(lf_pick_port) || { echo "valgrind.sh: no unused port found" >&2; exit 1; }
	cleanup() {
		run_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
	}
	trap cleanup EXIT

	# the settings make test gives its pg_regress and isolation instances
	lf_server_init "$work" "$port" <"$src/sql_tests/lockfence.conf"

	# pg_ctl -p starts this wrapper, which runs postgres under valgrind
	mkdir -p "$work/bin"
	write_postgres_wrapper "$work/bin/postgres"
	[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER" "$work"

	run_pg "$bindir/pg_ctl" -p "$work/bin/postgres" -D "$work/data" -l "$work/server.log" -t 300 -w start

	pgxs=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
	cp -r "$src/sql_tests" "$src/expected" "$src/specs" "$work/"
	# as the Makefile wires them: pg_regress reads in/sql and in/expected
	mkdir -p "$work/in" && ln -sfn ../sql_tests "$work/in/sql" && ln -sfn ../expected "$work/in/expected"
	[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER" "$work"
	tests=$(cd sql_tests && ls *.sql | sed 's/\.sql$//' | sort)
	specs=$(cd specs && ls *.spec | sed 's/\.spec$//' | sort)
	run_pg "$pgxs/src/test/regress/pg_regress" --inputdir="$work/in" --outputdir="$work/regress" \
		--bindir="$bindir" --host="$work" --port="$port" --load-extension=lockfence \
		--dbname=lockfence_valgrind $tests || { echo "pg_regress failed under valgrind"; status=1; }
	run_pg "$pgxs/src/test/isolation/pg_isolation_regress" --inputdir="$work" --outputdir="$work/isolation" \
		--bindir="$bindir" --host="$work" --port="$port" --load-extension=lockfence \
		--dbname=lockfence_valgrind_iso $specs || { echo "isolation failed under valgrind"; status=1; }

	run_pg "$bindir/pg_ctl" -D "$work/data" -m fast -t 300 -w stop >/dev/null
	trap - EXIT
	echo "regress and isolation under valgrind: $(($(date +%s) - t_start)) s"
fi

########################################################################
# 2. the TAP files, every server they start under valgrind
########################################################################
# PGXS's prove_installcheck puts $(bindir) first in PATH, and
# PostgreSQL::Test::Cluster runs initdb, pg_ctl, postgres, psql, pgbench,
# pg_basebackup... from PATH.  The directory given as bindir holds:
#  - a copy of pg_ctl: pg_ctl starts the postgres found next to its own
#    resolved path, so a symlink would start the real one;
#  - the postgres wrapper;
#  - symlinks to everything else (initdb follows its symlink to the real
#    postgres for its bootstrap runs, which need no tracing: nothing is
#    preloaded then).
tap_tests=${VALGRIND_TAP_TESTS:-$(cd "$src" && ls t/*.pl | tr '\n' ' ')}
if [[ " $parts " == *" tap "* ]]; then
	t_tap=$(date +%s)
	tapbin="$work/tapbin"
	mkdir -p "$tapbin"
	for f in "$bindir"/*; do
		ln -s "$f" "$tapbin/$(basename "$f")"
	done
	rm "$tapbin/pg_ctl" "$tapbin/postgres" "$tapbin/postmaster"
	cp "$bindir/pg_ctl" "$tapbin/pg_ctl"
	write_postgres_wrapper "$tapbin/postgres"
	ln -s postgres "$tapbin/postmaster"

	# a private copy of the tree, as tools/test.sh does (tmp_check is
	# written into it)
	mkdir "$work/tree"
	lf_copy_tree "$src" "$work/tree"
	[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER" "$work"

	# Timeouts: PG_TEST_TIMEOUT_DEFAULT (180 s) bounds every psql, poll and
	# background session of PostgreSQL::Test::Cluster, PGCTLTIMEOUT (60 s)
	# pg_ctl's waits for a start, a stop or a promotion; a traced server
	# starting after a crash, or checkpointing at a stop, can take longer,
	# and the stretched leases (t/LockfenceTest.pm) make waits of minutes.
	run_pg env LOCKFENCE_VALGRIND=1 PG_TEST_TIMEOUT_DEFAULT=900 PGCTLTIMEOUT=900 \
		make -C "$work/tree" PG_CONFIG="$PG_CONFIG" installcheck \
		REGRESS= ISOLATION= bindir="$tapbin" PROVE_TESTS="$tap_tests" \
		PROVE_FLAGS="--timer" || { echo "TAP files failed under valgrind"; status=1; }
	echo "TAP files under valgrind: $(($(date +%s) - t_tap)) s"
fi

########################################################################
# The verdict: only errors with a frame in lockfence count
########################################################################
# Valgrind names the object (lockfence.so) or, as the module has debug
# information, its source files.  Debian's postgres binary has no debug
# information, so a file name such as shmem.c in a frame can only be
# lockfence's.  A process killed by a test (SIGKILL, crash loops) leaves a
# log cut short; an error it had reported is in it all the same.
# (every file of src/, so a new module is counted without editing this)
frames="lockfence\\.so|\\(($(cd "$src/src" && ls *.c | sed 's/[.]c$//' | paste -sd'|'))\\.c:[0-9]+\\)"
logs=$(find "$work/logs" -name 'valgrind.*.log' | wc -l)
# the first line of each error report
errors=$(cat "$work"/logs/valgrind.*.log 2>/dev/null |
	grep -cE '^==[0-9]+== (Invalid |Conditional jump|Use of uninitialised|Syscall param|Mismatched|Source and destination overlap|Argument )' || true)
ours=$(grep -lE "$frames" "$work"/logs/valgrind.*.log 2>/dev/null || true)
echo "traced processes per server (regress: the pg_regress and isolation server):"
find "$work/logs" -name 'valgrind.*.log' | sed -E 's|.*/valgrind\.([^.]*)\..*|\1|' | sort | uniq -c
echo "valgrind logs: $work/logs ($logs processes traced, $errors error reports in all; $(($(date +%s) - t_start)) s)"
if [ -n "$ours" ]; then
	echo "valgrind found errors in lockfence code, in $(echo "$ours" | wc -l) processes:"
	for f in $ours; do
		echo "=== $f"
		grep -B10 -A30 -E "$frames" "$f" | head -120
	done
	exit 1
fi
echo "no valgrind error has a frame in lockfence.so"
[ "$status" -eq 0 ] || { echo "but some suites failed under valgrind; see $work"; exit "$status"; }
echo "every suite passed under valgrind"
