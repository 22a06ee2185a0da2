"""coord.duckdb: read-only and read-write opens under leases, giving way on
recall, and a writer SIGKILLed mid-transaction, on a real DuckDB file
through the real libduckdb.so (duckdb_ctypes stands in for the Python
module, which cannot be installed here)."""
import threading

import pytest

from dbfixtures import Child, client, coordctl, instance, wait_for  # noqa: F401
import coord
import coord.duckdb
import duckdb_ctypes

WRITER = r"""
import sys, coord.duckdb, duckdb_ctypes
path, rows = sys.argv[1], int(sys.argv[2])
batch = 0
while True:
    with coord.duckdb.connect(path, write=True, connect=duckdb_ctypes.connect,
                              label="duck-writer") as db:
        db.execute("BEGIN TRANSACTION")
        for n in range(rows):
            db.execute(f"INSERT INTO t VALUES ({batch}, {n})")
            if n == rows // 2:
                print("inside", batch, flush=True)
        db.execute("COMMIT")
    print("committed", batch, flush=True)
    batch += 1
"""

HOLDER = r"""
import sys, coord.duckdb, duckdb_ctypes
db = coord.duckdb.connect(sys.argv[1], write=sys.argv[2] == "write",
                          connect=duckdb_ctypes.connect, yield_on_recall=False)
print("holding", db.execute("SELECT count(*) FROM t").fetchone()[0], flush=True)
sys.stdin.read()
db.close()
"""


@pytest.fixture
def path(tmp_path, client):
    p = str(tmp_path / "stats.duckdb")
    with coord.duckdb.connect(p, write=True, connect=duckdb_ctypes.connect, client=client) as db:
        db.execute("CREATE TABLE t (batch BIGINT, n BIGINT)")
    return p


def duck(path, client, write=False, **kw):
    return coord.duckdb.connect(path, write=write, connect=duckdb_ctypes.connect, client=client,
                                **kw)


def test_read_write_under_the_write_lease_keeps_everyone_out(path, client):
    with duck(path, client, write=True) as db:
        assert db.lease.mode == "write", "a read-write open must hold the write lease"
        db.execute("INSERT INTO t VALUES (1, 1)")
        other = Child(HOLDER, path, "read")
        # A recall means the reader queued behind us instead of opening.
        wait_for(lambda: db.lease.recalled, "the waiting reader to recall the writer")
    assert other.expect("holding").split()[1] == "1", "the reader must see the committed row"
    other.finish()
    assert db.closed and db.lease is None, "close() must close the file and release the lease"


def test_read_only_opens_share_the_file(path, client):
    other = Child(HOLDER, path, "read")
    other.expect("holding")
    with duck(path, client, timeout=0) as db:   # granted at once beside the other reader
        assert db.lease.mode == "read"
        assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
        with pytest.raises(duckdb_ctypes.Error, match="read-only"):
            db.execute("INSERT INTO t VALUES (1, 1)")
    with pytest.raises(coord.Busy):
        duck(path, client, write=True, timeout=0)
    other.finish()


def test_a_kept_reader_gives_way_to_a_writer_at_its_next_execute(path, client):
    db = duck(path, client)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    writer = Child(HOLDER, path, "write")          # waits behind our read lease
    wait_for(lambda: db.lease.recalled, "the writer's request to recall the reader")
    threading.Timer(0.3, writer.close_stdin).start()
    # execute() closes, releases, waits behind the writer, reopens, reads.
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert db.reopens == 1, "the reader must have given way exactly once"
    assert writer.finish()[0] == "holding 0", "the writer must have opened read-write meanwhile"
    db.close()


def test_yield_if_recalled_lets_the_writer_in_without_an_execute(path, client):
    db = duck(path, client)
    writer = Child(HOLDER, path, "write")
    wait_for(db.yield_if_recalled, "yield_if_recalled() to give way to the waiting writer")
    assert db.closed, "after giving way the file must be closed"
    writer.expect("holding")
    writer.finish()
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,), "execute() must reopen"
    db.close()


def test_a_failed_open_releases_the_lease(tmp_path, client, instance):
    def refuse(path, read_only):
        raise OSError("no")
    with pytest.raises(OSError):
        coord.duckdb.connect(str(tmp_path / "x.duckdb"), write=True, connect=refuse,
                             client=client)
    assert "no leases held or waited for" in coordctl(instance, "list"), "the lease must be released"


def test_writer_killed_mid_transaction_loses_nothing_committed(path, client, instance):
    rows = 300
    writer = Child(WRITER, path, rows)
    last = int(writer.expect("committed 2").split()[1])
    inside = int(writer.expect("inside").split()[1])
    writer.kill()
    committed = {int(l.split()[1]) for l in writer.lines if l.startswith("committed")}
    committed |= set(range(last + 1))
    # The broker replays and checkpoints what the killed writer left when
    # it reclaims the lease; the read lease waits for that.
    with duck(path, client, timeout=20) as db:
        counts = dict(db.execute("SELECT batch, count(*) FROM t GROUP BY batch").fetchall())
    for b in committed:
        assert counts.get(b) == rows, f"committed batch {b} has {counts.get(b)} of {rows} rows"
    assert counts.get(inside, rows) == rows, \
        f"batch {inside} was killed mid-transaction and must be all or nothing: {counts[inside]}"
    assert sorted(counts) == list(range(len(counts))), f"batches missing: {sorted(counts)}"
    show = coordctl(instance, "show", path)
    assert "kind:       duckdb" in show, show


# A writer that takes the write lease, appends one row and leaves.
ONE_WRITE = r"""
import sys, coord.duckdb, duckdb_ctypes
with coord.duckdb.connect(sys.argv[1], write=True, connect=duckdb_ctypes.connect) as db:
    db.execute(f"INSERT INTO t VALUES ({sys.argv[2]}, 0)")
print("wrote", flush=True)
"""


def test_a_writer_keeps_its_lease_for_the_whole_block_when_another_writer_queues(path, client):
    """A1: the block is one critical section; a queued writer gets in after it."""
    with duck(path, client, write=True) as db:
        lease = db.lease
        db.execute("INSERT INTO t VALUES (1, 1)")
        db.execute("DELETE FROM t")
        other = Child(ONE_WRITE, path, 2)
        wait_for(lambda: lease.recalled, "the other writer to queue (and recall our lease)")
        db.execute("INSERT INTO t VALUES (1, 2)")
        assert db.lease is lease and lease.valid and db.reopens == 0, \
            "a writer must not give its lease away inside its block"
        assert not db.yield_if_recalled(), "yield_if_recalled() must not yield a writer"
        assert db.execute("SELECT batch, n FROM t ORDER BY batch").fetchall() == [(1, 2)], \
            "another writer's row landed inside our block"
    other.expect("wrote")
    other.finish()
    with duck(path, client) as db:
        assert db.execute("SELECT batch, n FROM t ORDER BY batch").fetchall() == [(1, 2), (2, 0)]


def test_a_writer_cannot_be_asked_to_yield(path, client):
    with pytest.raises(ValueError, match="readers"):
        duck(path, client, write=True, yield_on_recall=True)
    with pytest.raises(ValueError, match="readers"):
        duck(path, client, write=True, max_age=1.0)
    with duck(path, client, write=True, yield_on_recall=False) as db:   # what it does anyway
        assert db.lease.mode == "write"


class Slow:
    """A duckdb_ctypes connection whose execute() of a statement containing
    'slow' first waits for `go` (a long query), and which notes a close()
    that happens while a statement runs."""

    def __init__(self, database, read_only, go, log):
        self.raw = duckdb_ctypes.connect(database, read_only=read_only)
        self.go, self.log, self.running = go, log, 0

    def execute(self, sql, parameters=None):
        self.running += 1
        try:
            if "slow" in sql:
                self.log.append("slow query started")
                self.go.wait(20)
            return self.raw.execute(sql) and self
        finally:
            self.running -= 1

    def fetchone(self):
        return self.raw.fetchone()

    def fetchall(self):
        return self.raw.fetchall()

    def close(self):
        if self.running:
            self.log.append("closed while a query ran")
        self.raw.close()


def test_a_reader_shared_by_threads_reopens_only_between_queries(path, client):
    """A2: a recall seen by one thread waits for the query another thread runs."""
    go, log, results = threading.Event(), [], {}
    db = coord.duckdb.connect(path, client=client,
                              connect=lambda p, read_only: Slow(p, read_only, go, log))

    def run(name, sql):
        try:
            results[name] = db.fetchall(sql)
        except Exception as e:  # noqa: BLE001 (reported below)
            results[name] = e
    first = threading.Thread(target=run, args=("slow", "SELECT count(*) FROM t -- slow"))
    first.start()
    wait_for(lambda: log, "the slow query to start")
    writer = Child(HOLDER, path, "write")
    wait_for(lambda: db.lease is not None and db.lease.recalled, "the writer to queue")
    second = threading.Thread(target=run, args=("quick", "SELECT 42"))
    second.start()
    second.join(0.5)          # it must wait for the slow query, not close under it
    go.set()
    first.join(20)
    writer.expect("holding")
    writer.close_stdin()
    second.join(20)
    writer.finish()
    db.close()
    assert "closed while a query ran" not in log, log
    assert results == {"slow": [(0,)], "quick": [(42,)]}, results
    assert db.reopens == 1, "the reader must give way once, between the two queries"


def test_without_the_duckdb_module_connect_says_to_pass_connect(path, client, monkeypatch,
                                                                 instance):
    monkeypatch.setitem(__import__("sys").modules, "duckdb", None)   # "not installed"
    with pytest.raises(ImportError, match=r"pass connect= \(a function like duckdb.connect"):
        coord.duckdb.connect(path, client=client)
    assert "no leases held or waited for" in coordctl(instance, "list"), "no lease may be left behind"
