"""The outbox demo: two apps append operations while PostgreSQL is stopped
for a while and two syncers are SIGKILLed, one while PostgreSQL is down
and one in the middle of a batch; then it shows that every operation was
applied exactly once and that a stale syncer's batch is refused.

    python3 demo.py WORKDIR        (run-demo.sh makes WORKDIR and the env)
Exit status 0 when everything holds.
"""
import os
import select
import signal
import subprocess
import sys
import time

import psycopg2

import pg
import syncer

HERE = os.path.dirname(os.path.abspath(__file__))
APPS, OPS = 2, 120


class Proc:
    """A Python program of this directory whose output lines we wait for."""

    def __init__(self, *argv):
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, argv[0]), *argv[1:]],
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        self.seen = []

    def expect(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while not any(text in l for l in self.seen):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
                sys.exit(f"demo: gave up waiting for {text!r}; saw {self.seen[-3:]}")
            line = self.p.stdout.readline()
            if not line:
                sys.exit(f"demo: exited before {text!r}; saw {self.seen[-3:]}")
            self.seen.append(line.strip())
        return next(l for l in self.seen if text in l)

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def token(self):
        return int(self.expect("leader with token").split()[-1])


def main(work):
    cluster = pg.Cluster(os.path.join(work, "pg"))
    cluster.init()
    cluster.start()
    with psycopg2.connect(cluster.dsn) as conn, conn.cursor() as cur:
        cur.execute(syncer.SCHEMA)
    conn.close()
    try:
        return run(cluster)
    finally:
        try:
            cluster.stop()
        except subprocess.CalledProcessError:
            pass


def run(cluster):
    a = Proc("syncer.py", cluster.dsn, "--pause", "0.01")
    token_a = a.token()
    apps = [Proc("app.py", f"app{i}", str(OPS), "--pause", "0.01") for i in range(APPS)]
    a.expect("synced")
    cluster.stop()
    print("demo: PostgreSQL stopped; the apps keep appending")
    a.expect("PostgreSQL unavailable")
    b = Proc("syncer.py", cluster.dsn, "--pause", "0.01")   # waits for the key
    a.kill()
    print("demo: SIGKILLed syncer A while PostgreSQL was down")
    token_b = b.token()
    cluster.start()
    print("demo: PostgreSQL restarted")
    b.expect("sending batch")
    b.kill()
    print("demo: SIGKILLed syncer B in the middle of a batch")
    for app in apps:
        app.expect("appended")
        app.p.wait()
    c = Proc("syncer.py", cluster.dsn, "--exit-when-done")
    token_c = c.token()
    c.expect("syncer: done", timeout=60)

    with psycopg2.connect(cluster.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT key) FROM applied")
        applied, distinct = cur.fetchone()
        cur.execute("SELECT key FROM applied")
        keys = {k for (k,) in cur.fetchall()}
    conn.close()
    # Syncer A wakes up from the dead (a hung process would) and sends a batch.
    stale_pg = psycopg2.connect(cluster.dsn)
    try:
        syncer.apply_batch(stale_pg, token_a, [("stale-op", "{}")])
        refused = False
    except syncer.Fenced as e:
        refused = str(e)
    with stale_pg, stale_pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM applied WHERE key = 'stale-op'")
        stale = cur.fetchone()[0]
    stale_pg.close()
    expected = {f"app{i}-{n}" for i in range(APPS) for n in range(OPS)}
    print(f"demo: syncer tokens A={token_a} B={token_b} C={token_c}")
    print(f"demo: {len(expected)} operations appended, {applied} rows applied in PostgreSQL, "
          f"{distinct} distinct, missing {len(expected - keys)}, unexpected {len(keys - expected)}")
    print(f"demo: a batch from syncer A's stale token: "
          f"{'refused: ' + refused if refused else 'ACCEPTED'}")
    ok = (applied == distinct == len(expected) and keys == expected and refused and not stale
          and token_a < token_b < token_c)
    print("demo: ok, every operation applied exactly once" if ok else "demo: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
