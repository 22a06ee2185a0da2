"""coord leases for a SQLAlchemy engine on a SQLite file.

    import sqlalchemy
    import coord.sqlalchemy

    engine = sqlalchemy.create_engine("sqlite:////srv/shop.db", pool_size=20)
    coord.sqlalchemy.install(engine)

From then on every transaction of the engine that writes holds the file's
write lease, and every one that only reads holds a read lease, so a pooled
app, and the other programs on the file, never see "database is locked".
Tested with SQLAlchemy 1.4 (Debian 12's python3-sqlalchemy) and written
to the event API 2.0 keeps.

How a transaction is known to write (the rule):

  * A transaction takes its lease at its first statement: a read lease if
    that statement only reads (SELECT, VALUES, EXPLAIN, a reading WITH or
    PRAGMA; coord.sqlite.statement_writes()), otherwise the write lease
    and BEGIN IMMEDIATE.
  * Reads run in autocommit mode under the read lease (the lease keeps
    every coord writer out, so they see one state).  At the transaction's
    first write the read lease is given up, the write lease taken (in its
    FIFO turn), and BEGIN IMMEDIATE run: the reads before it and the
    writes after it are then not one atomic unit.  This is what Python's
    sqlite3 driver does by default (it begins only at the first DML), so
    an app's semantics do not change; but what it read may be stale when
    it writes.
  * A transaction that must read and write atomically (read a balance,
    then update it) declares itself a writer, and holds the write lease
    from its first statement on:

        with engine.connect().execution_options(coord="write") as conn:
        session = Session(engine.execution_options(coord="write"))

    coord="read" declares a reader: it holds a read lease and the
    connection is query-only (PRAGMA query_only) until COMMIT or ROLLBACK,
    so a write in it raises sqlite3.OperationalError "attempt to write a
    readonly database" (sqlalchemy.exc.OperationalError, .orig the
    sqlite3 error) instead of writing under the read lease; the lease is
    not traded for the write lease.  query_only is turned off again before
    the connection goes back to the pool.  A transaction one of whose
    statements was declared read stays read-only until it ends.
  * The lease is released right after COMMIT or ROLLBACK, including the
    pool's rollback when a connection goes back to the pool.  A statement
    run outside any transaction (1.4's legacy autocommit) holds its lease
    for that statement only.

install() makes the engine's connections coord.sqlite connections (WAL
mode, busy timeout, Python's implicit transactions off), so call it before
the engine is used; it disposes of connections made before.  One thread
that holds a write transaction on one connection and uses a second
connection of the pool gets coord.Deadlock at once (it would wait for
itself).
"""

from sqlalchemy import event

import coord.sqlite


def install(engine, *, client=None, lease_timeout=coord.sqlite.LEASE_TIMEOUT,
            label=None, busy_timeout=coord.sqlite.BUSY_TIMEOUT):
    """Makes every transaction of `engine` (a SQLite file) take its lease.

      client         a coord.Client; None: coord's default client.
      lease_timeout  seconds a statement waits for its lease (then
                     coord.Timeout, wrapped by SQLAlchemy in
                     sqlalchemy.exc.StatementError with .orig the Timeout).
      label          shown by `coordctl list`.
      busy_timeout   SQLite's busy timeout in seconds.

    Returns the engine.  Raises ValueError if the engine is not a file
    database of the pysqlite driver."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.get_driver_name() not in ("pysqlite", None):
        raise ValueError(f"coord.sqlalchemy.install: {url.drivername} is not sqlite+pysqlite")
    if not url.database or url.database == ":memory:" or url.query.get("uri"):
        raise ValueError("coord.sqlalchemy.install: the engine must use a database file by path")

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, conn_rec, cargs, cparams):
        cparams = dict(cparams)
        cparams.pop("isolation_level", None)
        cparams.pop("factory", None)
        database = cparams.pop("database", None) or cargs[0]
        cparams["timeout"] = busy_timeout
        # The pool hands connections from thread to thread, one at a time.
        cparams.setdefault("check_same_thread", False)
        return coord.sqlite.connect(database, client=client, lease_timeout=lease_timeout,
                                    label=label, **cparams)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        db = _dbapi(conn)
        declared = conn.get_execution_options().get("coord")
        if context is not None:
            declared = context.execution_options.get("coord", declared)
        if declared not in (None, "read", "write"):
            raise ValueError(f"execution option coord={declared!r}: use 'read' or 'write'")
        db.coord_statement(statement, declared)
        if not conn.in_transaction():
            # Legacy autocommit (1.4 without future=True): this statement is
            # its own transaction; after_cursor_execute or handle_error ends it.
            conn.info["coord_statement_only"] = True

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):
        if conn.info.pop("coord_statement_only", False):
            _dbapi(conn).commit()

    @event.listens_for(engine, "handle_error")
    def _error(ctx):
        conn = ctx.connection
        if conn is not None and conn.info.pop("coord_statement_only", False):
            db = _dbapi(conn)
            if db is not None:
                db.rollback()

    engine.dispose()
    return engine


def _dbapi(conn):
    """The coord.sqlite.Connection under a SQLAlchemy Connection."""
    fairy = conn.connection
    db = getattr(fairy, "dbapi_connection", None) or getattr(fairy, "connection", None)
    if not isinstance(db, coord.sqlite.Connection):
        raise TypeError("coord.sqlalchemy: the engine's connection is not a coord.sqlite "
                        "connection (install() must run before the engine connects)")
    return db

