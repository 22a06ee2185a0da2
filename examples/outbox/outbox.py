"""The local outbox: a SQLite file the app processes append critical
operations to, each under a write lease and with an idempotency key, so
they are safe on disk even while PostgreSQL is down.  The syncer
(syncer.py) replays them to PostgreSQL."""
import os

import coord.sqlite

OUTBOX_DB = os.environ.get("OUTBOX_DB", "outbox.db")


def open_outbox(label):
    db = coord.sqlite.connect(OUTBOX_DB, label=label)
    with db.write():
        db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, "
                   "key TEXT UNIQUE NOT NULL, payload TEXT NOT NULL, "
                   "synced INTEGER NOT NULL DEFAULT 0)")
    return db


def append(db, key, payload):
    """Appends one operation; appending the same key again does nothing
    (a retry after a crash cannot make a second operation).  Returns
    True if it was new."""
    with db.write():
        cur = db.execute("INSERT OR IGNORE INTO outbox (key, payload) VALUES (?, ?)",
                         (key, payload))
        return cur.rowcount == 1
