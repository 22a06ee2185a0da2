"""The dashboard: a Flask app that reads shop.db and stats.duckdb under
read leases on every request.

SQLite is read inside `with db.read():` (a read lease and one read
transaction) and released at the end of the request.  DuckDB is kept
open read-only between requests, because opening it costs more than a
page view; a watcher thread closes it (releasing the lease) as soon as a
writer waits, or once it is a second old, and the next request reopens it.

    python3 app.py --port 8000        # GET /  ->  JSON counts
"""
import argparse
import threading
import time

from flask import Flask, jsonify

import common

app = Flask(__name__)
stats_lock = threading.Lock()
stats = None        # the kept DuckDB reader (coord.duckdb.Connection)


def read_stats():
    global stats
    with stats_lock:
        if stats is None:
            # Reopened at least every second: a read-only DuckDB does not
            # see what was committed after it opened.
            stats = common.open_stats(False, "dashboard", timeout=5, max_age=1.0)
        # execute() also gives way by itself if the lease was recalled.
        return stats.execute("SELECT count(*), coalesce(sum(total), 0) FROM batch_stats").fetchone()


def watch_recalls():
    """Gives DuckDB back within 50 ms of a recall (lease.recalled is a
    memory load, so polling it costs nothing)."""
    while True:
        time.sleep(0.05)
        with stats_lock:
            if stats is not None:
                stats.yield_if_recalled()


@app.route("/")
def index():
    db = common.coord.sqlite.connect(common.SHOP_DB, label="dashboard")
    try:
        with db.read(timeout=5):
            orders, amount = db.execute("SELECT count(*), coalesce(sum(amount), 0) FROM orders").fetchone()
            batches = db.execute("SELECT count(*) FROM batches").fetchone()[0]
    finally:
        db.close()
    duck_batches, duck_total = read_stats()
    return jsonify(orders=orders, amount=amount, batches=batches,
                   duckdb_batches=duck_batches, duckdb_total=duck_total)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    threading.Thread(target=watch_recalls, daemon=True).start()
    # One request at a time per process, like gunicorn's sync workers: the
    # kept DuckDB reader is one connection.
    app.run(host="127.0.0.1", port=args.port, threaded=False)
