#!/bin/bash
# A long chaos run, kept out of CI: repeats the chaos test
# (tests/test_chaos.c, `meson test -C build chaos`) until at least KILLS
# processes were SIGKILLed (default 10000).  Each run is a fresh broker and
# directory with its own random seed, ROUNDS rounds long (env CHAOS_ROUNDS,
# default 500, about 2000 kills); each round kills a library worker, a
# `coordctl run` wrapper, a wrapper's command, a command's child, and
# every 5th round the broker.  It sums what each run printed (kills by
# kind, leases, exclusion violations, orphans, token regressions) and
# exits non-zero on any violation, orphan, token regression or failed
# run; the log of a failed run is kept as build/meson-logs/chaos-run-N.txt.
# CI runs the same test once with its short default (250 rounds), in
# `meson test --suite crash`.
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-10000}
rounds=${CHAOS_ROUNDS:-500}
bash scripts/setup.sh >/dev/null
log=build/meson-logs/testlog.txt
kills=0 workers=0 wrappers=0 commands=0 children=0 brokers=0 leases=0
violations=0 orphans=0 regressions=0 runs=0 failed=0 silent=0
started=$SECONDS
while [ "$kills" -lt "$want" ]; do
	runs=$((runs + 1))
	if ! COORD_CHAOS_ROUNDS=$rounds meson test -C build --no-rebuild chaos >/dev/null 2>&1; then
		failed=$((failed + 1))
		cp "$log" "build/meson-logs/chaos-run-$runs.txt"
	fi
	fields=$(sed -n 's/^chaos: [0-9]* rounds, \([0-9]*\) kills (\([0-9]*\) workers, \([0-9]*\) wrappers, \([0-9]*\) commands, \([0-9]*\) children, \([0-9]*\) brokers), \([0-9]*\) leases, \([0-9]*\) violations, \([0-9]*\) orphans, \([0-9]*\) token regressions$/\1 \2 \3 \4 \5 \6 \7 \8 \9/p' "$log" | tail -n 1)
	if [ -z "$fields" ]; then
		# no summary: the run failed before its end; three in a row is
		# not chaos but a broken build or machine
		silent=$((silent + 1))
		echo "chaos: run $runs printed no summary (see build/meson-logs/chaos-run-$runs.txt)"
		[ "$silent" -lt 3 ] || break
		continue
	fi
	silent=0
	read -r k w c s d b l v o <<<"$fields"
	regressions=$((regressions + $(sed -n 's/.* \([0-9]*\) token regressions$/\1/p' "$log" | tail -n 1)))
	kills=$((kills + k)) workers=$((workers + w)) wrappers=$((wrappers + c))
	commands=$((commands + s)) children=$((children + d)) brokers=$((brokers + b))
	leases=$((leases + l)) violations=$((violations + v)) orphans=$((orphans + o))
	echo "chaos: run $runs: $kills kills so far, $violations violations, $orphans orphans, $regressions token regressions, $failed failed runs"
done
echo "chaos: $kills kills in $runs runs of $rounds rounds, $((SECONDS - started)) s: $workers workers, $wrappers wrappers, $commands commands, $children children, $brokers brokers; $leases leases; violations: $violations, orphans: $orphans, token regressions: $regressions, failed runs: $failed"
[ "$violations" -eq 0 ] && [ "$orphans" -eq 0 ] && [ "$regressions" -eq 0 ] && [ "$failed" -eq 0 ] &&
	[ "$kills" -ge "$want" ]
