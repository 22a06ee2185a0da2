#!/bin/bash
# Sets everything up (scripts/setup.sh) and runs every test suite (unit,
# integration, crash, db) twice: on the normal build, then on a build with
# AddressSanitizer and UndefinedBehaviorSanitizer.  Then it runs the tests
# that share one connection across threads (suite 'tsan') on a
# ThreadSanitizer build, which builds only those tests, coordd and
# coordctl.  Exits non-zero if any test fails or TSan reports anything.
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
echo "== threads under TSan"
if [ ! -f build-tsan/build.ninja ]; then
	meson setup build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null
fi
ninja -C build-tsan tests/test-threads tests/test-recall broker/coordd tools/coordctl >/dev/null
# Every process's reports go to files (coordd's stderr is a log in the
# test's directory, removed with it), and any file fails the run.
tsan_log=$PWD/build-tsan/meson-logs/tsan
rm -f "$tsan_log".*
# TSan needs its fixed memory layout: with more address randomisation than
# it expects (vm.mmap_rnd_bits 32 on newer kernels) GCC 12's runtime dies
# with "unexpected memory mapping".  setarch -R turns randomisation off for
# the tests and everything they start; skipped where personality(2) is
# refused.
norandom=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
	norandom=(setarch "$(uname -m)" -R)
fi
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$tsan_log" \
	"${norandom[@]}" meson test -C build-tsan --no-rebuild --suite tsan --print-errorlogs \
	--num-processes 2 || status=$?
if compgen -G "$tsan_log.*" >/dev/null; then
	cat "$tsan_log".*
	status=1
fi
# Criterion's own summary lines (and the TSan driver's), so a reader sees
# counts per binary.
grep -h "Synthesis" build/meson-logs/testlog.txt build-asan/meson-logs/testlog.txt \
	build-tsan/meson-logs/testlog.txt || true
exit $status
