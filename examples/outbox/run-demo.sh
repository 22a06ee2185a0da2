#!/bin/bash
# The outbox demo (demo.py) in a temporary directory with a private coord
# instance and a private PostgreSQL cluster.  Needs the build (bash
# scripts/setup.sh), postgresql and python3-psycopg2.
#
#   bash examples/outbox/run-demo.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${COORD_BUILD:-$root/build}
tmp=$(mktemp -d /tmp/coord-outbox-XXXXXX)
chmod 755 "$tmp"    # PostgreSQL runs as postgres when we are root
export COORD_DIR=$tmp/instance OUTBOX_DB=$tmp/outbox.db
unset COORD_NO_AUTOSTART
export COORD_BROKER=$build/broker/coordd COORD_LIBRARY=$build/libcoord/libcoord.so.0
export PATH=$build/tools:$PATH PYTHONPATH=$root/bindings/python:$here
mkdir -m 700 "$COORD_DIR"
cleanup() {
	broker=$(coordctl status 2>/dev/null | sed -n 's/^broker: *running (pid \([0-9]*\).*/\1/p')
	[ -z "$broker" ] || kill "$broker"
	[ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
/usr/bin/python3 "$here/demo.py" "$tmp"
