"""What the dashboard's programs share: where the data lives, its schema,
and how DuckDB is opened.

DATA_DIR (default: this directory) holds shop.db (SQLite: orders written
in batches) and stats.duckdb (DuckDB: one row per batch)."""
import os

import coord.duckdb
import coord.sqlite

DATA_DIR = os.environ.get("DATA_DIR", os.path.dirname(os.path.abspath(__file__)))
SHOP_DB = os.path.join(DATA_DIR, "shop.db")
STATS_DB = os.path.join(DATA_DIR, "stats.duckdb")

try:
    import duckdb
    duckdb_connect = duckdb.connect
except ImportError:
    # Where the duckdb module cannot be installed (this project's CI), the
    # ctypes stand-in of the tests drives the same libduckdb.so.
    from duckdb_ctypes import connect as duckdb_connect


def open_shop(label):
    """The SQLite file, set up for sharing (WAL, busy timeout, leases)."""
    db = coord.sqlite.connect(SHOP_DB, label=label)
    with db.write():
        db.execute("CREATE TABLE IF NOT EXISTS orders (batch INTEGER, n INTEGER, amount INTEGER)")
        db.execute("CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, rows INTEGER, "
                   "token INTEGER, source TEXT)")
    return db


def open_stats(write, label, **kw):
    """The DuckDB file under a lease: read-write under the write lease,
    read-only under a read lease."""
    return coord.duckdb.connect(STATS_DB, write=write, connect=duckdb_connect, label=label, **kw)


def create_stats():
    with open_stats(True, "setup") as db:
        db.execute("CREATE TABLE IF NOT EXISTS batch_stats (batch BIGINT, total BIGINT)")
