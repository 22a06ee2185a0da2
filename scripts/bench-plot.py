#!/usr/bin/python3
"""Draws a coord-bench load sweep: latency against clients.

    build/tools/coord-bench --json --load-peers --load 1,2,4,8,16:100:0.9:3 > run.jsonl
    scripts/bench-plot.py run.jsonl -o docs/bench-latency.png

Reads the JSON lines of one or more coord-bench runs (a file name, or "-"
for standard input) and draws, for each load (resources and read share),
acquire+release latency (p50 solid, p99 dashed) against the number of
client processes, one line per lock (coord with and without its cache,
flock, fcntl, rwlock), and below it the operations per second.  Rows other
than "load" are ignored.  Needs Debian's python3-matplotlib.  Exit status:
0; 1 when the input holds no load rows or cannot be read; 2 on a usage
error.
"""

import argparse
import collections
import json
import sys


def read_rows(paths):
    rows = []
    for path in paths:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8")
        with f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue  # the Python rows' table, a note
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"bench-plot: {path}:{n}: not JSON: {e}")
                if row.get("row") == "load":
                    rows.append(row)
    return rows


def label(row):
    return row["who"] if row["who"] != "coord" else f"coord ({row['via']})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="coord-bench --json output ('-': stdin)")
    ap.add_argument("-o", "--output", required=True, help="the PNG to write")
    ap.add_argument("--title", default=None, help="a title above the plots")
    args = ap.parse_args()
    try:
        rows = read_rows(args.inputs)
    except OSError as e:
        print(f"bench-plot: {e}", file=sys.stderr)
        return 1
    if not rows:
        print("bench-plot: no load rows in the input (run coord-bench --json --load ...)",
              file=sys.stderr)
        return 1

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    loads = collections.OrderedDict()
    for r in rows:
        key = (r["resources"], r["read_share"])
        loads.setdefault(key, collections.OrderedDict()).setdefault(label(r), []).append(r)
    fig, axes = plt.subplots(2, len(loads), figsize=(6.4 * len(loads), 8), squeeze=False,
                             sharex="col")
    for col, ((resources, share), series) in enumerate(loads.items()):
        lat, ops = axes[0][col], axes[1][col]
        for i, (name, rs) in enumerate(series.items()):
            rs.sort(key=lambda r: r["clients"])
            x = [r["clients"] for r in rs]
            color = f"C{i}"
            lat.plot(x, [r["p50_us"] for r in rs], "-o", color=color, label=f"{name} p50")
            lat.plot(x, [r["p99_us"] for r in rs], "--", color=color, label=f"{name} p99")
            ops.plot(x, [r["ops_per_s"] for r in rs], "-o", color=color, label=name)
        lat.set_title(f"{resources} resources, {share:.0%} reads")
        lat.set_ylabel("acquire+release latency (µs)")
        lat.set_yscale("log")
        lat.grid(True, which="both", alpha=0.3)
        lat.legend(fontsize="x-small", ncol=2)
        ops.set_xlabel("client processes")
        ops.set_ylabel("operations per second, all clients")
        ops.set_yscale("log")
        ops.set_xscale("log", base=2)
        counts = sorted({r["clients"] for rs in series.values() for r in rs})
        ops.set_xticks(counts)
        ops.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ops.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ops.grid(True, which="both", alpha=0.3)
        ops.legend(fontsize="x-small")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"bench-plot: wrote {args.output} ({len(rows)} load rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
