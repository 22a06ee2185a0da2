#!/bin/bash
# Installs what coord needs on Debian 12 (run as root) and builds it into
# ./build.  Safe to run again: it installs only what is missing and
# rebuilds incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential meson ninja-build pkg-config python3 systemd liblmdb-dev lmdb-utils
          libsqlite3-dev sqlite3 libcriterion-dev npm faketime
          python3-pytest python3-filelock python3-fasteners python3-portalocker
          python3-sqlalchemy python3-flask python3-psycopg2 postgresql
          prometheus tmux python3-matplotlib)
missing=()
# The manual pages (scdoc builds them, man-db renders them in a test) and
# the completion's test (bash-completion).
packages+=(scdoc man-db bash-completion)
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

# Users for the shared-instance tests (tests/test_group.c): coord-test-a
# in group coord-test, coord-test-b not in it.  System accounts, no home,
# no login.
getent group coord-test >/dev/null || groupadd --system coord-test
for u in coord-test-a coord-test-b; do
	id -u "$u" >/dev/null 2>&1 ||
		useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done
usermod -aG coord-test coord-test-a
if id -nG coord-test-b | tr ' ' '\n' | grep -qx coord-test; then
	gpasswd -d coord-test-b coord-test >/dev/null
fi

if [ ! -f build/build.ninja ]; then
	meson setup build >/dev/null
fi
ninja -C build >/dev/null
echo "setup: built build/broker/coordd, build/tools/coordctl, build/tools/coord-bench"
