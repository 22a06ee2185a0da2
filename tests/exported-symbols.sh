#!/bin/sh
# The client library exports coord_* and nothing else: a private helper
# that lost its `static` would leak into every program that links it.
set -eu
lib="$1"
bad=$(nm -g --defined-only "$lib" | awk 'NF == 3 { print $3 }' | grep -v '^coord_[a-z]' || true)
count=$(nm -g --defined-only "$lib" | awk 'NF == 3' | wc -l)
if [ -n "$bad" ]; then
	echo "exported-symbols: $lib exports symbols without the coord_ prefix:"
	echo "$bad"
	echo "0 passed, 1 failed"
	exit 1
fi
if [ "$count" -lt 10 ]; then
	echo "exported-symbols: only $count symbols in $lib; the check looked at the wrong file"
	echo "0 passed, 1 failed"
	exit 1
fi
echo "exported-symbols: $count symbols, all coord_*"
echo "1 passed, 0 failed"
