"""The update pipeline: writes orders in batches under a write lease, and
runs a backfill subprocess that takes its own turns.

Each batch is one SQLite write transaction (`with db.write()`): its rows
and a row in `batches` with the lease's fencing token commit together or
not at all.  Then the batch's total goes to DuckDB, opened read-write
under the write lease only for that moment.

    python3 pipeline.py --batches 10 [--rows 50] [--backfill]
"""
import argparse
import os
import subprocess
import sys
import time

import common


def write_batch(db, batch, rows, source, pause):
    with db.write(label=source) as lease:
        for n in range(rows):
            db.execute("INSERT INTO orders VALUES (?, ?, ?)", (batch, n, n + 1))
            if n == rows // 2:
                print(f"{source}: inside batch {batch}", flush=True)
            time.sleep(pause)
        db.execute("INSERT INTO batches VALUES (?, ?, ?, ?)", (batch, rows, lease.token, source))
    total = rows * (rows + 1) // 2
    with common.open_stats(True, source) as stats:
        stats.execute(f"INSERT INTO batch_stats VALUES ({batch}, {total})")
    print(f"{source}: committed batch {batch}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--rows", type=int, default=50)
    p.add_argument("--pause", type=float, default=0.002, help="seconds per row")
    p.add_argument("--first", type=int, default=None, help="first batch id (default: next)")
    p.add_argument("--backfill", action="store_true", help="also run backfill.py")
    p.add_argument("--source", default="pipeline")
    args = p.parse_args()

    db = common.open_shop(args.source)
    common.create_stats()
    backfill = None
    if args.backfill:
        backfill = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                     "--source", "backfill", "--first", "1000000",
                                     "--batches", "3", "--rows", str(args.rows)])
        print(f"pipeline: backfill pid {backfill.pid}", flush=True)
    first = args.first
    if first is None:
        with db.read():
            first = db.execute("SELECT coalesce(max(id), -1) + 1 FROM batches "
                               "WHERE id < 1000000").fetchone()[0]
    for batch in range(first, first + args.batches):
        write_batch(db, batch, args.rows, args.source, args.pause)
    db.close()
    if backfill is not None and backfill.wait() != 0:
        sys.exit(f"pipeline: backfill failed with status {backfill.returncode}")


if __name__ == "__main__":
    main()
