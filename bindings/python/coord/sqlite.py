"""SQLite connections that share their file through coord leases.

    import coord.sqlite

    db = coord.sqlite.connect("/srv/shop.db")
    with db.write(label="import") as lease:   # write lease, BEGIN IMMEDIATE
        db.execute("INSERT INTO orders VALUES (?, ?)", (1, lease.token))
    # COMMIT, then the lease is released (ROLLBACK if the block raised)

    with db.read():                           # read lease, a read transaction
        n = db.execute("SELECT count(*) FROM orders").fetchone()[0]

connect() returns a sqlite3.Connection (the subclass Connection below)
in WAL mode, with a busy timeout, and with Python's implicit transactions
off (isolation_level=None): transactions are the write() and read()
blocks, and statements outside them run in autocommit mode without a
lease (a write there is not exclusive: put every write in a write()
block).  Writers then take turns in the broker's FIFO order instead of
colliding, so coord users never see "database is locked".

Two timeouts: connect(lease_timeout=) is how long write() and read()
wait for a lease (their timeout= overrides it per block; 0 tries once
and raises coord.Busy); connect(timeout=) is SQLite's busy timeout,
which only programs outside coord make it wait for.  connect() itself
takes the write lease once to switch a file to WAL mode if it is not
yet, so it too can wait up to lease_timeout, or raise coord.Busy at 0.

Threads: use one connection per thread.  sqlite3 refuses another thread
by default (check_same_thread); a block's transaction and lease belong
to the connection, so a connection shared with check_same_thread=False
would run other threads' statements inside a block.  (SQLAlchemy's pool
hands a connection to one thread at a time, which is fine.)

What must not happen, and does not: closing a descriptor of the database
file drops every POSIX lock the process holds on it, SQLite's included.
libcoord keeps one descriptor per file open for the life of its broker
connection, and nothing here opens or closes the file besides SQLite
itself.  Close SQLite connections before you close the coord.Client they
use.

The "auto" leases (Connection.coord_statement(), .commit(), .rollback())
are what coord.sqlalchemy builds on; see there for the rule.
"""

import contextlib
import os
import re
import sqlite3

import coord

#: Seconds to wait for a lease by default (None waits forever, 0 tries once).
LEASE_TIMEOUT = 30.0
#: SQLite's own busy timeout, in seconds (sqlite3.connect's `timeout`).  With
#: every writer under coord it is only reached by programs outside coord.
BUSY_TIMEOUT = 10.0


def acquire(client, path, write, timeout, label):
    """Takes a read or write lease on `path`; the one place this module
    meets the core API.  `client` None is the process's default client."""
    target = client if client is not None else coord
    take = target.write if write else target.read
    return take(path, timeout=timeout, label=label)


_COMMENT = re.compile(r"\s*(--[^\n]*\n|/\*.*?\*/)*\s*", re.S)
_WRITE_WORDS = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE|UPSERT)\b", re.I)
_WRITING_PRAGMAS = {"wal_checkpoint", "optimize", "incremental_vacuum", "shrink_memory"}


def statement_writes(sql):
    """True unless `sql` surely only reads: SELECT, VALUES, EXPLAIN, a WITH
    whose body has no INSERT/UPDATE/DELETE/REPLACE, a PRAGMA that reads.
    Anything else (DML, DDL, SAVEPOINT, VACUUM, ...) counts as a write, so
    a mistake costs only concurrency, never a "database is locked"."""
    head = sql[_COMMENT.match(sql).end():].lstrip("( \t\r\n")
    word = re.match(r"[A-Za-z_]*", head).group(0).upper()
    if word in ("SELECT", "VALUES", "EXPLAIN"):
        return False
    if word == "WITH":
        return bool(_WRITE_WORDS.search(head))
    if word == "PRAGMA":
        name = re.match(r"PRAGMA\s+(?:\w+\.)?(\w+)", head, re.I)
        return "=" in head or (name is not None and name.group(1).lower() in _WRITING_PRAGMAS)
    return True


class Connection(sqlite3.Connection):
    """A sqlite3.Connection with write() and read() blocks under leases.

    Made by connect(); sqlite3.connect(factory=Connection) works too (then
    set .coord_path and the rest by hand, as connect() does)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.coord_path = None            # the file the leases are on
        self.coord_client = None          # None: coord's default client
        self.coord_lease_timeout = LEASE_TIMEOUT
        self.coord_label = None
        self._coord_block = None          # "read"/"write" inside a block
        self._coord_auto = None           # (mode, lease) of an auto lease
        self._coord_query_only = False    # PRAGMA query_only set for a declared reader

    # ---- blocks ----

    def _begin_block(self, mode):
        if self._coord_block or self._coord_auto or self.in_transaction:
            raise sqlite3.ProgrammingError(
                f"coord.sqlite: {mode}() inside a transaction of this connection "
                "(blocks do not nest; one connection per thread)")
        self._coord_block = mode

    @contextlib.contextmanager
    def write(self, timeout=None, label=None):
        """A write transaction under a write lease.

        Waits up to `timeout` seconds (default: connect()'s lease_timeout;
        0 tries once) for the lease, then runs BEGIN IMMEDIATE.  The block
        gets the lease (its .token is the fencing token).  On leaving it
        COMMITs, or ROLLs BACK if the block raised, and only then releases
        the lease.  Raises coord.Timeout / coord.Busy when not granted."""
        self._begin_block("write")
        try:
            lease = self._coord_acquire(True, timeout, label)
            try:
                self.execute("BEGIN IMMEDIATE")
                try:
                    yield lease
                except BaseException:
                    self._end_transaction("ROLLBACK")
                    raise
                self._commit_or_rollback()
            finally:
                lease.release()
        finally:
            self._coord_block = None

    @contextlib.contextmanager
    def read(self, timeout=None, label=None):
        """A read transaction under a read lease: one snapshot, shared with
        other readers, never beside a writer.  The connection is query-only
        inside (a write raises sqlite3.OperationalError).  Yields the lease."""
        self._begin_block("read")
        try:
            lease = self._coord_acquire(False, timeout, label)
            try:
                self.execute("PRAGMA query_only = 1")
                try:
                    self.execute("BEGIN")
                    try:
                        yield lease
                    finally:
                        self._end_transaction("COMMIT")
                finally:
                    self.execute("PRAGMA query_only = 0")
            finally:
                lease.release()
        finally:
            self._coord_block = None

    def _coord_acquire(self, write, timeout, label):
        if timeout is None:
            timeout = self.coord_lease_timeout
        return acquire(self.coord_client, self.coord_path, write, timeout,
                       label if label is not None else self.coord_label)

    def _end_transaction(self, verb):
        if self.in_transaction:
            self.execute(verb)

    def _commit_or_rollback(self):
        try:
            self._end_transaction("COMMIT")
        except BaseException:
            self._end_transaction("ROLLBACK")
            raise

    # ---- auto leases (coord.sqlalchemy) ----

    def coord_statement(self, sql, declared=None):
        """Takes the lease `sql` needs before it runs, outside blocks.

        `declared` "write" or "read" overrides the guess (statement_writes()).
        A read takes a read lease and runs in autocommit mode: the lease
        keeps coord writers out, so consecutive reads see one state.  The
        first write takes the write lease (giving up the read lease first,
        since one connection cannot hold both) and runs BEGIN IMMEDIATE.
        A statement declared "read" makes the connection query-only (PRAGMA
        query_only) until the transaction ends: a write in it raises
        sqlite3.OperationalError ("attempt to write a readonly database")
        instead of running under the read lease, whatever it declares.
        commit() or rollback() ends the transaction (and query-only), then
        releases."""
        if self._coord_block:
            return
        mode = declared or ("write" if statement_writes(sql) else "read")
        held = self._coord_auto[0] if self._coord_auto else None
        if held == "write" or self._coord_query_only:
            return
        if held == mode:
            if declared == "read":
                self._coord_set_query_only()
            return
        if self.in_transaction:
            raise sqlite3.ProgrammingError(
                "coord.sqlite: a transaction was begun outside coord (an explicit "
                "BEGIN?); declare it instead (execution option coord='write')")
        if held == "read":
            self._coord_release_auto()
        lease = self._coord_acquire(mode == "write", None, None)
        self._coord_auto = (mode, lease)
        try:
            if mode == "write":
                self.execute("BEGIN IMMEDIATE")
            elif declared == "read":
                self._coord_set_query_only()
        except BaseException:
            self._coord_release_auto()
            raise

    def _coord_set_query_only(self):
        self.execute("PRAGMA query_only = 1")
        self._coord_query_only = True

    def _coord_release_auto(self):
        auto, self._coord_auto = self._coord_auto, None
        try:
            if self._coord_query_only:
                self._coord_query_only = False
                self.execute("PRAGMA query_only = 0")
        finally:
            if auto:
                auto[1].release()

    @property
    def coord_lease(self):
        """The auto lease held now, or None."""
        return self._coord_auto[1] if self._coord_auto else None

    def commit(self):
        """COMMIT, then release the auto lease (if any)."""
        try:
            super().commit()
        finally:
            if not self.in_transaction:
                self._coord_release_auto()

    def rollback(self):
        """ROLLBACK, then release the auto lease (if any)."""
        try:
            super().rollback()
        finally:
            self._coord_release_auto()

    def close(self):
        """Rolls back what is open, releases the auto lease, closes."""
        try:
            if self.in_transaction and not self._coord_block:
                super().rollback()
        finally:
            self._coord_release_auto()
            super().close()


def connect(path, *, client=None, lease_timeout=LEASE_TIMEOUT, label=None,
            timeout=BUSY_TIMEOUT, **kwargs):
    """Opens `path` with SQLite, ready for sharing; returns a Connection.

      path           the database file (not ":memory:" or a URI: the leases
                     are taken on this path).
      client         a coord.Client; None uses coord's default client.
      lease_timeout  seconds write()/read() wait for a lease by default.
      label          shown by `coordctl list` for this connection's leases.
      timeout        SQLite's busy timeout in seconds (default 10).
      kwargs         passed to sqlite3.connect (check_same_thread, ...).

    It turns on WAL mode (under a write lease, once per file) and turns
    Python's implicit transactions off.  Raises coord.Error when the lease
    for switching to WAL cannot be had, sqlite3.Error from SQLite."""
    if not isinstance(path, (str, bytes, os.PathLike)) or os.fspath(path) in (":memory:", b":memory:", "", b""):
        raise ValueError("coord.sqlite.connect: path must name a database file")
    if kwargs.get("uri"):
        raise ValueError("coord.sqlite.connect: URIs are not supported; pass the file's path")
    kwargs.update(isolation_level=None, factory=Connection, timeout=timeout)
    db = sqlite3.connect(path, **kwargs)
    try:
        db.coord_path = os.fsdecode(path)
        db.coord_client = client
        db.coord_lease_timeout = lease_timeout
        db.coord_label = label
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            lease = db._coord_acquire(True, None, "coord.sqlite: WAL")
            try:
                db.execute("PRAGMA journal_mode = WAL")
            finally:
                lease.release()
    except BaseException:
        sqlite3.Connection.close(db)
        raise
    return db
