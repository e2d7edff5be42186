"""Smoke test of bench/run.py: `--quick` completes and prints the table (no timing asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "| case | auto-review | reference (same run) | ratio | goal |"


def test_bench_quick_prints_the_table(app: Path) -> None:
    """The quick run exits 0 and prints the header and the warm, cold, size and shiv rows."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--app", str(app)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert HEADER in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for case in ("warm `check`", "cold unpack", "single file", "shiv"):
        assert any(row.startswith(f"| {case}") for row in rows), (case, out)
