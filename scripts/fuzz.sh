#!/bin/bash
# Runs each libFuzzer target (fuzz/) for MINUTES minutes (default 10), one
# after the other on one core, starting from the committed corpus in
# fuzz/corpus/NAME.  Builds the targets with clang in build-fuzz/.  New
# inputs go to build-fuzz/fuzz-new/NAME, crashes to
# build-fuzz/fuzz-crashes/NAME, logs to build-fuzz/fuzz-NAME.log; nothing
# is written into the repository.  Prints one summary line per target and
# how to merge the new inputs into the corpus.  Exits 1 if a target found
# a crash or a broken invariant, 2 if it cannot run.  Not run by CI (CI
# replays the corpus: meson test --suite unit).
#
# usage: scripts/fuzz.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-10}"
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -eq 0 ]; then
	echo "fuzz: MINUTES must be a positive whole number, not '$minutes' (usage: scripts/fuzz.sh [MINUTES])" >&2
	exit 2
fi
bash scripts/setup.sh >/dev/null
# clang (libFuzzer) is only for this script; the build and CI use cc.
if ! command -v clang >/dev/null 2>&1; then
	echo "fuzz: installing clang"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
fi

targets=(decode lease_table)
declare -A max_len=([decode]=8300 [lease_table]=4096) # decode: past COORD_MSG_MAX

if [ ! -f build-fuzz/build.ninja ]; then
	CC=clang meson setup build-fuzz >/dev/null
fi
ninja -C build-fuzz "${targets[@]/#/fuzz/fuzz-}" >/dev/null
if [ ! -x build-fuzz/fuzz/fuzz-decode ]; then
	echo "fuzz: build-fuzz/ does not build the libFuzzer targets (not configured with clang?); remove it and run again" >&2
	exit 2
fi

status=0
summary=()
for t in "${targets[@]}"; do
	new="build-fuzz/fuzz-new/$t" crashes="build-fuzz/fuzz-crashes/$t" log="build-fuzz/fuzz-$t.log"
	mkdir -p "$new" "$crashes"
	touch "build-fuzz/fuzz-$t.start"
	echo "fuzz: $t for $minutes min (log: $log)"
	rc=0
	# The first directory receives new inputs; the committed corpus is only read.
	"build-fuzz/fuzz/fuzz-$t" "$new" "fuzz/corpus/$t" -max_total_time=$((minutes * 60)) \
		-max_len="${max_len[$t]}" -print_final_stats=1 -artifact_prefix="$crashes/" >"$log" 2>&1 || rc=$?
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([^ ]*\).*/cov \1, ft \2, corpus \3/p')
	found=$(find "$crashes" -type f -newer "build-fuzz/fuzz-$t.start" | wc -l)
	line="$t: ${runs:-?} runs, ${speed:-?}/s, ${cov:-no coverage line}, $(find "$new" -type f | wc -l) new inputs in $new"
	if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
		line="$line; FAILED (exit $rc), $found reproducer(s) in $crashes: see $log, replay with build-fuzz/fuzz/replay-$t FILE"
		status=1
	fi
	summary+=("$line")
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
echo "To add what is new to the committed corpus (keeping it small):"
for t in "${targets[@]}"; do
	echo "  build-fuzz/fuzz/fuzz-$t -merge=1 -use_counters=0 -max_len=${max_len[$t]} fuzz/corpus/$t build-fuzz/fuzz-new/$t"
done
exit $status
