#!/usr/bin/python3
"""The broker's memory with many clients holding many leases.

    scripts/broker-rss.py [--clients 1000] [--leases 10] [--coordd PATH] [--maps] [--run COMMAND]

Starts a private coordd in a temporary directory, forks CLIENTS processes
that each connect and take LEASES write leases on keys of their own (so
CLIENTS x LEASES leases are held at once), waits until the broker lists
them all, and prints the broker's resident memory (VmRSS, and VmHWM, its
peak) from /proc.  Then it lets the clients go and stops the broker.  It
measures, it asserts nothing (issue target: 1,000 clients holding 10,000
leases in at most 32 MiB).  The coord package is taken from the source
tree (bindings/python) and libcoord from build/ unless COORD_LIBRARY says
otherwise; coordd from build/ unless --coordd.  --maps also prints the
resident memory of each mapping (the heap, leases.mdb, the event feed,
the region, libraries), to see where it goes.  --run runs a command while
the leases are held ($COORD_DIR names the instance, $COORDD_PID the broker).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
os.environ.setdefault("COORD_LIBRARY", os.path.join(ROOT, "build", "libcoord", "libcoord.so.0"))

import coord  # noqa: E402


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def smaps(pid):
    """(Rss kB, Anonymous kB, name) of each mapping with resident pages, largest first."""
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = [0, 0, fields[5] if len(fields) > 5 else "[anon]"]
                out.append(cur)
            elif fields[0] == "Rss:":
                cur[0] = int(fields[1])
            elif fields[0] == "Anonymous:":
                cur[1] = int(fields[1])
    return sorted((m for m in out if m[0]), key=lambda m: -m[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--leases", type=int, default=10)
    ap.add_argument("--coordd", default=os.path.join(ROOT, "build", "broker", "coordd"))
    ap.add_argument("--maps", action="store_true",
                    help="also print the broker's resident memory per mapping of 64 KiB or more "
                    "(/proc/PID/smaps)")
    ap.add_argument("--time-list", type=int, default=0, metavar="N",
                    help="also time N runs of `coordctl list --json` (and of `coordctl list`) "
                    "while the leases are held, and print the median and the slowest")
    ap.add_argument("--coordctl", default=os.path.join(ROOT, "build", "tools", "coordctl"))
    ap.add_argument("--run", metavar="COMMAND",
                    help="also run COMMAND under sh while the leases are held, with COORD_DIR "
                    "naming the instance (to profile coordctl or the broker, say)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="coord-rss-")
    inst = os.path.join(tmp, "instance")
    os.environ["COORD_DIR"] = inst
    os.environ["COORD_NO_AUTOSTART"] = "1"
    broker = subprocess.Popen([args.coordd, "--dir", inst], stderr=subprocess.DEVNULL)
    children = []
    go_w = None
    try:
        client = coord.Client(dir=inst, autostart=False, connect_timeout=10)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.status()
                break
            except coord.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        client.close()
        idle = status(broker.pid, "VmRSS")
        go_r, go_w = os.pipe()
        for i in range(args.clients):
            pid = os.fork()
            if pid == 0:
                os.close(go_w)
                try:
                    c = coord.Client(dir=inst, autostart=False, connect_timeout=30)
                    held = [c.write(f"key:rss-{i}-{k}", timeout=30) for k in range(args.leases)]
                    os.read(go_r, 1)  # until the parent closes the pipe
                    del held
                finally:
                    os._exit(0)
            children.append(pid)
        os.close(go_r)
        want = args.clients * args.leases
        client = coord.Client(dir=inst, autostart=False, connect_timeout=10)
        deadline = time.monotonic() + 300
        while client.status()["leases"] < want:
            if time.monotonic() > deadline:
                sys.exit(f"broker-rss: only {client.status()['leases']} of {want} leases held")
            time.sleep(0.2)
        st = client.status()
        client.close()
        rss, hwm = status(broker.pid, "VmRSS"), status(broker.pid, "VmHWM")
        parts = {k: status(broker.pid, k) for k in ("RssAnon", "RssFile", "RssShmem")}
        print(f"broker-rss: {st['clients'] - 1} clients holding {st['leases']} leases: "
              f"broker VmRSS {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB; "
              f"idle before the clients {idle / 1024:.1f} MiB)")
        print("broker-rss: of which " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in parts.items())
              + " (RssFile: the pages of the LMDB files, the region and the event feed it has touched)")
        for form in (["list", "--json"], ["list"]) if args.time_list else ():
            took = []
            for _ in range(args.time_list):
                t0 = time.perf_counter()
                out = subprocess.run([args.coordctl, "--dir", inst] + form, check=True,
                                     stdout=subprocess.PIPE).stdout
                took.append((time.perf_counter() - t0) * 1000)
            took.sort()
            print(f"broker-rss: coordctl {' '.join(form)} of {st['leases']} leases "
                  f"({len(out)} bytes): median {took[len(took) // 2]:.1f} ms, slowest "
                  f"{took[-1]:.1f} ms over {len(took)} runs (the process's whole run, "
                  f"output to a pipe)")
        if args.run:
            env = dict(os.environ, COORD_DIR=inst, COORDD_PID=str(broker.pid))
            subprocess.run(["sh", "-c", args.run], env=env)
        if args.maps:
            for kb, anon, name in smaps(broker.pid):
                if kb >= 64:
                    print(f"broker-rss:   {kb / 1024:6.2f} MiB (anon {anon / 1024:.2f}) "
                          f"{name.replace(tmp + os.sep, '')}")
    finally:
        if go_w is not None:
            os.close(go_w)  # the clients let go (also when this failed)
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        broker.terminate()
        broker.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
