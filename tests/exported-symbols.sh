#!/bin/sh
# The library boundary, seen by nm:
#   - libcoord.so and libcoord.a define exactly the coord_* functions
#     declared in coord.h: a private helper that lost its `static` would
#     leak into every program that links them, and a declared function
#     without a definition would fail only in a user's link;
#   - coordd defines no coord_* symbol: the broker shares coord_proto.h's
#     static inline helpers (coord_proto_*) with the library, never the
#     client itself.
# usage: exported-symbols.sh libcoord.so libcoord.a coordd coord.h
set -eu
so="$1" a="$2" coordd="$3" header="$4"
passed=0 failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pass() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1"; failed=$((failed + 1)); }

# Every function coord.h declares public.
grep -o 'COORD_API[^(]*[^a-z_]coord_[a-z_]*(' "$header" | sed 's/.*\(coord_[a-z_]*\)($/\1/' |
	sort -u >"$tmp/declared"

# check WHAT LIST: LIST (one name a line) must be the declared set.
check() {
	what="$1" list="$2"
	n=$(wc -l <"$list")
	if [ "$n" -lt 25 ]; then
		fail "$what: only $n symbols; the check looked at the wrong file"
	elif grep -qv '^coord_[a-z]' "$list"; then
		fail "$what exports symbols that are private (coord__) or not coord_*: $(grep -v '^coord_[a-z]' "$list" | tr '\n' ' ')"
	elif ! cmp -s "$list" "$tmp/declared"; then
		fail "$what does not export exactly what coord.h declares: $(comm -3 "$list" "$tmp/declared" | tr -d '\t' | tr '\n' ' ')"
	else
		pass "$what: $n symbols, all coord_*, as coord.h declares"
	fi
}

# nm -D lists a version node (COORD_0, type A) and names as coord_x@@COORD_0.
nm -D --defined-only "$so" | awk 'NF == 3 && $2 != "A" { sub(/@.*/, "", $3); print $3 }' |
	sort -u >"$tmp/so"
check "$(basename "$so")" "$tmp/so"

nm -g --defined-only "$a" | awk 'NF == 3 { print $3 }' | sort -u >"$tmp/a"
check "$(basename "$a")" "$tmp/a"

nm --defined-only "$coordd" | awk 'NF == 3 { print $3 }' | grep '^coord_' | grep -v '^coord_proto_' \
	>"$tmp/coordd" || true
if [ -s "$tmp/coordd" ]; then
	fail "coordd defines client symbols: $(tr '\n' ' ' <"$tmp/coordd")"
else
	pass "coordd defines no coord_* symbol"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
