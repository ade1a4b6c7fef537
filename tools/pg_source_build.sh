#!/usr/bin/env bash
# tools/pg_source_build.sh MAJOR [cassert]: build PostgreSQL MAJOR from the
# upstream source in Debian's archive, into a cache that later runs reuse,
# and print the path of its pg_config.
#
# The source is the upstream tarball of Debian's source package (the
# .orig.tar), fetched with apt-get source through a private sources list
# (deb-src lines only; the machine's own apt configuration is not touched):
#
#   15  bookworm      17  trixie      18  sid
#
# (16 is in no Debian release.)  The server is configured with
# --enable-tap-tests, without readline, ICU and zlib (nothing the suites
# need), and with "cassert" also --enable-cassert --enable-debug, so that
# PostgreSQL's Asserts and lockfence's run.  It installs the server, the
# isolation tester and PGXS into LF_PGBUILD_DIR/MAJOR[-cassert]
# (LF_PGBUILD_DIR default /var/tmp/lockfence-pg, kept between runs: a
# second call with the same source and flags only prints the path).  Exits
# 3 when the archive lists the source package but does not serve its files
# (seen for trixie's postgresql-17 on this project's mirror).
# Build tools (gcc, make, bison, flex, perl) are installed with apt-get when
# missing and run as root.  Progress goes to standard error.
set -euo pipefail

major=${1:?usage: tools/pg_source_build.sh MAJOR [cassert]}
variant=${2:-}
case $major in
15) suite=bookworm ;;
17) suite=trixie ;;
18) suite=sid ;;
*)
	echo "pg_source_build: no Debian release carries PostgreSQL $major" >&2
	exit 2
	;;
esac
case $variant in
"") flags=(--enable-tap-tests --without-readline --without-icu --without-zlib) ;;
cassert) flags=(--enable-tap-tests --without-readline --without-icu --without-zlib
	--enable-cassert --enable-debug) ;;
*)
	echo "pg_source_build: the variant is cassert or nothing, not '$variant'" >&2
	exit 2
	;;
esac

cache=${LF_PGBUILD_DIR:-/var/tmp/lockfence-pg}
name=$major${variant:+-$variant}
prefix=$cache/$name
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=${LF_DEBIAN_MIRROR:-http://deb.debian.org/debian}
apt_dir=$cache/apt
log=$cache/$name.log

mkdir -p "$cache" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$cache/src"
chmod 755 "$cache"

# Build tools, as Debian packages
missing=""
for pkg in gcc make bison flex perl libipc-run-perl; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $pkg"
done
if [ -n "$missing" ]; then
	[ "$(id -u)" -eq 0 ] || {
		echo "pg_source_build: missing Debian packages:$missing" >&2
		exit 1
	}
	echo "pg_source_build: installing:$missing" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The upstream tarball of the source package, once per version
echo "deb-src [signed-by=$keyring] $mirror $suite main" >"$apt_dir/sources-$suite.list"
apt_opts=(-q -o Dir::Etc::SourceList="$apt_dir/sources-$suite.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache" -o Debug::NoLocking=1)
[ "$(id -u)" -eq 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
orig=$(ls "$cache/src"/postgresql-"$major"_*.orig.tar.* 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$orig" ]; then
	echo "pg_source_build: fetching the source of PostgreSQL $major from $suite" >&2
	apt-get "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1 || {
		cat "$apt_dir/update.log" >&2
		exit 1
	}
	(cd "$cache/src" && apt-get "${apt_opts[@]}" source --download-only "postgresql-$major") \
		>"$apt_dir/source.log" 2>&1 || {
		cat "$apt_dir/source.log" >&2
		# listed in the archive's index but not served: exit 3
		grep -q '404' "$apt_dir/source.log" && exit 3
		exit 1
	}
	orig=$(ls "$cache/src"/postgresql-"$major"_*.orig.tar.* | sort -V | tail -1)
fi
stamp="$(basename "$orig") ${flags[*]}"

if [ -x "$prefix/bin/pg_config" ] && [ "$(cat "$prefix/.lockfence-build" 2>/dev/null)" = "$stamp" ]; then
	echo "$prefix/bin/pg_config"
	exit 0
fi

echo "pg_source_build: building $(basename "$orig") into $prefix (${flags[*]}); log: $log" >&2
start=$(date +%s)
build=$cache/build-$name
rm -rf "$build" "$prefix"
mkdir -p "$build"
tar -C "$build" --strip-components=1 -xf "$orig"
# Run from make (make test-versions), this script inherits MAKELEVEL, and
# PostgreSQL's build generates its headers (errcodes.h, ...) only in a
# top-level make: so the build runs without make's variables, and stops at
# the first step that fails.
(
	set -e
	unset MAKELEVEL MAKEFLAGS MFLAGS
	cd "$build"
	./configure --prefix="$prefix" "${flags[@]}"
	make -j"$(nproc)"
	make install
	make -C src/test/isolation install
) >"$log" 2>&1 || {
	tail -n 40 "$log" >&2
	echo "pg_source_build: building PostgreSQL $major failed (log: $log)" >&2
	exit 1
}
rm -rf "$build"
echo "$stamp" >"$prefix/.lockfence-build"
chmod -R a+rX "$prefix"
echo "pg_source_build: built in $(($(date +%s) - start)) s" >&2
echo "$prefix/bin/pg_config"
