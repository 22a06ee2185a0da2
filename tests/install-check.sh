#!/bin/sh
# Installs the build into a temporary DESTDIR and uses it as a user would:
# the files are where pkg-config says, the installed coord.h is one file,
# and install-app.c builds with `pkg-config --cflags --libs coord` against
# libcoord.so and, linked with libcoord.a, without it; both runs must pass.
# Everything lives in one mkdtemp directory, removed at the end.
# usage: install-check.sh BUILD_DIR install-app.c   ($CC and $CFLAGS as
#        the build uses them, e.g. the sanitizer flags)
set -eu
build="$1" app="$2"
cc=${CC:-cc}
passed=0 failed=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coord-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dest="$tmp/dest"
mkdir "$tmp/instance" # a fresh instance directory: no broker there

pass() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

if ! meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log"
	fail "meson install --destdir"
	finish
fi
pass "meson install --destdir"

pc=$(find "$dest" -name coord.pc -path '*/pkgconfig/*' | head -n 1)
if [ -z "$pc" ]; then
	fail "no coord.pc installed"
	finish
fi
pass "coord.pc installed"
# pkg-config's sysroot puts the -I and -L paths inside the destdir.
PKG_CONFIG_PATH=$(dirname "$pc")
PKG_CONFIG_SYSROOT_DIR="$dest"
PKG_CONFIG_LIBDIR=$PKG_CONFIG_PATH
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
libdir=$(pkg-config --libs-only-L coord | sed 's/^ *-L//; s/ *$//')
incdir=$(pkg-config --cflags-only-I coord | sed 's/^ *-I//; s/ *$//')

for f in "$incdir/coord.h" "$libdir/libcoord.a" "$libdir/libcoord.so"; do
	if [ -e "$f" ]; then pass "installed ${f#"$dest"}"; else fail "missing ${f#"$dest"}"; fi
done
if [ -L "$libdir/libcoord.so" ] && [ -L "$libdir/libcoord.so.0" ] &&
	readelf -d "$libdir/libcoord.so" | grep -q 'SONAME.*\[libcoord\.so\.0\]'; then
	pass "libcoord.so -> libcoord.so.0 -> the library, soname libcoord.so.0"
else
	fail "libcoord.so symlinks or soname"
fi
if [ -e "$incdir/coord_proto.h" ] || grep -q '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$incdir/coord.h"; then
	fail "the installed coord.h is not one self-contained file"
else
	pass "the installed coord.h includes no other coord header"
fi

# shellcheck disable=SC2046,SC2086 # word splitting of flags is wanted
if $cc ${CFLAGS:-} -o "$tmp/app-shared" "$app" $(pkg-config --cflags --libs coord) 2>"$tmp/cc.log"; then
	pass "cc install-app.c \$(pkg-config --cflags --libs coord)"
	if LD_LIBRARY_PATH="$libdir" "$tmp/app-shared" "$tmp/instance" >"$tmp/run.log" 2>&1; then
		pass "install-app against libcoord.so"
	else
		cat "$tmp/run.log"
		fail "install-app against libcoord.so"
	fi
else
	cat "$tmp/cc.log"
	fail "cc install-app.c \$(pkg-config --cflags --libs coord)"
fi

# shellcheck disable=SC2046,SC2086
if $cc ${CFLAGS:-} -o "$tmp/app-static" "$app" $(pkg-config --cflags coord) "$libdir/libcoord.a" -pthread 2>"$tmp/cc.log"; then
	if "$tmp/app-static" "$tmp/instance" >"$tmp/run.log" 2>&1; then
		pass "install-app linked with libcoord.a"
	else
		cat "$tmp/run.log"
		fail "install-app linked with libcoord.a"
	fi
else
	cat "$tmp/cc.log"
	fail "cc install-app.c libcoord.a"
fi
finish
