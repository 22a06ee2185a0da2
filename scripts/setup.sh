#!/bin/bash
# Installs what coord needs on Debian 12 (run as root) and builds it into
# ./build.  Safe to run again: it installs only what is missing and
# rebuilds incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential meson ninja-build pkg-config python3 liblmdb-dev lmdb-utils
          libsqlite3-dev sqlite3 libcriterion-dev npm)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# npm is only needed to fetch libduckdb.so; any working npm will do.
if command -v npm >/dev/null 2>&1; then
	missing=("${missing[@]/npm/}")
fi
if [ -n "$(echo "${missing[@]}" | tr -d ' ')" ]; then
	echo "setup: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[@]} >/dev/null
fi

bash scripts/install-duckdb.sh

if [ ! -f build/build.ninja ]; then
	meson setup build >/dev/null
fi
ninja -C build >/dev/null
echo "setup: built build/broker/coordd, build/tools/coordctl, build/tools/coord-bench"
