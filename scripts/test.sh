#!/bin/bash
# Sets everything up (scripts/setup.sh) and runs every test suite:
# unit, integration, crash and db.  Exits non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
meson test -C build --print-errorlogs --num-processes 2 || status=$?
# Criterion's own summary lines, so a reader sees counts per binary.
grep -h "Synthesis" build/meson-logs/testlog.txt || true
exit $status
