#!/bin/bash
# Runs the dashboard for a few seconds against a pipeline that is SIGKILLed
# mid-batch, and shows that the dashboard kept serving, that no committed
# batch was lost, and that the broker checkpointed the WAL.  Everything
# (broker instance, data) lives in a temporary directory.  Needs the build
# (bash scripts/setup.sh) and python3-flask.  Exit status 0 when all holds.
#
#   bash examples/dashboard/run-demo.sh [SECONDS]      (default 4)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${COORD_BUILD:-$root/build}
seconds=${1:-4}
py=/usr/bin/python3

tmp=$(mktemp -d /tmp/coord-dashboard-XXXXXX)
export COORD_DIR=$tmp/instance DATA_DIR=$tmp/data
unset COORD_NO_AUTOSTART
export COORD_BROKER=$build/broker/coordd COORD_LIBRARY=$build/libcoord/libcoord.so.0
export PATH=$build/tools:$PATH PYTHONPATH=$root/bindings/python:$root/bindings/python/tests:$here
mkdir -m 700 "$COORD_DIR"; mkdir "$DATA_DIR"
pids=()
poller=
victim=
cleanup() {
	for p in $poller $victim; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	broker=$(coordctl status 2>/dev/null | sed -n 's/^broker: *running (pid \([0-9]*\).*/\1/p')
	[ -n "$broker" ] && kill "$broker" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

# wait_for FILE PATTERN: until a line of FILE matches (10 s at most).
wait_for() {
	for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
	echo "run-demo: gave up waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}

$py "$here/pipeline.py" --batches 2 >"$tmp/setup.log"
bash "$here/preflight.sh"

port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$py "$here/app.py" --port "$port" >"$tmp/app.log" 2>&1 & pids+=($!)
# The page poller: one GET every 20 ms until told to stop.
$py - "$port" "$tmp/stop" >"$tmp/poller.log" 2>&1 <<'POLLER' & poller=$!
import json, os, sys, time, urllib.request
port, stop = sys.argv[1], sys.argv[2]
ok = failed = 0
last = None
while not os.path.exists(stop):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            last = json.load(r)
            ok += 1
            if ok == 1:
                print("serving", flush=True)
    except OSError as e:
        if ok:              # before the first answer the app is starting
            failed += 1
            print("failed", e, flush=True)
    time.sleep(0.02)
print(f"requests ok {ok} failed {failed} last {json.dumps(last)}", flush=True)
POLLER
wait_for "$tmp/poller.log" serving
start=$SECONDS

# The pipeline (with its backfill), SIGKILLed in the middle of its third batch.
$py "$here/pipeline.py" --batches 1000 --backfill >"$tmp/pipeline.log" 2>&1 & victim=$!
wait_for "$tmp/pipeline.log" "pipeline: committed batch 3"
wait_for "$tmp/pipeline.log" "pipeline: inside batch 4"
kill -9 $victim; wait $victim 2>/dev/null || true
echo "run-demo: SIGKILLed the pipeline inside batch 4"
$py "$here/check.py"

# The next run picks up where the killed one stopped; the backfill the
# killed pipeline started runs on by itself, taking its own turns.
$py "$here/pipeline.py" --batches 3 >"$tmp/pipeline2.log" 2>&1
backfill=$(sed -n 's/^pipeline: backfill pid //p' "$tmp/pipeline.log")
while kill -0 "$backfill" 2>/dev/null; do sleep 0.05; done
$py "$here/check.py"
while [ $((SECONDS - start)) -lt "$seconds" ]; do sleep 0.1; done
touch "$tmp/stop"; wait $poller

# What happened.
requests=$(sed -n 's/^requests //p' "$tmp/poller.log")
reported=$(cat "$tmp/setup.log" "$tmp/pipeline.log" "$tmp/pipeline2.log" | grep -c 'committed batch')
read -r batches rows expected torn < <(sqlite3 -separator ' ' "$DATA_DIR/shop.db" \
	"SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM orders),
	        (SELECT sum(rows) FROM batches),
	        (SELECT count(*) FROM batches b WHERE rows != (SELECT count(*) FROM orders WHERE batch = b.id))")
lost=0
for b in $(cat "$tmp"/*.log | sed -n 's/^[a-z]*: committed batch //p'); do
	[ "$(sqlite3 "$DATA_DIR/shop.db" "SELECT count(*) FROM batches WHERE id = $b")" = 1 ] || lost=$((lost + 1))
done
integrity=$(sqlite3 "$DATA_DIR/shop.db" "PRAGMA integrity_check")
echo "dashboard:  requests $requests"
echo "pipeline:   $reported batches reported committed, $batches in shop.db, $lost lost;" \
	"$rows rows (batches say $expected), $torn torn; integrity $integrity"
echo "checkpoint: $(coordctl show "$DATA_DIR/shop.db" | grep '^last checkpoint')"
echo "            $(coordctl show "$DATA_DIR/stats.duckdb" | grep '^last checkpoint')"
failed=$(echo "$requests" | sed -n 's/.*failed \([0-9]*\).*/\1/p')
if [ "$failed" = 0 ] && [ "$lost" = 0 ] && [ "$torn" = 0 ] && [ "$rows" = "$expected" ] &&
	[ "$integrity" = ok ] && [ "$reported" -le "$batches" ]; then
	echo "run-demo: ok"
else
	echo "run-demo: FAILED"; exit 1
fi
