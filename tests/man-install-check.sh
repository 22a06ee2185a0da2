#!/bin/sh
# The manual pages are built, render, and install where man finds them:
# each page of the build tree renders with `man -l` without a warning,
# `meson install --destdir` puts coordctl.1, coordd.8 and coord.h.3 under
# share/man/man1, man8 and man3 (and the bash completion under
# share/bash-completion/completions), and `man -M` on the installed tree
# shows each page by its name and section.  Everything lives in one mkdtemp
# directory, removed at the end.
# usage: man-install-check.sh BUILD_DIR
set -u
build=$1
passed=0 failed=0
pass() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

if ! command -v man >/dev/null 2>&1; then
	fail "man is not installed (apt-get install man-db; scripts/setup.sh does)"
	finish
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coord-man-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export MANWIDTH=80 LC_ALL=C.UTF-8 MANPAGER=cat PAGER=cat

# render FILE NAME: `man -l FILE` prints NAME's page with no warning.
render() {
	if ! man --warnings -l "$1" >"$tmp/out" 2>"$tmp/err"; then
		fail "man -l $1 failed: $(cat "$tmp/err")"
	elif [ -s "$tmp/err" ]; then
		fail "man -l $1 warns: $(cat "$tmp/err")"
	elif ! grep -q "^NAME" "$tmp/out" || ! grep -q "^ *$2 - " "$tmp/out"; then
		fail "man -l $1 shows no NAME section for $2"
	else
		pass "man -l $1 renders $2 without warnings"
	fi
}

pages="coordctl.1 coordd.8 coord.h.3"
for p in $pages; do
	if [ ! -s "$build/doc/$p" ]; then
		fail "$build/doc/$p was not built (is scdoc installed? apt-get install scdoc)"
		continue
	fi
	render "$build/doc/$p" "${p%.*}"
done

dest=$tmp/dest
if ! meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log"
	fail "meson install --destdir"
	finish
fi
pass "meson install --destdir"

mandir=
for p in $pages; do
	name=${p%.*} section=${p##*.}
	f=$(find "$dest" -path "*/share/man/man$section/$p" | head -n 1)
	if [ -z "$f" ]; then
		fail "$p is not installed under share/man/man$section"
		continue
	fi
	pass "installed ${f#"$dest"}"
	mandir=${f%/man"$section"/"$p"}
	render "$f" "$name"
	if man -M "$mandir" "$section" "$name" >"$tmp/out" 2>"$tmp/err" && grep -q "^ *$name - " "$tmp/out"; then
		pass "man -M ${mandir#"$dest"} $section $name"
	else
		fail "man -M ${mandir#"$dest"} $section $name: $(cat "$tmp/err")"
	fi
done

f=$(find "$dest" -path "*/share/bash-completion/completions/coordctl" | head -n 1)
if [ -n "$f" ] && grep -q "complete -F _coordctl coordctl" "$f"; then
	pass "installed ${f#"$dest"}"
else
	fail "the bash completion is not installed under share/bash-completion/completions"
fi
finish
