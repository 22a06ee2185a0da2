"""An app process: appends COUNT critical operations to the outbox, each
with the idempotency key NAME-i, and retries every 10th (as an app does
when it is not sure the first attempt landed).

    python3 app.py NAME COUNT [--pause SECONDS]
"""
import argparse
import json
import time

import outbox


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("count", type=int)
    p.add_argument("--pause", type=float, default=0.01)
    args = p.parse_args()
    db = outbox.open_outbox(args.name)
    for i in range(args.count):
        key = f"{args.name}-{i}"
        payload = json.dumps({"op": "charge", "cents": 100 + i})
        outbox.append(db, key, payload)
        if i % 10 == 0:
            outbox.append(db, key, payload)    # the retry: ignored
        time.sleep(args.pause)
    db.close()
    print(f"app {args.name}: appended {args.count}", flush=True)


if __name__ == "__main__":
    main()
