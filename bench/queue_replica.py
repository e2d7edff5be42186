"""One replica for cases_queue: the gateway's own PostgreSQL store and worker pool, with
a stand-in reviewer that takes a fixed time. Run by the system python3 (its psycopg),
with the gateway's source on PYTHONPATH:

    queue_replica.py URL CONCURRENCY REVIEW_SECONDS

Prints "ready" once its workers wait for jobs; stops when its stdin closes.
"""

from __future__ import annotations

import sys
import time

from auto_review_gateway.core.metrics import Metrics
from auto_review_gateway.jobs.pg_queue import PgJobQueue
from auto_review_gateway.jobs.workers import Workers


def main() -> int:
    url, concurrency, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    store = PgJobQueue(url, forge="forgejo", lease=30.0, poll_interval=1.0)
    workers = Workers(store, lambda job: time.sleep(seconds), concurrency=concurrency,
                      metrics=Metrics(), poll_interval=1.0)  # fmt: skip
    workers.start()
    print("ready", flush=True)
    sys.stdin.read()
    workers.stop(grace=10.0)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
