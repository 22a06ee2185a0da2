#!/bin/bash
# Before deploying: is anything wrong with the dashboard's files?
# `coordctl doctor` looks (side files, owners, leftover WALs, who has them
# open) and changes nothing.  Exit status 0 healthy, else doctor's.
set -u
data=${DATA_DIR:-$(dirname "$0")}
status=0
for f in "$data/shop.db" "$data/stats.duckdb"; do
	[ -e "$f" ] || continue
	if out=$(coordctl doctor "$f" 2>&1); then
		echo "preflight: $f healthy"
	else
		status=$?
		echo "$out"
	fi
done
exit $status
