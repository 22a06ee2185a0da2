#!/usr/bin/python3
"""coord-bench runs, briefly, and says what it measured in valid JSON lines.

    tests/bench-smoke.py COORD_BENCH COORDD PLOT_SCRIPT

Runs the bench's rows (few iterations, no Python rows) and a two-point
load sweep with its peers, each with --json, and checks that every line
is a JSON object, that every row the README's table and the issue's
targets rely on is there with a positive p50, that the load rows name the
broker's CPU and memory, and that scripts/bench-plot.py draws the sweep
(when matplotlib is installed).  It asserts no figure: speed is
reported, not tested.  Exit status 0 or 1 (77: skipped).
"""

import json
import os
import subprocess
import sys
import tempfile


def run(argv, env):
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    if p.returncode != 0:
        sys.exit(f"bench-smoke: {' '.join(argv)} exited {p.returncode}:\n{p.stderr}")
    rows = []
    for n, line in enumerate(p.stdout.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"bench-smoke: line {n} of {' '.join(argv)} is not JSON ({e}): {line!r}")
        if not isinstance(row, dict) or "row" not in row:
            sys.exit(f"bench-smoke: line {n} is not a row object: {line!r}")
        rows.append(row)
    return rows


def need(rows, what, **match):
    found = [r for r in rows if r.get("row") == what and all(r.get(k) == v for k, v in match.items())]
    if not found:
        sys.exit(f"bench-smoke: no {what!r} row with {match}; rows: "
                 f"{sorted({(r.get('row'), r.get('who'), r.get('via')) for r in rows})}")
    return found[0]


def main():
    bench, coordd, plot = sys.argv[1:4]
    env = dict(os.environ, COORD_BROKER=coordd)
    env.pop("COORD_DIR", None)
    with tempfile.TemporaryDirectory() as tmp:
        env["TMPDIR"] = tmp
        rows = run([bench, "--json", "--no-python", "--iterations", "200", "--handoffs", "10"], env)
        need(rows, "run")
        for via in ("path", "handle, cached", "handle, no cache"):
            r = need(rows, "acquire+release", mode="read", who="coord", via=via)
            if not r["p50_us"] > 0:
                sys.exit(f"bench-smoke: {r} has no positive p50")
        for who in ("flock", "fcntl", "rwlock", "sqlite"):
            need(rows, "acquire+release", mode="write", who=who)
        for who in ("coord", "flock", "fcntl", "rwlock", "sqlite"):
            need(rows, "handoff: release -> waiter runs", who=who)
        for who in ("coord", "flock", "fcntl", "sqlite"):
            need(rows, "reclaim: SIGKILL -> waiter runs", who=who)
        need(rows, "socket round trip", via="across CPUs")
        targets = [r for r in rows if r["row"] == "target"]
        if len(targets) != 5 or any(not isinstance(t["met"], bool) for t in targets):
            sys.exit(f"bench-smoke: expected 5 targets with a met flag, got {targets}")

        load = run([bench, "--json", "--load-peers", "--load", "1,2:10:0.9:1"], env)
        loads = [r for r in load if r["row"] == "load"]
        for who, via in (("coord", "handle, cached"), ("coord", "handle, no cache"),
                         ("flock", "fd"), ("fcntl", "OFD lock"), ("rwlock", "shared memory")):
            for clients in (1, 2):
                r = need(loads, "load", who=who, via=via, clients=clients)
                if r["ops"] <= 0 or r["errors"] != 0:
                    sys.exit(f"bench-smoke: {r}: no operations, or errors")
                if who == "coord" and ("broker_cpu_us_per_op" not in r or
                                       r.get("broker_rss_kib", 0) <= 0):
                    sys.exit(f"bench-smoke: {r}: no broker CPU or memory")

        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("bench-smoke: matplotlib not installed: the plot is not drawn")
            return 0
        data = os.path.join(tmp, "load.jsonl")
        png = os.path.join(tmp, "load.png")
        with open(data, "w") as f:
            f.write("\n".join(json.dumps(r) for r in load) + "\n")
        p = subprocess.run([sys.executable, plot, data, "-o", png], capture_output=True, text=True)
        if p.returncode != 0 or not os.path.getsize(png) > 0:
            sys.exit(f"bench-smoke: bench-plot.py failed ({p.returncode}): {p.stderr}")
        with open(png, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                sys.exit("bench-smoke: bench-plot.py wrote no PNG")
    print("bench-smoke: rows, targets, load sweep and plot all there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
