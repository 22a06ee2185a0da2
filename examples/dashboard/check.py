"""A check script that never waits: it reads with timeout=0 and skips when
a writer has the file.  Exit status 0 ok or skipped, 1 a problem.

    python3 check.py
"""
import sys

import coord

import common


def main():
    db = common.coord.sqlite.connect(common.SHOP_DB, label="check")
    try:
        with db.read(timeout=0):
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            torn = db.execute("SELECT count(*) FROM batches b WHERE b.rows != "
                              "(SELECT count(*) FROM orders o WHERE o.batch = b.id)").fetchone()[0]
    except coord.Busy:
        print("check: busy, skipped")
        return 0
    finally:
        db.close()
    if ok != "ok" or torn:
        print(f"check: PROBLEM quick_check={ok} torn_batches={torn}")
        return 1
    print("check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
