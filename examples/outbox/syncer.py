"""The syncer: replays the outbox to PostgreSQL, exactly once.

Only one syncer runs: each holds the write lease on the key
`key:outbox-syncer`, and a second one waits in the broker's queue until
the first exits or dies.  Each batch goes to PostgreSQL in one
transaction that also checks and records the lease's fencing token in
the table `fence`: a syncer whose lease was taken over (it hung, the next
one was granted, then it woke up) has a smaller token, and PostgreSQL
refuses its batch.  The idempotency keys (the primary key of `applied`)
make a batch that is sent again after a crash a no-op.

    python3 syncer.py DSN [--exit-when-done]
"""
import argparse
import sys
import time

import psycopg2

import coord
import outbox

SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (name text PRIMARY KEY, token bigint NOT NULL);
INSERT INTO fence VALUES ('outbox', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS applied (key text PRIMARY KEY, payload text NOT NULL,
                                    token bigint NOT NULL);
"""


class Fenced(Exception):
    """PostgreSQL has seen a newer syncer's token."""


def apply_batch(pg, token, rows, pause=0.0):
    """Applies rows [(key, payload)] in one PostgreSQL transaction fenced
    by `token`.  Raises Fenced (and applies nothing) if a larger token was
    seen; psycopg2 errors if PostgreSQL is unreachable."""
    with pg, pg.cursor() as cur:          # one transaction: commit or roll back
        cur.execute("SELECT token FROM fence WHERE name = 'outbox' FOR UPDATE")
        seen = cur.fetchone()[0]
        if token < seen:
            raise Fenced(f"token {token} is older than {seen}: another syncer took over")
        cur.execute("UPDATE fence SET token = %s WHERE name = 'outbox'", (token,))
        for i, (key, payload) in enumerate(rows):
            cur.execute("INSERT INTO applied VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING",
                        (key, payload, token))
            if i == 0:
                print(f"syncer: sending batch of {len(rows)}", flush=True)
            time.sleep(pause)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dsn")
    p.add_argument("--exit-when-done", action="store_true",
                   help="exit once the outbox is empty and no app appends")
    p.add_argument("--pause", type=float, default=0.0, help="seconds per row sent")
    args = p.parse_args()

    lease = coord.write("key:outbox-syncer", timeout=None, label="outbox-syncer")
    print(f"syncer: leader with token {lease.token}", flush=True)
    db = outbox.open_outbox("outbox-syncer")
    pg = None
    idle = 0
    while lease.valid:
        with db.read():
            batch = db.execute("SELECT id, key, payload FROM outbox WHERE synced = 0 "
                               "ORDER BY id LIMIT 20").fetchall()
        if not batch:
            idle += 1
            if args.exit_when_done and idle > 20:
                break
            time.sleep(0.05)
            continue
        idle = 0
        try:
            if pg is None:
                pg = psycopg2.connect(args.dsn)
            apply_batch(pg, lease.token, [(k, v) for _, k, v in batch], args.pause)
        except psycopg2.Error as e:
            print(f"syncer: PostgreSQL unavailable ({type(e).__name__}), retrying", flush=True)
            pg = None
            time.sleep(0.2)
            continue
        with db.write():
            db.executemany("UPDATE outbox SET synced = 1 WHERE id = ?", [(i,) for i, _, _ in batch])
        print(f"syncer: synced {len(batch)}", flush=True)
    db.close()
    lease.release()
    print("syncer: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
