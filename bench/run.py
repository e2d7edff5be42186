#!/usr/bin/env python3
"""Benchmarks: one markdown table of medians (min-max) and ratios to a reference
measured in the same run. No thresholds are asserted; the goals are printed.

    python3 bench/run.py [--quick] [--app dist/auto-review]

Cases: warm start vs a bare `runc run` of the same rootfs and command (root, and
rootless when the user `ar-rootless` exists); the warm path vs `python3 -I -S -c
pass`; cold unpack vs `zstd -dc | tar -x`, vs the same followed by `sync -f` (our
cold path syncs, tar does not), and its peak RSS; 16 concurrent cold
starts vs one; size vs xz -9 and gzip -9 of the same tar; for context, the same
trivial entry point packed with shiv and with PEX (pinned, installed into a
throwaway venv), warm and cold, vs `python3 -I -S -c pass`; the PostgreSQL job store's
jobs per second with 3 replicas vs 1, and its claim latency.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from cases_cold import cold_rows, cold_synced_row, size_rows
from cases_network import network_rows
from cases_queue import queue_rows
from cases_runtime import runtime_rows
from cases_warm import interpreter_row, warm_path_row, warm_rows
from cases_zipapp import zipapp_rows
from measure import bench_arguments, ensure_app, manifest_of


def main() -> int:
    args, rounds = bench_arguments(__doc__)
    app = ensure_app(args.app.resolve())
    with tempfile.TemporaryDirectory(prefix="ar-bench-", dir="/tmp") as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        rows = [
            *warm_rows(app, rounds, base),
            warm_path_row(app, rounds, base),
            interpreter_row(app, rounds),
            *cold_rows(app, rounds, base),
            cold_synced_row(app, rounds, base),
            *size_rows(app, base),
            *zipapp_rows(app, rounds, base),
            *network_rows(app, rounds, base),
            *runtime_rows(app, rounds, base),
            *queue_rows(rounds),
        ]
    cores, mem = os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"auto-review {manifest_of(app)['version']}, {time.strftime('%Y-%m-%d')}, "
        f"{cores} cores, {mem:.0f} GiB, {rounds} rounds, median (min-max)\n"
    )
    print("| case | auto-review | reference (same run) | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
