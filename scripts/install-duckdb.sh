#!/bin/bash
# Installs libduckdb.so to /usr/local/lib from the npm package
# @duckdb/node-bindings-linux-x64 (it ships the library).  coordd loads it
# at run time to checkpoint DuckDB files; nothing links against it.
# Idempotent: does nothing when a loadable libduckdb.so is already there.
set -euo pipefail

target=/usr/local/lib/libduckdb.so
if [ -f "$target" ] && python3 -c "import ctypes; ctypes.CDLL('$target').duckdb_open_ext" 2>/dev/null; then
	exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @duckdb/node-bindings-linux-x64 >/dev/null 2>&1 && tar xzf ./*.tgz)
install -m 0755 "$tmp/package/libduckdb.so" "$target"
ldconfig
python3 -c "import ctypes; ctypes.CDLL('$target').duckdb_open_ext" || {
	echo "install-duckdb: $target does not load" >&2
	exit 1
}
echo "install-duckdb: installed $target ($(cd "$tmp/package" && node -p 'require("./package.json").version' 2>/dev/null || echo unknown version))"
