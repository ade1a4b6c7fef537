# Shared by tools/test.sh, tools/demo.sh, tools/valgrind.sh and the bench
# scripts: package install, build, test-setup steps and throwaway servers.
# Sourced, not run.
# shellcheck shell=bash disable=SC2154 # bindir: set by the sourcing script

PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
TEST_USER=${TEST_USER:-postgres}
LF_PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib libipc-run-perl make gcc perl pgbouncer python3-psycopg python3-psycopg2 python3-sqlalchemy ruby-activerecord ruby-pg"

# Install the Debian packages that are missing (root only).
lf_install_packages() {
	local missing=""
	for pkg in $LF_PACKAGES; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $pkg"
	done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing Debian packages:$missing (install them, or run as root)" >&2
		return 1
	fi
	echo "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

lf_build_and_install() {
	make -s PG_CONFIG="$PG_CONFIG"
	make -s PG_CONFIG="$PG_CONFIG" install
}

lf_bindir() {
	"$PG_CONFIG" --bindir
}

# Copy the source tree $1 into directory $2, without git data and test
# outputs: the test suites run in such a copy, owned by $TEST_USER.
lf_copy_tree() {
	tar -C "$1" --exclude=.git --exclude=test_output --exclude=test_input \
		--exclude=tmp_check -cf - . | tar -C "$2" -xf -
}

# A TCP port nothing listens on and no local socket file uses.
lf_pick_port() {
	local port
	for _ in $(seq 50); do
		port=$((20000 + RANDOM % 30000))
		[ -e "/tmp/.s.PGSQL.$port" ] || [ -e "/var/run/postgresql/.s.PGSQL.$port" ] && continue
		timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && continue
		echo "$port"
		return 0
	done
	return 1
}

# Is the installed lockfence.so the one built in directory $1?  (A server
# loads the installed library; concurrent checkouts install their own.)
lf_installed_build_is() {
	cmp -s "$1/lockfence.so" "$("$PG_CONFIG" --pkglibdir)/lockfence.so"
}

# lf_require_bench_protocol TOOL PROTOCOL: exit 2, naming TOOL, unless
# PROTOCOL is one of pgbench's query protocols (BENCH_PROTOCOL).
lf_require_bench_protocol() {
	[[ $2 =~ ^(simple|extended|prepared)$ ]] || {
		echo "$1: BENCH_PROTOCOL is simple, extended or prepared, not '$2'" >&2
		exit 2
	}
}

# lf_bench_scripts_for_protocol DIR PROTOCOL: adapt the bench's lock scripts
# copied into DIR to pgbench's query protocol.  With the simple protocol
# pgbench pastes a variable's value into the statement's text, so the text
# parameter :k::text would arrive as the cast 123::text, which the planner
# evaluates at every call (about 15,000 instructions per cast).  Drivers
# that interpolate parameters send a text value as a string literal, '123',
# and so do the lockfence and table-lease scripts then.
lf_bench_scripts_for_protocol() {
	[ "$2" = simple ] || return 0
	sed -i "s/:k::text/':k'/g" "$1"/lf_*.sql "$1"/tbl_*.sql
	! grep -q '::text' "$1"/lf_*.sql "$1"/tbl_*.sql
}

# lf_require_installed_build TOOL SRC: exit, naming TOOL, unless the
# installed lockfence.so is the one built in SRC (another checkout may have
# installed its own meanwhile).
lf_require_installed_build() {
	lf_installed_build_is "$2" || {
		echo "$1: the installed lockfence.so is not the one built from $2" >&2
		exit 1
	}
}

# Run a command as the server's user: PostgreSQL refuses to run as root.
if [ "$(id -u)" -eq 0 ]; then
	run_pg() { runuser -u "$TEST_USER" -- "$@"; }
else
	run_pg() { "$@"; }
fi

#---- A throwaway server in directory $1 (data in $1/data, socket in $1) ----

# lf_server_init DIR PORT: initdb, then the settings that keep the server
# private (unix socket in DIR only), then the caller's settings from
# standard input.  Needs $bindir.
lf_server_init() {
	run_pg "$bindir/initdb" -D "$1/data" -A trust -E UTF8 --no-locale -N \
		>"$1/initdb.log" 2>&1 || { cat "$1/initdb.log" >&2; return 1; }
	{
		echo "port = $2"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$1'"
		cat
	} >>"$1/data/postgresql.conf"
}

# lf_server_start DIR SRC: start the server (log in DIR/server.log) and
# check that it loaded the lockfence built in SRC, which another checkout
# may have replaced by installing its own meanwhile.
lf_server_start() {
	run_pg "$bindir/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 60 start >/dev/null || {
		echo "the server did not start" >&2
		return 1
	}
	lf_installed_build_is "$2" || {
		echo "the installed lockfence.so is not the one built from $2" >&2
		return 1
	}
}

# lf_server_stop DIR: fast shutdown, immediate if that does not finish.
lf_server_stop() {
	run_pg "$bindir/pg_ctl" -D "$1/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
		run_pg "$bindir/pg_ctl" -D "$1/data" -m immediate -w stop >/dev/null 2>&1
}

# Append one measurement to bench/results.tsv, the benchmarks' one results
# file: date (UTC), commit (with "+changes" when the tree differs from it),
# machine, configuration, metric, value; tab-separated, one line each.
# Usage: lf_bench_record CONFIGURATION METRIC VALUE (from the tree's top).
lf_bench_record() {
	local file=bench/results.tsv commit machine
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	git diff --quiet HEAD -- src sql 2>/dev/null || commit="$commit+changes"
	machine="$(nproc) CPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/ { print $2 }') GB"
	[ -f "$file" ] || printf 'date\tcommit\tmachine\tconfiguration\tmetric\tvalue\n' >"$file"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" \
		"$machine" "$1" "$2" "$3" >>"$file"
}
