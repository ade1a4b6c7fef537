#!/usr/bin/env bash
# Instructions per statement under callgrind (deterministic, unlike tps on a
# shared VM): a single-user backend runs N1, then N2 copies of a statement,
# each its own transaction; (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one
# statement, start-up and setup cancelling out.  Not part of make bench (it
# takes about 15 minutes):  ./bench/callgrind.sh  (builds and installs this
# tree's library first, like make bench).  Each figure is also appended to
# bench/results.tsv.
#
# Environment: PG_CONFIG, TEST_USER as for make test; CG_N1, CG_N2 (default
# 1000 and 3000).
set -euo pipefail

cd "$(dirname "$0")/.."
. tools/common.sh
bindir=$(lf_bindir)
N1=${CG_N1:-1000}
N2=${CG_N2:-3000}
ROWS=10000
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
src=$(pwd)
lf_install_packages
lf_build_and_install
lf_require_installed_build callgrind.sh "$src"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lockfence-callgrind.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER" "$tmp"
cd "$tmp"
run_pg "$bindir/initdb" -D "$tmp/data" -A trust -E UTF8 --no-locale -N >/dev/null
cat >>"$tmp/data/postgresql.conf" <<EOF
shared_preload_libraries = 'lockfence'
lockfence.max_locks = 100000
jit = off
EOF

# The fence tables of bench/setup.sql, smaller (-j: a statement ends with a
# semicolon and an empty line).
run_pg "$bindir/postgres" --single -D "$tmp/data" -j postgres >"$tmp/setup.out" 2>&1 <<EOF
CREATE EXTENSION lockfence;

CREATE TABLE acct_plain (id int PRIMARY KEY, balance bigint NOT NULL, fence_token bigint) WITH (fillfactor = 80);

CREATE TABLE acct_mono (LIKE acct_plain INCLUDING ALL) WITH (fillfactor = 80);

CREATE TABLE acct_lease (LIKE acct_plain INCLUDING ALL) WITH (fillfactor = 80);

CREATE TABLE acct_plpgsql (LIKE acct_plain INCLUDING ALL) WITH (fillfactor = 80);

CREATE TABLE acct_ctrig (LIKE acct_plain INCLUDING ALL) WITH (fillfactor = 80);

CREATE TABLE acct_plbefore (LIKE acct_plain INCLUDING ALL) WITH (fillfactor = 80);

CREATE TABLE acct_plafter (LIKE acct_plain INCLUDING ALL) WITH (fillfactor = 80);

CREATE FUNCTION fence_plpgsql() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    IF NEW.fence_token IS NULL THEN
        RAISE EXCEPTION 'missing fence token' USING ERRCODE = 'LF001';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.fence_token < OLD.fence_token THEN
        RAISE EXCEPTION 'stale fence token' USING ERRCODE = 'LF001';
    END IF;
    RETURN NEW;
END
\$\$;

INSERT INTO acct_plain SELECT i, 0, 1 FROM generate_series(1, $ROWS) i;

INSERT INTO acct_mono SELECT * FROM acct_plain;

INSERT INTO acct_lease SELECT * FROM acct_plain;

INSERT INTO acct_plpgsql SELECT * FROM acct_plain;

INSERT INTO acct_ctrig SELECT * FROM acct_plain;

INSERT INTO acct_plbefore SELECT * FROM acct_plain;

INSERT INTO acct_plafter SELECT * FROM acct_plain;

CREATE TRIGGER acct_mono_fence BEFORE INSERT OR UPDATE ON acct_mono FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token');

CREATE TRIGGER acct_lease_fence BEFORE INSERT OR UPDATE ON acct_lease FOR EACH ROW EXECUTE FUNCTION lockfence.fence_check('fence_token', 'acct:', 'id');

CREATE TRIGGER acct_plpgsql_fence BEFORE INSERT OR UPDATE ON acct_plpgsql FOR EACH ROW EXECUTE FUNCTION fence_plpgsql();

-- what any BEFORE ROW trigger in C costs: a built-in one that does almost nothing here
CREATE TRIGGER acct_ctrig_noop BEFORE UPDATE ON acct_ctrig FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();

-- a BEFORE and an AFTER ROW trigger that do nothing, in PL/pgSQL: what the
-- timing costs (an AFTER trigger is queued and fetches both row versions
-- again at the end of the statement; a BEFORE trigger locks the row first)
CREATE FUNCTION noop_before() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN RETURN NEW; END \$\$;

CREATE FUNCTION noop_after() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN RETURN NULL; END \$\$;

CREATE TRIGGER acct_plbefore_noop BEFORE UPDATE ON acct_plbefore FOR EACH ROW EXECUTE FUNCTION noop_before();

CREATE TRIGGER acct_plafter_noop AFTER UPDATE ON acct_plafter FOR EACH ROW EXECUTE FUNCTION noop_after();

VACUUM ANALYZE;

EOF
if grep -q ERROR "$tmp/setup.out"; then
	cat "$tmp/setup.out" >&2
	exit 1
fi

cp -a "$tmp/data" "$tmp/pristine"

# Every session first gives acct_lease's rows live leases (they live in this
# backend's shared memory only), then runs the statements, one per line.
# That UPDATE leaves a dead version of each of acct_lease's rows, which
# later UPDATEs prune; the other tables get the same UPDATE, triggers off,
# so that all of them start in the same state.
# The lock statements are counted here as unprepared statements (parsed and
# planned at every call), with the name a string literal as drivers that
# interpolate parameters send it, and once with the name a number cast to
# text, which the planner evaluates at every call.  Prepared statements
# are counted over the wire by bench/callgrind-pgbench.sh: an EXECUTE here
# would also count the coercion of its arguments to the parameters' types,
# which a Bind message does not do.
PRELUDE="ALTER TABLE acct_lease DISABLE TRIGGER acct_lease_fence;
UPDATE acct_lease SET fence_token = lockfence.acquire('acct:' || id, '2 h');
ALTER TABLE acct_lease ENABLE TRIGGER acct_lease_fence;
$(for t in acct_plain acct_mono acct_plpgsql acct_ctrig acct_plbefore acct_plafter; do
	echo "ALTER TABLE $t DISABLE TRIGGER USER;"
	echo "UPDATE $t SET fence_token = fence_token + 1;"
	echo "ALTER TABLE $t ENABLE TRIGGER USER;"
done)"

# ir STATEMENT N: instructions of a session that runs STATEMENT N times (@
# in it becomes a row id or key, scattered over 1..ROWS).  Every session
# starts from a copy of the same data directory, and only the statements
# are counted: parse, analysis, planning, execution, start and commit of
# their transactions (not start-up and the shutdown checkpoint).  acct_ctrig
# has suppress_redundant_updates_trigger(), a built-in C trigger that does
# next to nothing here: the cost of having a BEFORE ROW trigger at all.
ir() {
	rm -rf "$tmp/data"
	cp -a "$tmp/pristine" "$tmp/data"
	{
		echo "$PRELUDE"
		for i in $(seq "$2"); do echo "${1//@/$(((i * 7919) % ROWS + 1))}"; done
	} | run_pg valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect=StartTransactionCommand --toggle-collect=pg_parse_query \
		--toggle-collect=pg_analyze_and_rewrite_fixedparams --toggle-collect=pg_plan_queries \
		--toggle-collect=PortalRun --toggle-collect=CommitTransactionCommand \
		"$bindir/postgres" --single -D "$tmp/data" postgres >"$tmp/session.out" 2>"$tmp/cg.out"
	if grep -q ERROR "$tmp/session.out"; then
		grep -m 3 ERROR "$tmp/session.out" >&2
		exit 1
	fi
	sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/cg.out"
}

printf '%9s  %s\n' "Ir/stmt" statement
for s in \
	"SELECT 1;" \
	"SELECT pg_advisory_lock(@), pg_advisory_unlock(@);" \
	"SELECT lockfence.release('k@', lockfence.acquire('k@', '1 min', '30 s'));" \
	"SELECT lockfence.release('k@', lockfence.acquire('k@', '1 min')); -- timeout left to its default" \
	"SELECT lockfence.release(@::text, lockfence.acquire(@::text, '1 min', '30 s')); -- name cast" \
	"SELECT pg_try_advisory_lock(@), pg_advisory_unlock(@);" \
	"SELECT lockfence.release('k@', lockfence.try_acquire('k@', '1 min'));" \
	"UPDATE acct_plain SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
	"UPDATE acct_ctrig SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
	"UPDATE acct_mono SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
	"UPDATE acct_lease SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
	"UPDATE acct_plpgsql SET balance = balance + 1, fence_token = fence_token WHERE id = @;" \
	"UPDATE acct_plbefore SET balance = balance + 1, fence_token = fence_token WHERE id = @; -- PL/pgSQL BEFORE, RETURN NEW" \
	"UPDATE acct_plafter SET balance = balance + 1, fence_token = fence_token WHERE id = @; -- PL/pgSQL AFTER, RETURN NULL"; do
	a=$(ir "$s" "$N1")
	b=$(ir "$s" "$N2")
	printf '%9d  %s\n' $(((b - a) / (N2 - N1))) "$s"
	(cd "$src" && lf_bench_record "callgrind, PostgreSQL $("$bindir/postgres" -V | awk '{ print $3 }'), N1=$N1 N2=$N2" \
		"instructions per statement: $s" $(((b - a) / (N2 - N1))))
done
lf_require_installed_build callgrind.sh "$src"
