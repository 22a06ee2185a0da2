#!/bin/bash
# Installs libduckdb.so to /usr/local/lib from the npm package
# @duckdb/node-bindings-linux-<arch>, which ships the library.  coordd loads
# it at run time with dlopen() to checkpoint DuckDB files; nothing links
# against it.  Run as root on Debian 12; installs npm first if it is missing.
#
# Idempotent: when a libduckdb.so with the functions coord uses already
# loads by name (the way coordd looks for it), it only says so.  --force
# installs the newest package anyway.  Prints one line on success.
set -euo pipefail

target=/usr/local/lib/libduckdb.so
force=0
[ "${1:-}" = --force ] && force=1

case "$(uname -m)" in
x86_64) package=@duckdb/node-bindings-linux-x64 ;;
aarch64) package=@duckdb/node-bindings-linux-arm64 ;;
*) echo "install-duckdb: no DuckDB package for $(uname -m)" >&2; exit 1 ;;
esac

apt_install() {
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The sanity check: dlopen("libduckdb.so") by name, find every function
# coord's checkpoint uses, print the library's version.
loads() {
	python3 - 2>/dev/null <<'EOF'
import ctypes
lib = ctypes.CDLL("libduckdb.so")
for name in ("duckdb_open_ext", "duckdb_close", "duckdb_connect", "duckdb_disconnect",
             "duckdb_query", "duckdb_destroy_result", "duckdb_result_error", "duckdb_free"):
    getattr(lib, name)
lib.duckdb_library_version.restype = ctypes.c_char_p
print(lib.duckdb_library_version().decode())
EOF
}

command -v python3 >/dev/null 2>&1 || apt_install python3
if [ "$force" = 0 ] && [ -f "$target" ] && version="$(loads)"; then
	echo "install-duckdb: $target $version already installed"
	exit 0
fi

command -v npm >/dev/null 2>&1 || apt_install npm
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack "$package" >npm.log 2>&1 && tar xzf ./*.tgz); then
	echo "install-duckdb: npm pack $package failed:" >&2
	cat "$tmp/npm.log" >&2
	exit 1
fi
# A new file renamed over the old one: a process that has the old library
# mapped keeps it, where overwriting it in place could crash that process.
install -m 0755 "$tmp/package/libduckdb.so" "$target.new"
mv -f "$target.new" "$target"
ldconfig
if ! version="$(loads)"; then
	echo "install-duckdb: $target is installed but dlopen(\"libduckdb.so\") fails" >&2
	exit 1
fi
echo "install-duckdb: installed $target $version from $package@$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$tmp/package/package.json")"
