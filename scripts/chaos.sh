#!/bin/bash
# A long chaos run, kept out of CI: repeats the crash suite's random-kill
# test (workers SIGKILLed at random, and the broker SIGKILLed while a
# writer holds a file) until at least KILLS processes were killed (default
# 10000), and sums what each run printed: kills, broker kills, leases
# taken, exclusion violations.  Exits non-zero on any violation or failed
# run.  CI runs the same test once, in `meson test --suite crash`.
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-10000}
bash scripts/setup.sh >/dev/null
kills=0 brokers=0 leases=0 violations=0 runs=0 failed=0
while [ "$kills" -lt "$want" ]; do
	runs=$((runs + 1))
	meson test -C build crash >/dev/null 2>&1 || failed=$((failed + 1))
	while read -r w b l v; do
		kills=$((kills + w + b)) brokers=$((brokers + b)) leases=$((leases + l))
		violations=$((violations + v))
	done < <(sed -n 's/^crash: [0-9]* rounds, \([0-9]*\) workers and \([0-9]*\) brokers SIGKILLed, \([0-9]*\) leases taken, [0-9]* reconnects, \([0-9]*\) exclusion violations$/\1 \2 \3 \4/p' \
	         build/meson-logs/testlog.txt)
	echo "chaos: run $runs: $kills kills so far ($brokers of the broker), $leases leases, $violations violations, $failed failed runs"
done
echo "chaos: $kills kills ($brokers of the broker) in $runs runs, $leases leases taken, violations: $violations, failed runs: $failed"
[ "$violations" -eq 0 ] && [ "$failed" -eq 0 ]
