#!/usr/bin/env bash
# The portability check, run by make test (alone: make check-versions).
# lockfence supports PostgreSQL 15 to 18 (src/compat.h).  This compiles the
# module's sources (OBJS in the Makefile) against the server headers of the
# other major versions that Debian's archive ships for amd64, with the
# project's warning flags (-Werror), links the module, and checks that each
# symbol it takes from the server is exported by that version's postgres
# binary:
#
#   17  from trixie   (postgresql-server-dev-17, postgresql-17)
#   18  from sid      (postgresql-server-dev-18, postgresql-18)
#
# (16 is in no Debian release, so it is not checked; make test-versions
# runs the suites on 18 built from source.)  The
# packages are downloaded once, not installed: apt-get runs with a private
# sources list and cache in $LF_PGVERSIONS_DIR (default
# /tmp/lockfence-pgversions-UID, kept between runs), verifying the archive's
# signatures with the keyring of the machine's own apt (LF_DEBIAN_MIRROR:
# another mirror of the archive).  When the archive
# cannot be reached the check says so and is skipped, unless
# LF_REQUIRE_PGVERSIONS=1; a compile, link or symbol failure always fails.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=tools/common.sh
. tools/common.sh

dir=${LF_PGVERSIONS_DIR:-/tmp/lockfence-pgversions-$(id -u)}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=${LF_DEBIAN_MIRROR:-http://deb.debian.org/debian}
versions="17:trixie 18:sid"
# the module's objects and warning flags, as the Makefile gives them to PGXS
make_var() {
	# shellcheck disable=SC2016 # $(...) is for make, not the shell
	printf 'lf-print-var:\n\t@echo $(%s)\n' "$1" |
		make -s --no-print-directory -f Makefile -f - PG_CONFIG="$PG_CONFIG" lf-print-var
}
read -r -a objects <<<"$(make_var OBJS)"
warnings=$(make_var PG_CFLAGS)
cflags="$("$PG_CONFIG" --cppflags) $("$PG_CONFIG" --cflags) $("$PG_CONFIG" --cflags_sl) $warnings"

mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/debs"
{
	for vs in $versions; do
		echo "deb [signed-by=$keyring] $mirror ${vs#*:} main"
	done
} >"$dir/sources.list"
apt_opts=(-q -o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" -o Debug::NoLocking=1)
[ "$(id -u)" -eq 0 ] && apt_opts+=(-o APT::Sandbox::User=root)

skip() {
	echo "check-versions: SKIPPED: $*" >&2
	[ "${LF_REQUIRE_PGVERSIONS:-0}" = 1 ] && exit 1
	exit 0
}

# Read the package lists, once, and only when a version must be downloaded.
lists_read=0
read_package_lists() {
	[ "$lists_read" -eq 1 ] && return 0
	if ! apt-get "${apt_opts[@]}" update >"$dir/update.log" 2>&1 ||
		grep -q '^[WE]:' "$dir/update.log"; then
		cat "$dir/update.log" >&2
		skip "could not read the package lists of $(for vs in $versions; do printf '%s ' "${vs#*:}"; done)from $mirror"
	fi
	lists_read=1
}

failed=0
for vs in $versions; do
	v=${vs%%:*}
	root=$dir/pg$v
	if [ ! -x "$root/usr/lib/postgresql/$v/bin/postgres" ] ||
		[ ! -f "$root/usr/include/postgresql/$v/server/pg_config.h" ]; then
		read_package_lists
		rm -rf "$root" "$dir"/debs/*
		(cd "$dir/debs" && apt-get "${apt_opts[@]}" download \
			"postgresql-server-dev-$v" "postgresql-$v" >"$dir/download.log" 2>&1) || {
			cat "$dir/download.log" >&2
			skip "could not download PostgreSQL $v from ${vs#*:}"
		}
		for deb in "$dir"/debs/*.deb; do
			dpkg-deb -x "$deb" "$root"
		done
		rm -f "$dir"/debs/*.deb
	fi

	include=$root/usr/include/postgresql/$v/server
	build=$dir/build$v
	rm -rf "$build"
	mkdir -p "$build"
	version=$(sed -n 's/^#define PG_VERSION "\(.*\)"$/\1/p' "$include/pg_config.h")
	ok=1
	for obj in "${objects[@]}"; do
		# shellcheck disable=SC2086 # cflags: a list of words
		gcc $cflags -I "$include" -c "${obj%.o}.c" -o "$build/$(basename "$obj")" || ok=0
	done
	if [ "$ok" -eq 1 ]; then
		gcc -shared -o "$build/lockfence.so" "$build"/*.o || ok=0
	fi
	if [ "$ok" -eq 1 ]; then
		# unversioned undefined symbols are the server's (libc's carry @GLIBC)
		nm -D --undefined-only "$build/lockfence.so" | awk '$1 == "U" && $2 !~ /@/ { print $2 }' |
			sort -u >"$build/needed"
		nm -D --defined-only "$root/usr/lib/postgresql/$v/bin/postgres" | awk '{ print $3 }' |
			sort -u >"$build/exported"
		missing=$(comm -23 "$build/needed" "$build/exported" | tr '\n' ' ')
		if [ -n "$missing" ]; then
			echo "check-versions: PostgreSQL $version does not export: $missing" >&2
			ok=0
		fi
	fi
	if [ "$ok" -eq 1 ]; then
		echo "check-versions: PostgreSQL $version: ${#objects[@]} files compile with $warnings, link, and use $(wc -l <"$build/needed") server symbols, all exported"
	else
		echo "check-versions: PostgreSQL $version: FAILED" >&2
		failed=1
	fi
done
exit "$failed"
