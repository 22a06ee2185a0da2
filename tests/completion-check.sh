#!/bin/bash
# Runs coordctl's bash completion (completion/coordctl) in a real bash,
# with bash-completion loaded, the way bash calls it: COMP_WORDS split at
# the word breaks (so key:NAME is three words), COMP_CWORD, COMP_LINE and
# COMP_POINT set, then _coordctl.  It checks that every command and every
# option that coordctl(1) documents completes (so the completion follows
# the page, which man_agree holds to coordctl --help), that the resources
# held on a real broker started here complete; that the
# resources come from the instance a --dir earlier on the line names (or
# $COORD_DIR), not from another; and that completing never starts a
# broker nor creates an instance directory.  Everything lives in one
# mkdtemp directory, removed at the end.
# usage: completion-check.sh COMPLETION_FILE coordctl.1.scd
#        ($COORD_TEST_COORDD and $COORD_TEST_COORDCTL name the binaries)
set -u
completion=$(realpath "$1")
page=$2
coordd=${COORD_TEST_COORDD:?}
coordctl=${COORD_TEST_COORDCTL:?}
bash_completion=/usr/share/bash-completion/bash_completion
passed=0 failed=0
pass() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1"; failed=$((failed + 1)); }

if [ ! -r "$bash_completion" ]; then
	echo "FAIL: $bash_completion is missing: install bash-completion (scripts/setup.sh does)"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coord-completion-XXXXXX")
inst=$tmp/inst
holders=
cleanup() {
	for p in $holders; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	local pid
	pid=$(cat "$inst/coordd.lock" 2>/dev/null)
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/home" "$tmp/cwd"
export HOME=$tmp/home XDG_STATE_HOME=$tmp/home/state
unset COORD_DIR
export COORD_BROKER=$coordd
PATH=$(dirname "$coordctl"):$PATH

# A broker of our own, and a lease on a key whose name nobody else has.
if ! "$coordd" --dir "$inst" --daemon; then
	echo "FAIL: coordd --dir $inst --daemon did not start"
	exit 1
fi
# Two holders: a key whose name nobody else has, and a file that does not
# exist (so only the broker's listing, not the file system, can offer it).
key=completion-held-$$
mkdir "$tmp/later"
future=$tmp/later/future.db
holders=
hold() {
	# shellcheck disable=SC2016 # $0 is the inner shell's
	"$coordctl" --dir "$inst" run --write "$1" -- sh -c 'touch "$0"; exec sleep 600' "$2" &
	holders="$holders $!"
	for _ in $(seq 1 1000); do
		[ -e "$2" ] && return 0
		kill -0 "$!" 2>/dev/null || break
		sleep 0.01
	done
	echo "FAIL: the lease on $1 was not granted"
	exit 1
}
hold "key:$key" "$tmp/granted-key"
hold "$future" "$tmp/granted-file"

# complete LINE: what the completion offers at the end of LINE, one per
# line, sorted.  Words are split as bash splits them for completion: at
# blanks, and around each ':' (one of COMP_WORDBREAKS).
complete_line() {
	(cd "$tmp/cwd" && bash --norc --noprofile -c '
		source "$1" || exit 1
		source "$2" || exit 1
		declare -F _coordctl >/dev/null && complete -p coordctl >/dev/null || exit 1
		line=$3
		words=()
		read -ra blanks <<<"$line"
		for w in "${blanks[@]}"; do
			while [[ $w == *:* ]]; do
				[[ -n ${w%%:*} ]] && words+=("${w%%:*}")
				words+=(":")
				w=${w#*:}
			done
			[[ -n $w ]] && words+=("$w")
		done
		[[ $line == *" " ]] && words+=("")
		COMP_WORDS=("${words[@]}")
		COMP_CWORD=$((${#words[@]} - 1))
		COMP_LINE=$line
		COMP_POINT=${#line}
		COMPREPLY=()
		_coordctl coordctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
		printf "%s\n" "${COMPREPLY[@]}" | sort -u
	' complete_line "$bash_completion" "$completion" "$1")
}

# complete_or_fail NAME LINE: complete_line, or a failure (and status 1)
# if bash could not even run the completion.
complete_or_fail() {
	if ! got=$(complete_line "$2"); then
		fail "$1: bash could not load the completion or run _coordctl"
		return 1
	fi
}

# expect NAME LINE WORD...: the completion of LINE offers every WORD.
expect() {
	local name=$1 line=$2 got w missing=
	shift 2
	complete_or_fail "$name" "$line" || return
	for w in "$@"; do
		grep -qxF -- "$w" <<<"$got" || missing="$missing '$w'"
	done
	if [ -z "$missing" ]; then
		pass "$name"
	else
		fail "$name: \`$line<TAB>\` did not offer$missing; it offered: $(tr '\n' ' ' <<<"$got")"
	fi
}

# refuse NAME LINE WORD: the completion of LINE does not offer WORD.
refuse() {
	local name=$1 line=$2 w=$3 got
	complete_or_fail "$name" "$line" || return
	if grep -qF -- "$w" <<<"$got"; then
		fail "$name: \`$line<TAB>\` offered '$w': $(tr '\n' ' ' <<<"$got")"
	else
		pass "$name"
	fi
}

# Every command and option of coordctl(1): "## COMMAND" under COMMANDS,
# and its items "*--option*", as man_agree reads them.
documented=$(awk '/^# /{sec=$0; cmd=""} /^## /{if (sec == "# COMMANDS") {cmd=$2; print cmd}}
	/^\*-/{if (sec == "# OPTIONS") cmd="-"}
	/^\*-/{if (cmd != "") {while (match($0, /\*--[a-z-]+\*/)) {print cmd, substr($0, RSTART + 1, RLENGTH - 2); $0=substr($0, RSTART + RLENGTH)}}}' "$page")
if [ -z "$documented" ]; then
	fail "found no command in $page"
fi
commands=$(awk 'NF == 1' <<<"$documented" | tr '\n' ' ')
globals=$(awk '$1 == "-" {print $2}' <<<"$documented" | tr '\n' ' ')
# shellcheck disable=SC2086
expect "the global options of coordctl(1)" "coordctl --" $globals
# shellcheck disable=SC2086 # one word per command
expect "every command of coordctl(1)" "coordctl " $commands
for c in $commands; do
	opts=$(awk -v c="$c" 'NF == 2 && $1 == c {print $2}' <<<"$documented" | tr '\n' ' ')
	[ -z "$opts" ] && continue
	# shellcheck disable=SC2086
	expect "the options of $c in coordctl(1)" "coordctl $c --" $opts
done
expect "a command" "coordctl st" status
expect "every command" "coordctl " status list show run checkpoint policy limit revoke doctor setup-shared share
expect "a command after --dir" "coordctl --dir $inst li" list
expect "a global option" "coordctl --d" --dir
expect "an option of run" "coordctl run --wr" --write
expect "options of limit" "coordctl limit key:x --" --max-hold --recall-grace
expect "an option of revoke" "coordctl --dir $inst revoke --g" --grace
expect "a command after help" "coordctl help rev" revoke
expect "an option of show" "coordctl show --w" --wide
expect "a policy spec" "coordctl policy key:x sqlite:tr" truncate
expect "a held key, after key:" "coordctl --dir $inst show key:completion-h" "$key"
expect "a held key, from nothing" "coordctl --dir $inst show " "key:$key"
expect "a key for run" "coordctl --dir $inst run --read key:comp" "$key"
expect "a held path that is no file yet" "coordctl --dir $inst revoke $tmp/later/fu" "$future"
expect "a command name after --" "coordctl --dir $inst run --read key:x -- sle" sleep
refuse "no resource of another instance" "coordctl --dir $tmp/other show key:comp" "$key"
refuse "no resource without --dir: the default instance is another" "coordctl show key:comp" "$key"
COORD_DIR=$inst expect "a key of \$COORD_DIR" "coordctl show key:comp" "$key"

# Completing looked at $tmp/other and the default instance: neither may
# exist now, let alone have a broker.
for d in "$tmp/other" "$XDG_STATE_HOME/coord"; do
	if [ -e "$d" ]; then
		fail "completing created $d$( [ -e "$d/coordd.sock" ] && echo ' and started a broker there')"
	else
		pass "completing left $d alone"
	fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
