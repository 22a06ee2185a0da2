#!/bin/sh
# Installs the build into a temporary DESTDIR and uses the installed coord
# package as an app would: no COORD_LIBRARY, libcoord.so.0 found by its
# soname (LD_LIBRARY_PATH stands in for the system's library path), a
# broker autostarted from the installed coordd.
# usage: install-check.sh BUILD_DIR PYTHON
set -eu
build="$1" python="$2"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coord-pyinstall-XXXXXX")
trap 'pkill -F "$tmp/instance/coordd.lock" 2>/dev/null; rm -rf "$tmp"' EXIT
dest="$tmp/dest"
mkdir "$tmp/instance"
if ! meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log"
	echo "FAIL: meson install --destdir"
	exit 1
fi
pkg=$(find "$dest" -path '*/coord/__init__.py' | head -n 1)
lib=$(find "$dest" -name libcoord.so.0 | head -n 1)
coordd=$(find "$dest" -name coordd -type f | head -n 1)
if [ -z "$pkg" ] || [ -z "$lib" ] || [ -z "$coordd" ]; then
	echo "FAIL: installed package ($pkg), libcoord.so.0 ($lib) or coordd ($coordd) missing"
	exit 1
fi
echo "ok: installed ${pkg#"$dest"}"
env -u COORD_LIBRARY PYTHONPATH="$(dirname "$(dirname "$pkg")")" LD_LIBRARY_PATH="$(dirname "$lib")" \
	COORD_DIR="$tmp/instance" COORD_BROKER="$coordd" "$python" -c '
import coord
assert coord.__file__.startswith("'"$dest"'"), coord.__file__
with coord.write("key:install-check", timeout=10) as lease:
    assert lease.valid and lease.token >= 1
print("ok: the installed package took a lease through", coord._lib.SONAME)
'
