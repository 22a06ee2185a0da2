"""DuckDB connections opened under coord leases.

    import coord.duckdb

    with coord.duckdb.connect("/srv/stats.duckdb", write=True) as db:
        db.execute("INSERT INTO visits VALUES (42)")    # one writer at a time

    dash = coord.duckdb.connect("/srv/stats.duckdb")      # read-only, shared
    dash.execute("SELECT count(*) FROM visits").fetchone()

DuckDB lets one process open a file read-write, or many open it
read-only, and says "Could not set lock on file" otherwise.  connect()
takes the lease first and opens the file to match: read_only=True under a
read lease, read-write under the write lease.  It always closes the file
before it releases the lease, so the next holder (and the broker's
checkpoint, which replays a WAL a killed writer left) finds it closed.

Recall (readers only).  A reader kept open between uses (a dashboard
between page views) holds its read lease all that time, so a writer
would wait for it.  When someone conflicting waits, the broker recalls
the lease, and a reader gives way at its safe points: at every execute()
outside an explicit transaction (BEGIN ... COMMIT through execute()) it
checks lease.recalled (a memory load), and if set it closes the file,
releases the lease, takes it again in its FIFO turn (behind the writer)
and reopens, then runs the statement.  yield_if_recalled() does the first
half from elsewhere (a timer, or a thread waiting on
coord.Client.recall_fd()), and the next execute() reopens.  Pass
yield_on_recall=False to keep the read lease whatever happens.

A writer never gives way: a write connection (write=True) is one
critical section from connect() to close() (the end of the `with`
block), so no other writer's statement can land between its statements.
A waiting writer or reader gets the file after close().  Keep write
connections short for that reason.  Asking a writer to yield
(yield_on_recall=True or max_age= with write=True) raises ValueError.

Threads.  A Connection may be shared between threads; its uses are
serialised by its lock (Connection.lock, re-entrant): execute(),
fetchall(), fetchone(), yield_if_recalled() and close() each hold it, so
a reopen (or close) waits for the statement another thread is running.
DuckDB's execute() returns the connection itself, whose result the next
execute() replaces, so on a shared connection run and fetch in one call,
db.fetchall(sql) / db.fetchone(sql), or hold the lock around both:
`with db.lock: rows = db.execute(q).fetchall()`.  Likewise hold
db.lock around an explicit BEGIN ... COMMIT on a shared connection.

Results: execute() returns what the underlying connection's execute
returns (the connection itself, in duckdb), so fetch right away:
db.execute(q).fetchall().  In one thread a yield between execute() and
the fetch cannot happen, since yielding only happens inside execute().

The `duckdb` module is imported only when `connect` is not given; the
helper calls duckdb.connect(database, read_only=...), which every duckdb
release since 0.3 provides (tested against DuckDB 1.5's library).
"""

import re
import threading
import time

import coord
import coord.sqlite

_BEGIN = re.compile(r"\s*(BEGIN|START\s+TRANSACTION)\b", re.I)
_END = re.compile(r"\s*(COMMIT|ROLLBACK|ABORT|END)\b", re.I)


class Connection:
    """A DuckDB connection and the lease it is open under."""

    def __init__(self, path, write, connect, client, timeout, label, yield_on_recall,
                 max_age=None):
        self.path = path
        self.write = write
        self._connect = connect
        self._client = client
        self._timeout = timeout
        self._label = label
        self._yield_on_recall = yield_on_recall
        self._max_age = max_age
        self._opened = 0.0
        self.lease = None          # the lease while open, else None
        self.raw = None            # the duckdb connection while open
        self.reopens = 0           # times it gave way to a recall
        #: Held by every use of the underlying connection (see Threads above).
        self.lock = threading.RLock()
        self._in_transaction = False
        self._open()

    def _open(self):
        self.lease = coord.sqlite.acquire(self._client, self.path, self.write, self._timeout,
                                          self._label)
        try:
            self.raw = self._connect(self.path, read_only=not self.write)
            self._opened = time.monotonic()
        except BaseException:
            self.lease.release()
            self.lease = None
            raise

    def _shut(self):
        raw, lease, self.raw, self.lease = self.raw, self.lease, None, None
        try:
            if raw is not None:
                raw.close()
        finally:
            if lease is not None:
                lease.release()

    @property
    def closed(self):
        """True when the file is not open now (yielded or closed)."""
        return self.raw is None

    def yield_if_recalled(self):
        """Closes the file and releases the lease if the lease is recalled
        (or no longer valid, or the file has been open longer than
        max_age) and no explicit transaction is open; the next
        execute() takes the lease again and reopens.  Returns True if it
        gave way.  Readers only: a writer never gives way (returns False).
        Any thread may call it: it waits for a statement another thread
        is running (it takes self.lock)."""
        with self.lock:
            return self._yield_if_recalled()

    def _yield_if_recalled(self):
        if self.write or self.raw is None or self._in_transaction or not self._yield_on_recall:
            return False
        old = self._max_age is not None and time.monotonic() - self._opened > self._max_age
        if self.lease.valid and not self.lease.recalled and not old:
            return False
        self._shut()
        self.reopens += 1
        return True

    def execute(self, sql, parameters=None):
        """Runs `sql` (a reader's safe point: see the module's notes on
        recall).  Holds self.lock while it runs."""
        with self.lock:
            self._yield_if_recalled()
            if self.raw is None:
                self._open()
            if parameters is None:
                result = self.raw.execute(sql)
            else:
                result = self.raw.execute(sql, parameters)
            if _BEGIN.match(sql):
                self._in_transaction = True
            elif _END.match(sql):
                self._in_transaction = False
            return result

    def fetchall(self, sql, parameters=None):
        """execute(sql, parameters).fetchall() under one hold of the lock:
        what threads sharing the connection should use."""
        with self.lock:
            return self.execute(sql, parameters).fetchall()

    def fetchone(self, sql, parameters=None):
        """execute(sql, parameters).fetchone() under one hold of the lock."""
        with self.lock:
            return self.execute(sql, parameters).fetchone()

    def close(self):
        """Closes the file, then releases the lease.  Idempotent.  Waits for
        a statement another thread is running."""
        with self.lock:
            self._in_transaction = False
            self._shut()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(path, write=False, connect=None, *, client=None,
            timeout=coord.sqlite.LEASE_TIMEOUT, label=None, yield_on_recall=None,
            max_age=None):
    """Takes a lease on `path` and opens it with DuckDB to match.

      path             the database file.
      write            False: read lease and read_only=True; True: the write
                       lease and a read-write open.
      connect          the function that opens it, called as
                       connect(path, read_only=...); default duckdb.connect.
      client           a coord.Client; None: coord's default client.
      timeout          seconds to wait for the lease (0 tries once).
      label            shown by `coordctl list`.
      yield_on_recall  readers: give way to a recall at safe points (above);
                       None (the default) is True for a reader.  A writer
                       never gives way: None or False; True raises
                       ValueError.
      max_age          readers: also give way at a safe point once the file
                       has been open this many seconds (None: never).  A
                       read-only DuckDB does not see what writers committed
                       after it opened, so this bounds how stale a kept
                       reader is.  Not for writers (ValueError).

    Returns a Connection (a context manager that closes it).  Raises
    coord.Timeout / coord.Busy when the lease is not granted, and what
    `connect` raises (the lease is released first), ImportError (before
    any lease is taken) when `connect` is None and there is no duckdb
    module."""
    if write and (yield_on_recall or max_age is not None):
        raise ValueError("coord.duckdb.connect: only readers yield on recall or reopen after "
                         "max_age; a writer holds its lease until close() (drop yield_on_recall= "
                         "and max_age=, or open a reader)")
    if yield_on_recall is None:
        yield_on_recall = not write
    if connect is None:
        try:
            import duckdb
        except ImportError as e:
            raise ModuleNotFoundError(
                "coord.duckdb.connect: the duckdb module is not installed; install it, or pass "
                "connect= (a function like duckdb.connect, called as connect(path, read_only=...))",
                name="duckdb") from e
        connect = duckdb.connect
    return Connection(path, write, connect, client, timeout, label, yield_on_recall, max_age)
