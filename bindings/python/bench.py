#!/usr/bin/python3
"""coord-bench's Python rows: the coord package beside the Python file
locks people already use, in one run on the same machine.

It measures, through the coord package (ctypes over libcoord.so.0) and
through Debian's python3-filelock, python3-fasteners and python3-portalocker,
with a raw fcntl.flock() from Python as the floor:
  - uncontended acquire+release, write and read (where the lock has a read
    mode): coord.write(path) with an absolute path (the package keeps the
    path's resource handle), coord.write() with a relative path (resolved
    on every call, like coord_acquire()), an explicit coord.Client with one
    path reused, coord.FileLock, filelock.FileLock,
    fasteners.InterProcessReaderWriterLock, portalocker.Lock (exclusive);
  - handoff: from the holder's release to a waiting process (forked,
    blocked in its acquire) running.  Every lock keeps its default
    settings: filelock, fasteners and portalocker wait by sleeping and
    trying again, so their figure is mostly their poll interval, which the
    output names.  The holder lets go 2 ms after the waiter started
    waiting (as in coord-bench), plus, for a polling lock, a random part
    of its poll interval, so that releases fall anywhere in the waiter's
    sleep;
  - reads both with the library's cached read grants (the default: the
    second and later reads of a path never leave the process) and on a
    client made with coord.Client(cache=False) (every read asks the broker), beside
    an empty `with` block, the loop's own cost;
  - a tiny SQLite query (one row by primary key, WAL database, connection
    kept open) with no lock, under coord.read() cached and not, and under
    flock(LOCK_SH).
It prints p50/p99/mean in microseconds, in coord-bench's columns, or with
--json one JSON object per line (coord-bench --json passes it).  It never
asserts anything: speed is reported, not tested, because machines are
noisy.

coord's lease is on DIR/bench.db (an existing file, so its figures include
the flock(2) the library takes on it); the other locks share DIR/bench.lock
(filelock truncates its lock file, so it must not be a database).  The
SQLite rows use DIR/sqlite-bench.db, made and removed by the run.

With --dir it uses the broker of that instance (coord-bench passes its
private one); without, it starts a private coordd (--broker, else
$COORD_BROKER, else the build tree's next to $COORD_LIBRARY, else coordd on
PATH) in a temporary directory and stops it at the end.  Exit status: 0;
77 when the coord package cannot be imported (the rows are skipped); 1 on
a failure; 64 on a usage error.

Standard library only, besides the three peers (each is skipped, with a
note, when it is not installed).
"""

import argparse
import fcntl
import json
import mmap
import os
import random
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77
HOLD_NS = 2_000_000  # the waiter has been waiting this long when the holder lets go
WARMUP = 20  # untimed iterations before each row (connections, handles, caches)

now = time.monotonic_ns  # CLOCK_MONOTONIC: comparable across processes


JSON = False  # --json: one JSON object per line, as coord-bench --json prints


def summarize(ns):
    """p50, p99, p99.9, mean in microseconds, computed as coord-bench does."""
    ns = sorted(ns)
    n = len(ns)
    return (ns[n // 2] / 1000, ns[(n * 99) // 100] / 1000, ns[(n * 999) // 1000] / 1000,
            sum(ns) / n / 1000)


def row(what, who, ns):
    p50, p99, p999, mean = summarize(ns)
    if JSON:
        print(json.dumps({"row": what, "lang": "python", "who": who, "n": len(ns),
                          "p50_us": round(p50, 4), "p99_us": round(p99, 4),
                          "p999_us": round(p999, 4), "mean_us": round(mean, 4)}), flush=True)
        return
    print(f"  {what:<38} {who:<11} {p50:9.2f} {p99:9.2f} {mean:9.2f}", flush=True)


def note(text):
    if JSON:
        print(json.dumps({"row": "note", "lang": "python", "text": text}), flush=True)
    else:
        print(f"  {text}", flush=True)


class Nothing:
    """An empty context manager: what `with x:` costs by itself."""

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---- uncontended ----

def uncontended(hold, n):
    """Times `with hold(): pass`, n times."""
    for _ in range(WARMUP):
        with hold():
            pass
    ns = [0] * n
    for i in range(n):
        t0 = now()
        with hold():
            pass
        ns[i] = now() - t0
    return ns


def uncontended_flock(path, op, n):
    """The floor: fcntl.flock() on a descriptor opened once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        flock, un = fcntl.flock, fcntl.LOCK_UN
        for _ in range(WARMUP):
            flock(fd, op)
            flock(fd, un)
        ns = [0] * n
        for i in range(n):
            t0 = now()
            flock(fd, op)
            flock(fd, un)
            ns[i] = now() - t0
        return ns
    finally:
        os.close(fd)


class Flock:
    """fcntl.flock(LOCK_EX or LOCK_SH) as a context manager, for handoffs
    and the SQLite rows (the uncontended floor calls flock() directly)."""

    def __init__(self, path, op):
        self.path, self.op, self.fd = path, op, -1

    def __call__(self):
        return self

    def __enter__(self):
        if self.fd < 0:  # opened in the process that uses it (a forked waiter)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, self.op)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)


# ---- handoff ----

def handoff(hold, rounds, poll_s, rng):
    """Holder (this process) releases -> a forked waiter, blocked in its
    acquire, runs.  hold() gives a context manager taking the lock in
    write (exclusive) mode; poll_s is the lock's poll interval (0 for a
    lock whose waiter is woken)."""
    t1 = mmap.mmap(-1, 8 * rounds)  # MAP_SHARED: the waiter's stamps
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(go_w)
            os.close(done_r)
            for i in range(rounds):
                if os.read(go_r, 1) != b"g":
                    break
                with hold():
                    stamp = now()
                struct.pack_into("q", t1, 8 * i, stamp)
                os.write(done_w, b"d")
            else:
                status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(go_r)
    os.close(done_w)
    ns = [0] * rounds
    try:
        for i in range(rounds):
            extra = int(rng.uniform(0, poll_s) * 1e9) if poll_s else 0
            with hold():
                os.write(go_w, b"g")
                time.sleep((HOLD_NS + extra) / 1e9)
                t0 = now()
            if os.read(done_r, 1) != b"d":
                raise RuntimeError("the handoff waiter died (see its traceback above)")
            ns[i] = struct.unpack_from("q", t1, 8 * i)[0] - t0
    finally:
        os.close(go_w)
        os.close(done_r)
        _, status = os.waitpid(pid, 0)
        t1.close()
    if status != 0:
        raise RuntimeError(f"the handoff waiter failed (wait status {status})")
    return ns


# ---- SQLite ----

def make_database(path, rows=1000):
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    con.execute("BEGIN")
    con.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)",
                    ((k, f"value {k:06d}") for k in range(rows)))
    con.execute("COMMIT")
    con.close()


def sqlite_reads(path, hold, n, rows=1000):
    """Times one primary-key SELECT (its own read transaction) on an open
    connection, inside `with hold():`, or with no lock when hold is None."""
    con = sqlite3.connect(path, isolation_level=None)
    query = "SELECT v FROM kv WHERE k = ?"
    ns = [0] * n
    try:
        for i in range(-WARMUP, n):
            key = (i * 7919 % rows,)
            t0 = now()
            if hold is None:
                con.execute(query, key).fetchone()
            else:
                with hold():
                    con.execute(query, key).fetchone()
            if i >= 0:
                ns[i] = now() - t0
    finally:
        con.close()
    return ns


# ---- the instance ----

def accepts(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(sock_path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def find_broker(explicit):
    if explicit:
        return explicit
    if os.environ.get("COORD_BROKER"):
        return os.environ["COORD_BROKER"]
    lib = os.environ.get("COORD_LIBRARY")
    if lib:  # a build tree: build/libcoord/libcoord.so.0 -> build/broker/coordd
        cand = os.path.join(os.path.dirname(os.path.abspath(lib)), "..", "broker", "coordd")
        if os.access(cand, os.X_OK):
            return cand
    return shutil.which("coordd")


class PrivateBroker:
    """A coordd of our own in a temporary directory, stopped at the end."""

    def __init__(self, binary):
        if not binary:
            raise RuntimeError("no coordd to start: pass --broker, set COORD_BROKER, or --dir")
        self.root = tempfile.mkdtemp(prefix="coord-bench-py-")
        self.dir = self.root
        self.log = open(os.path.join(self.root, "coordd.log"), "wb")
        self.proc = subprocess.Popen([binary, "--dir", self.dir], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        sock = os.path.join(self.dir, "coordd.sock")
        deadline = time.monotonic() + 10
        while not accepts(sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.close()
                with open(self.log.name, errors="replace") as f:
                    log = f.read().strip()
                self.stop()
                raise RuntimeError(f"{binary} --dir {self.dir} did not start "
                                   f"(status {self.proc.poll()}): {log}")
            time.sleep(0.005)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def import_peer(name):
    try:
        return __import__(name)
    except ImportError:
        return None


# ---- the run ----

def run(args, dir):
    import coord  # after COORD_DIR is set; ImportError is a skip (main())
    from inspect import signature

    filelock = import_peer("filelock")
    fasteners = import_peer("fasteners")
    portalocker = import_peer("portalocker")
    n, rounds, polled = args.iterations, args.handoffs, args.polled_handoffs
    resource = os.path.join(dir, "bench.db")
    relative = os.path.relpath(resource)
    lockfile = os.path.join(dir, "bench.lock")
    database = os.path.join(dir, "sqlite-bench.db")
    for path in (resource, lockfile):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    make_database(database)
    rng = random.Random(9)
    client = coord.Client(dir=dir, autostart=False)
    missing = [m for m, mod in (("filelock", filelock), ("fasteners", fasteners),
                                ("portalocker", portalocker)) if mod is None]

    versions = ", ".join(f"{m.__name__} {getattr(m, '__version__', '?')}"
                         for m in (filelock, fasteners, portalocker) if m is not None)
    if JSON:
        print(json.dumps({"row": "run", "lang": "python", "python": sys.version.split()[0],
                          "iterations": n, "handoffs": rounds, "polled_handoffs": polled,
                          "coord": coord.__version__, "peers": versions}), flush=True)
    else:
        print(f"coord-bench (Python {sys.version.split()[0]}, {sys.executable}): {n} "
              f"iterations, {rounds} handoffs ({polled} with polling locks); times in "
              f"microseconds")
        print(f"  coord {coord.__version__} from {os.path.dirname(coord.__file__)}"
              f"{'; ' + versions if versions else ''}")
        print(f"  {'operation':<38} {'who':<11} {'p50':>9} {'p99':>9} {'mean':>9}", flush=True)
    # A client without cached reads: every read asks the broker, as before
    # the cache.
    uncached = coord.Client(dir=dir, autostart=False, cache=False)

    # Uncontended, write then read.  Each hold() is the library's own idiom.
    cfl = coord.FileLock(resource)
    row("acquire+release write", "coord", uncontended(lambda: coord.write(resource), n))
    row("acquire+release write, rel. path", "coord", uncontended(lambda: coord.write(relative), n))
    row("acquire+release write, Client", "coord", uncontended(lambda: client.write(resource), n))
    row("acquire+release write, FileLock", "coord", uncontended(lambda: cfl, n))
    if filelock:
        fl = filelock.FileLock(lockfile)
        row("acquire+release write", "filelock", uncontended(lambda: fl, n))
    if fasteners:
        rw = fasteners.InterProcessReaderWriterLock(lockfile)
        row("acquire+release write", "fasteners", uncontended(rw.write_lock, n))
    if portalocker:
        pl = portalocker.Lock(lockfile)
        row("acquire+release write", "portalocker", uncontended(lambda: pl, n))
    row("acquire+release write", "flock", uncontended_flock(lockfile, fcntl.LOCK_EX, n))
    row("empty with-block (the loop's own cost)", "-", uncontended(Nothing(), n))
    row("acquire+release read, cached", "coord", uncontended(lambda: coord.read(resource), n))
    row("acquire+release read, rel. path", "coord", uncontended(lambda: coord.read(relative), n))
    row("acquire+release read, Client, cached", "coord",
        uncontended(lambda: client.read(resource), n))
    row("acquire+release read, Client, no cache", "coord",
        uncontended(lambda: uncached.read(resource), n))
    if fasteners:
        row("acquire+release read", "fasteners", uncontended(rw.read_lock, n))
    row("acquire+release read", "flock", uncontended_flock(lockfile, fcntl.LOCK_SH, n))

    # Handoff.  The poll intervals are the libraries' defaults, read from
    # the installed versions.
    row("handoff release -> waiter runs", "coord",
        handoff(lambda: coord.write(resource), rounds, 0, rng))
    row("handoff release -> waiter, Client", "coord",
        handoff(lambda: client.write(resource), rounds, 0, rng))
    polling = []
    if filelock:
        poll = signature(filelock.FileLock.acquire).parameters["poll_interval"].default
        fl = filelock.FileLock(lockfile)
        row("handoff release -> waiter runs", "filelock", handoff(lambda: fl, polled, poll, rng))
        polling.append(f"filelock.FileLock: tries every {poll * 1000:g} ms (acquire(poll_interval="
                       f"{poll:g}), the default), no timeout (timeout=-1)")
    if fasteners:
        cls = fasteners.InterProcessReaderWriterLock
        step, cap = cls.DELAY_INCREMENT, cls.MAX_DELAY
        rw = cls(lockfile)
        row("handoff release -> waiter runs", "fasteners", handoff(rw.write_lock, polled, cap, rng))
        polling.append(f"fasteners.InterProcessReaderWriterLock: sleeps {step * 1000:g} ms, "
                       f"{2 * step * 1000:g} ms, ... (+{step * 1000:g} ms a try) up to "
                       f"{cap * 1000:g} ms between tries (delay={step:g}, max_delay={cap:g}, "
                       f"the defaults)")
    if portalocker:
        poll, limit = pl.check_interval, pl.timeout  # a Lock made with no arguments
        row("handoff release -> waiter runs", "portalocker", handoff(lambda: pl, polled, poll, rng))
        polling.append(f"portalocker.Lock: tries every {poll * 1000:g} ms (check_interval="
                       f"{poll:g}, the default), gives up after {limit:g} s (timeout={limit:g})")
    row("handoff release -> waiter runs", "flock",
        handoff(Flock(lockfile, fcntl.LOCK_EX), rounds, 0, rng))

    # SQLite: what a dashboard pays per query.
    row("sqlite read (1 row by key), no lock", "-", sqlite_reads(database, None, n))
    row("sqlite read under coord.read, cached", "coord",
        sqlite_reads(database, lambda: coord.read(database), n))
    row("sqlite read under coord.read, no cache", "coord",
        sqlite_reads(database, lambda: uncached.read(database), n))
    row("sqlite read under flock(LOCK_SH)", "flock",
        sqlite_reads(database, Flock(lockfile, fcntl.LOCK_SH), n))
    client.close()
    uncached.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(database + suffix):
            os.remove(database + suffix)

    if not JSON:
        print()
    note("Waits: coord and flock wake the waiter (coord: the broker's grant, FIFO);")
    note("the others poll, with their default settings:")
    for line in polling:
        note(f"  {line}")
    note("The holder lets go 2 ms after the waiter started waiting, plus, for a polling")
    note("lock, a random part of its (longest) interval: handoff ~ half an interval.")
    for m in missing:
        note(f"{m}: not importable by {sys.executable}, rows skipped (Debian: python3-{m})")


def main():
    ap = argparse.ArgumentParser(
        description="coord-bench's Python rows: the coord package beside filelock, fasteners, "
                    "portalocker and fcntl.flock; p50/p99/mean in microseconds.")
    ap.add_argument("--dir", help="an instance directory whose broker runs (default: start a "
                                  "private coordd in a temporary directory)")
    ap.add_argument("--broker", help="the coordd to start without --dir (default: $COORD_BROKER, "
                                     "the build tree's, coordd on PATH)")
    ap.add_argument("--iterations", type=int, default=10000,
                    help="uncontended and SQLite iterations per row (default 10000)")
    ap.add_argument("--handoffs", type=int, default=200,
                    help="handoffs per row for coord and flock (default 200)")
    ap.add_argument("--polled-handoffs", type=int, default=50,
                    help="handoffs per row for the polling locks, whose every handoff takes "
                         "up to a poll interval (default 50)")
    ap.add_argument("--json", action="store_true",
                    help="one JSON object per line instead of the table")
    args = ap.parse_args()
    global JSON
    JSON = args.json
    if args.iterations < 1 or args.handoffs < 1 or args.polled_handoffs < 1:
        ap.print_usage(sys.stderr)
        print("coord-bench.py: --iterations, --handoffs and --polled-handoffs must be >= 1",
              file=sys.stderr)
        return 64

    broker = None
    try:
        if args.dir:
            dir = os.path.abspath(args.dir)
        else:
            broker = PrivateBroker(find_broker(args.broker))
            dir = broker.dir
        os.environ["COORD_DIR"] = dir
        os.environ["COORD_NO_AUTOSTART"] = "1"  # never reach another instance
        try:
            import coord  # noqa: F401
        except ImportError as e:
            print(f"coord-bench.py: Python rows skipped: cannot import coord with "
                  f"{sys.executable}: {e}", file=sys.stderr)
            return SKIP
        run(args, dir)
        return 0
    except Exception as e:
        traceback.print_exc()
        print(f"coord-bench.py: failed: {e}", file=sys.stderr)
        return 1
    finally:
        if broker:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
