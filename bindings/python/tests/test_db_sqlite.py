"""coord.sqlite: write() and read() blocks under leases on a real SQLite
file and a real broker, and a writer SIGKILLed in the middle of a
transaction."""
import json
import re
import sqlite3

import pytest

from dbfixtures import Child, client, coordctl, instance, wait_for  # noqa: F401
import coord
import coord.sqlite

# A writer that commits batches of ROWS rows, one row at a time so that it
# spends its life inside transactions, and says where it is.
WRITER = r"""
import sys, time, coord.sqlite
path, rows = sys.argv[1], int(sys.argv[2])
db = coord.sqlite.connect(path, label="batch-writer")
db.execute("CREATE TABLE IF NOT EXISTS t (batch INTEGER, n INTEGER, token INTEGER)")
batch = 0
while True:
    with db.write() as lease:
        for n in range(rows):
            db.execute("INSERT INTO t VALUES (?, ?, ?)", (batch, n, lease.token))
            if n == rows // 2:
                print("inside", batch, flush=True)
            time.sleep(0.001)
    print("committed", batch, flush=True)
    batch += 1
"""

# Holds a lease in a block until its stdin closes.
HOLDER = r"""
import sys, coord.sqlite
db = coord.sqlite.connect(sys.argv[1])
with getattr(db, sys.argv[2])():
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    print("holding", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def db(tmp_path, client):
    d = coord.sqlite.connect(tmp_path / "shop.db", client=client, lease_timeout=10)
    d.execute("CREATE TABLE t (batch INTEGER, n INTEGER, token INTEGER)")
    yield d
    d.close()


def held(instance):
    """(mode, command label) of every lease the broker holds."""
    leases = json.loads(coordctl(instance, "list", "--json"))["leases"]
    return sorted((l["mode"], l["label"]) for l in leases)


def test_connect_sets_up_wal_and_a_busy_timeout(db):
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal", \
        "connect() must switch the file to WAL mode so readers never block the writer"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 10000, \
        "connect() must give SQLite a busy timeout for programs outside coord"
    assert db.isolation_level is None, "Python's implicit BEGINs must be off"


def test_write_commits_under_the_write_lease_and_releases_it(db, instance):
    with db.write(label="w") as lease:
        db.execute("INSERT INTO t VALUES (1, 1, ?)", (lease.token,))
        assert held(instance) == [("write", "w")], "the write lease must be held in the block"
        assert db.in_transaction, "write() must run inside BEGIN IMMEDIATE"
    assert held(instance) == [], "the lease must be released after the block"
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1, "the block must commit"
    assert lease.token > 0, "a write lease carries a fencing token"


def test_write_rolls_back_when_the_block_raises(db, instance):
    with pytest.raises(RuntimeError, match="boom"):
        with db.write():
            db.execute("INSERT INTO t VALUES (1, 1, 0)")
            raise RuntimeError("boom")
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0, \
        "the insert of a block that raised must be rolled back"
    assert held(instance) == [], "the lease must be released after a rollback too"
    assert not db.in_transaction, "no transaction may stay open after the block"


def test_read_blocks_share_the_file_and_keep_writers_out(db, tmp_path, instance):
    reader = Child(HOLDER, tmp_path / "shop.db", "read")
    reader.expect("holding")
    with db.read(timeout=0):    # granted at once beside the other reader
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
        assert [m for m, _ in held(instance)] == ["read", "read"], \
            "two readers must hold read leases at the same time"
    with pytest.raises(coord.Busy):
        with db.write(timeout=0):
            pytest.fail("a write block must not start while a reader holds the file")
    reader.close_stdin()
    reader.finish()
    with db.write(timeout=5):
        db.execute("INSERT INTO t VALUES (2, 2, 0)")


def test_read_block_is_query_only(db):
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        with db.read():
            db.execute("INSERT INTO t VALUES (1, 1, 0)")
    with db.write():
        db.execute("INSERT INTO t VALUES (1, 1, 0)")   # writable again after it


def test_a_writer_in_another_process_waits_its_turn(db, tmp_path):
    holder = Child(HOLDER, tmp_path / "shop.db", "write")
    holder.expect("holding")
    with pytest.raises(coord.Busy):
        with db.write(timeout=0):
            pass
    with pytest.raises(coord.Busy):
        with db.read(timeout=0):
            pass
    holder.kill()
    with db.write(timeout=5):   # the killed holder's lease is reclaimed
        db.execute("INSERT INTO t VALUES (3, 3, 0)")


def test_blocks_do_not_nest(db):
    with db.write():
        with pytest.raises(sqlite3.ProgrammingError, match="inside a transaction"):
            with db.read():
                pass


def test_writer_killed_mid_transaction_loses_nothing_committed(db, tmp_path, instance):
    rows = 200
    path = tmp_path / "shop.db"
    writer = Child(WRITER, path, rows)
    last = int(writer.expect("committed 2").split()[1])
    inside = int(writer.expect("inside").split()[1])
    writer.kill()
    committed = [int(l.split()[1]) for l in writer.lines if l.startswith("committed")]
    committed = sorted(set(range(last + 1)) | set(committed))
    with db.write(timeout=10):   # granted: the broker reclaimed the lease
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", \
            "the database must be intact after a writer was killed mid-transaction"
        counts = dict(db.execute("SELECT batch, count(*) FROM t GROUP BY batch"))
    for b in committed:
        assert counts.get(b) == rows, f"committed batch {b} has {counts.get(b)} of {rows} rows"
    assert inside not in counts or counts[inside] == rows, \
        f"batch {inside} was killed mid-transaction and must be all or nothing, has {counts[inside]}"
    wait_for(lambda: re.search(r"^last checkpoint: .*, ok,", coordctl(instance, "show", str(path)),
                               re.M), f"the broker to checkpoint {path} after the reclaim")


# A thread's broker connection closes when the thread ends; libcoord keeps
# the connection's descriptor of the file (closing it would drop every
# POSIX lock SQLite holds on the file in this process).
def test_a_thread_that_ends_leaves_sqlite_locks_alone(db, tmp_path, client):
    import os
    import threading
    path = str(tmp_path / "shop.db")

    def posix_locks():
        ino = f":{os.stat(path).st_ino}"
        # Without the line's ordinal, which moves as other locks come and go.
        return [l.split(None, 1)[1] for l in open("/proc/locks")
                if " POSIX " in l and l.split()[4] == str(os.getpid()) and l.split()[5].endswith(ino)]

    reader = coord.sqlite.connect(path, client=client)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()    # SQLite locks the file now
    before = posix_locks()
    assert before, "SQLite should hold a POSIX lock on the file inside a read transaction"

    def one_request():
        with client.read(path):
            pass
    t = threading.Thread(target=one_request)
    t.start()
    t.join()
    import gc
    gc.collect()
    assert posix_locks() == before, "a thread's lease and exit dropped SQLite's POSIX locks"
    reader.rollback()
    reader.close()



# Holds the file's write lease (coord's core API, the file untouched) until
# its stdin closes.
LEASE_HOLDER = r"""
import sys, coord
with coord.write(sys.argv[1]):
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_a_check_with_lease_timeout_0_never_waits_even_in_connect(tmp_path, client):
    """What the README's check script relies on: connect() may need the write
    lease (to switch a new file to WAL), and raises coord.Busy at 0 too."""
    path = tmp_path / "new.db"
    plain = sqlite3.connect(path)
    plain.execute("CREATE TABLE t (x)")                       # not in WAL mode yet
    plain.close()
    holder = Child(LEASE_HOLDER, path)
    holder.expect("holding")
    with pytest.raises(coord.Busy):
        coord.sqlite.connect(path, client=client, lease_timeout=0)
    holder.finish()
    db = coord.sqlite.connect(path, client=client, lease_timeout=0)   # now WAL
    holder = Child(LEASE_HOLDER, path)
    holder.expect("holding")
    try:
        assert coord.sqlite.connect(path, client=client, lease_timeout=0).close() is None, \
            "a file in WAL mode needs no lease to connect"
        with pytest.raises(coord.Busy):
            with db.read():                 # the connection's lease_timeout=0
                pass
        db.coord_lease_timeout = 30
        with pytest.raises(coord.Busy):
            with db.read(timeout=0):        # per block
                pass
    finally:
        holder.finish()
    db.close()
