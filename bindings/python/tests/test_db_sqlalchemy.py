"""coord.sqlalchemy: a pooled engine whose transactions take leases, under
writer threads and writer processes at once: never "database is locked",
nothing lost."""
import json
import threading

import pytest
import sqlalchemy
from sqlalchemy import text

from dbfixtures import Child, client, coordctl, instance  # noqa: F401
import coord
import coord.sqlalchemy

THREADS, PROCESSES, TRANSACTIONS = 8, 2, 40

# A process writing the same table through its own engine.
PROCESS_WRITER = r"""
import sys, sqlalchemy, coord.sqlalchemy
from sqlalchemy import text
engine = coord.sqlalchemy.install(sqlalchemy.create_engine(f"sqlite:///{sys.argv[1]}",
                                                           future=True), busy_timeout=0.01)
errors = 0
for i in range(int(sys.argv[3])):
    try:
        with engine.begin() as conn:
            n = conn.execute(text("SELECT count(*) FROM t")).scalar()
            conn.execute(text("INSERT INTO t (who, seen) VALUES (:w, :n)"),
                         {"w": sys.argv[2], "n": n})
    except sqlalchemy.exc.OperationalError as e:
        errors += 1
        print("error", e, flush=True)
print("done", errors, flush=True)
"""


@pytest.fixture
def engine(tmp_path, client):
    e = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'app.db'}", future=True,
                                 poolclass=sqlalchemy.pool.QueuePool, pool_size=20,
                                 max_overflow=0)
    # SQLite's own busy timeout is 10 ms, so that any collision the leases
    # did not prevent shows up as "database is locked".
    coord.sqlalchemy.install(e, client=client, lease_timeout=30, busy_timeout=0.01)
    with e.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT, seen INTEGER)"))
    yield e
    e.dispose()


def leases(instance):
    """The leases held by the program: not the read grants its library keeps
    cached after a release (those a writer takes back at once)."""
    return [l["mode"] for l in json.loads(coordctl(instance, "list", "--json"))["leases"]
            if l.get("cached") != "idle"]


def test_a_pool_of_20_never_says_database_is_locked(engine, tmp_path):
    errors, done = [], []
    path = tmp_path / "app.db"
    procs = [Child(PROCESS_WRITER, path, f"p{i}", TRANSACTIONS) for i in range(PROCESSES)]

    def writer(who):
        for _ in range(TRANSACTIONS):
            try:
                with engine.begin() as conn:       # read first, then write: the upgrade
                    n = conn.execute(text("SELECT count(*) FROM t")).scalar()
                    conn.execute(text("INSERT INTO t (who, seen) VALUES (:w, :n)"),
                                 {"w": who, "n": n})
                with engine.connect() as conn:     # a reader
                    conn.execute(text("SELECT max(id) FROM t")).scalar()
            except Exception as e:  # noqa: BLE001 (every error is a failure here)
                errors.append(f"{who}: {e!r}")
        done.append(who)

    threads = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    outs = [p.finish(120) for p in procs]
    assert not errors, f"{len(errors)} errors in the pool's threads, e.g. {errors[:3]}"
    for out in outs:
        assert out[-1] == "done 0", f"a writer process saw errors: {out[-5:]}"
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM t")).scalar()
        per = dict(conn.execute(text("SELECT who, count(*) FROM t GROUP BY who")).all())
    assert count == (THREADS + PROCESSES) * TRANSACTIONS, f"rows lost: {per}"
    assert engine.pool.size() == 20


def test_without_coord_the_same_load_does_say_database_is_locked(tmp_path):
    """The control: what the test above guards against does happen here
    (SQLite with a 10 ms busy timeout and no leases)."""
    e = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'plain.db'}", future=True,
                                 poolclass=sqlalchemy.pool.QueuePool, pool_size=20,
                                 max_overflow=0,
                                 connect_args={"timeout": 0.01, "check_same_thread": False})
    with e.begin() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, seen INTEGER)"))
    locked = []

    def writer():
        for _ in range(TRANSACTIONS):
            try:
                with e.begin() as conn:
                    conn.execute(text("SELECT count(*) FROM t")).scalar()
                    conn.execute(text("INSERT INTO t (seen) VALUES (randomblob(2000))"))
            except sqlalchemy.exc.OperationalError as err:
                locked.append(str(err))

    threads = [threading.Thread(target=writer) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    e.dispose()
    assert any("database is locked" in m for m in locked), \
        "the control load should collide without coord; the pool test proves nothing otherwise"


def test_transactions_hold_the_lease_they_need_and_release_it(engine, instance):
    with engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM t")).scalar()
        assert leases(instance) == ["read"], "a transaction that reads takes a read lease"
        conn.execute(text("INSERT INTO t (who) VALUES ('x')"))
        assert leases(instance) == ["write"], "its first write trades it for the write lease"
        conn.rollback()
        assert leases(instance) == [], "rollback releases the lease"
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0, "and rolls back"
    assert leases(instance) == [], "returning the connection to the pool releases the lease"


def test_a_declared_writer_holds_the_write_lease_from_its_first_read(engine, instance):
    with engine.connect().execution_options(coord="write") as conn:
        conn.execute(text("SELECT count(*) FROM t")).scalar()
        assert leases(instance) == ["write"], "coord='write' takes the write lease at once"
        conn.execute(text("INSERT INTO t (who) VALUES ('y')"))
        conn.commit()
    assert leases(instance) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT who FROM t")).scalar() == "y", "the commit must stick"


def test_the_orm_session_commits_under_the_write_lease(engine, instance):
    from sqlalchemy.orm import Session
    with Session(engine) as s:
        s.execute(text("INSERT INTO t (who) VALUES ('orm')"))
        assert leases(instance) == ["write"]
        s.commit()
        assert leases(instance) == [], "Session.commit() releases the lease"
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_install_refuses_what_it_cannot_coordinate():
    with pytest.raises(ValueError, match="file"):
        coord.sqlalchemy.install(sqlalchemy.create_engine("sqlite://"))


def test_a_declared_reader_cannot_write_and_leaves_the_connection_writable(tmp_path, client,
                                                                           instance):
    """A3: coord="read" holds a read lease, so the transaction must not write."""
    path = tmp_path / "one.db"
    # One pooled connection, so that the later checkouts get the same one.
    e = sqlalchemy.create_engine(f"sqlite:///{path}", future=True,
                                 poolclass=sqlalchemy.pool.QueuePool, pool_size=1, max_overflow=0)
    coord.sqlalchemy.install(e, client=client, lease_timeout=30, busy_timeout=0.01)
    with e.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT, seen INTEGER)"))
    for first_reads in (True, False):
        with e.connect().execution_options(coord="read") as conn:
            dbapi = coord.sqlalchemy._dbapi(conn)
            if first_reads:
                assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
                assert leases(instance) == ["read"], "coord='read' takes a read lease"
            with pytest.raises(sqlalchemy.exc.OperationalError, match="readonly"):
                conn.execute(text("INSERT INTO t (who) VALUES ('sneaky')"))
            assert leases(instance) == ["read"], "the write must not have traded the lease"
            conn.rollback()
            assert leases(instance) == [], "rollback releases the read lease"
    child = Child(PROCESS_WRITER, path, "p", 1)
    assert child.finish()[-1] == "done 0", "another process must be able to write afterwards"
    with e.connect() as conn:
        assert coord.sqlalchemy._dbapi(conn) is dbapi, "the test needs the same DBAPI connection"
        conn.execute(text("INSERT INTO t (who) VALUES ('later')"))
        conn.commit()
        assert conn.execute(text("SELECT who FROM t ORDER BY id")).scalars().all() == \
            ["p", "later"], "only the writes outside the declared readers may stick"
    assert dbapi.execute("PRAGMA query_only").fetchone()[0] == 0
    e.dispose()
