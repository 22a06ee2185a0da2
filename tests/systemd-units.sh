#!/bin/bash
# systemd-analyze verify of coord's units, as they are installed.  The system
# pair in a root (--root) that holds the host's own units (sockets.target,
# sysinit.target, ...), coordd at its installed path and the other commands
# the units run, so that ExecStart= is checked against the real binary.
# The user pair without a root (systemd-analyze --user does not take one),
# with the installed coordd path replaced by the built one, the only
# change.  Any complaint about a coord unit fails the test.  Exit 77 (skipped) only when
# systemd-analyze cannot verify even a trivial unit here.
# Then sysusers.d and tmpfiles.d are applied to the same root: group coord
# made, /var/lib/coord 02770 of that group (a shared instance).
#   systemd-units.sh COORDD BINDIR --system UNIT... --user UNIT...
#                    --sysusers FILE --tmpfiles FILE
set -uo pipefail
coordd=$1 bindir=$2
shift 2
system=() user=() sysusers= tmpfiles= into=
for a in "$@"; do
	case $a in
	--system | --user | --sysusers | --tmpfiles) into=${a#--} ;;
	*) case $into in
	   system) system+=("$a") ;;
	   user) user+=("$a") ;;
	   *) printf -v "$into" '%s' "$a" ;;
	   esac ;;
	esac
done

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "systemd-analyze is missing: scripts/setup.sh installs it (Debian package systemd)"
	exit 1
fi
host_units=
for d in /usr/lib/systemd /lib/systemd; do
	if [ -d "$d/system" ] && [ -d "$d/user" ]; then host_units=$d; break; fi
done
if [ -z "$host_units" ]; then
	echo "no systemd unit directories on this host: scripts/setup.sh installs systemd"
	exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/coord-units-XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/etc/systemd/user" \
	"$root$bindir" "$root/run/user"
cp -a "$host_units/system" "$host_units/user" "$root/usr/lib/systemd/"
cp "$coordd" "$root$bindir/coordd"
cp "${system[@]}" "$root/etc/systemd/system/"
for f in "${user[@]}"; do
	sed "s|$bindir/coordd|$coordd|g" "$f" > "$root/etc/systemd/user/$(basename "$f")"
done
# The other commands the units run (ExecReload=/bin/kill ...), from the host.
for cmd in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "${system[@]}"); do
	if [ "$cmd" != "$bindir/coordd" ] && [ ! -e "$root$cmd" ]; then
		mkdir -p "$root$(dirname "$cmd")"
		cp "$cmd" "$root$cmd" 2>/dev/null || echo "the units run $cmd, which this host lacks"
	fi
done
chmod 0700 "$root/run/user"
export XDG_RUNTIME_DIR=$root/run/user

names() { for f in "$@"; do basename "$f"; done; }  # as installed

# Can systemd-analyze work here at all (a container may refuse)?
printf '[Unit]\nDescription=probe\n[Service]\nExecStart=%s/coordd --help\n' "$bindir" \
	> "$root/etc/systemd/system/coord-probe.service"
if ! probe=$(systemd-analyze verify --root="$root" --man=no coord-probe.service 2>&1); then
	echo "systemd-analyze cannot verify units here, skipping: $probe"
	exit 77
fi
rm "$root/etc/systemd/system/coord-probe.service"

status=0
check() { # MODE-ARGS... -- UNITS...
	local out rc
	out=$(systemd-analyze "$@" 2>&1)
	rc=$?
	if [ $rc -ne 0 ] || grep -q 'coord' <<<"$out"; then
		echo "FAIL: systemd-analyze $* (status $rc):"
		echo "$out"
		status=1
	else
		echo "ok: systemd-analyze $*"
	fi
}
check verify --root="$root" --man=no $(names "${system[@]}")
check --user verify --man=no $(for f in "${user[@]}"; do echo "$root/etc/systemd/user/$(basename "$f")"; done)

# Each service's --dir is where its socket listens: coordd refuses any other
# socket.  The system pair's directory is the one tmpfiles.d makes.
pair() { # WHICH FILES...
	local which=$1 dir sock
	shift
	dir=$(sed -n 's/^ExecStart=.* --dir \([^ ]*\).*/\1/p' "$@")
	sock=$(sed -n 's/^ListenSequentialPacket=//p' "$@")
	if [ -z "$dir" ] || [ "$sock" != "$dir/coordd.sock" ]; then
		echo "FAIL: $which units: coordd.service --dir '$dir', coordd.socket listens on '$sock'"
		status=1
	else
		echo "ok: $which units: coordd --dir $dir, socket $sock"
	fi
	[ "$which" = system ] && system_dir=$dir
}
pair system "${system[@]}"
pair user "${user[@]}"
if ! grep -q "^d $system_dir 2770 root coord " "$tmpfiles"; then
	echo "FAIL: $tmpfiles does not make $system_dir 2770 root:coord"
	status=1
fi

mkdir -p "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
cp "$sysusers" "$root/usr/lib/sysusers.d/coord.conf"
cp "$tmpfiles" "$root/usr/lib/tmpfiles.d/coord.conf"
if ! out=$(systemd-sysusers --root="$root" coord.conf 2>&1 &&
           systemd-tmpfiles --root="$root" --create coord.conf 2>&1); then
	echo "FAIL: systemd-sysusers / systemd-tmpfiles --create coord.conf: $out"
	status=1
else
	gid=$(awk -F: '$1 == "coord" { print $3 }' "$root/etc/group")
	got=$(stat -c '%a %g' "$root/var/lib/coord" 2>&1)
	if [ -z "$gid" ] || [ "$got" != "2770 $gid" ]; then
		echo "FAIL: /var/lib/coord is '$got', not 2770 of group coord (gid '${gid}')"
		status=1
	else
		echo "ok: sysusers.d and tmpfiles.d make group coord and /var/lib/coord 2770"
	fi
fi
exit $status
