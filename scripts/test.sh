#!/bin/bash
# Sets everything up (scripts/setup.sh) and runs every test suite (unit,
# integration, crash, db) twice: on the normal build, then on a build with
# AddressSanitizer and UndefinedBehaviorSanitizer.  Exits non-zero if any
# test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
echo "== tests"
meson test -C build --print-errorlogs --num-processes 2 || status=$?
echo "== tests under ASan+UBSan"
if [ ! -f build-asan/build.ninja ]; then
	meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C build-asan >/dev/null
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --print-errorlogs --num-processes 2 || status=$?
# Criterion's own summary lines, so a reader sees counts per binary.
grep -h "Synthesis" build/meson-logs/testlog.txt build-asan/meson-logs/testlog.txt || true
exit $status
