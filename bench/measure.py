"""What every benchmark shares: the timing loop, the table's cells, the single file
under test, and the users a case runs as.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from buildsys.zipapp import BOOT  # noqa: E402 -- the build's own, from the tree measured

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# The single file as its first lines run it (`exec python3 -I -S -c BOOT "$0" "$@"`, from
# buildsys/zipapp.py), without the shell: isolated, without site, without runpy.
# `python3 FILE`, as other zipapps are run, is measured beside it where start-up matters
# (cases_warm.py's start-up row).
APP_PYTHON = [PYTHON, "-I", "-S", "-c", BOOT]
ROOTLESS_USER = "ar-rootless"

Row = tuple[str, str, str, str, str]


class ReferenceFailed(Exception):
    """A command a row measures did not do its work: the row becomes an error naming the
    cause, never a time."""


def error_row(case: str, exc: ReferenceFailed, goal: str = "") -> Row:
    """The row of a case whose command or reference failed."""
    return (case, "error", f"not measured: {exc}", "error", goal)


def timed(
    fn: Callable[[], object], rounds: int, setup: Callable[[], object] | None = None
) -> list[float]:
    """Wall-clock seconds of `fn` over `rounds` runs (setup excluded)."""
    out = []
    for _ in range(rounds):
        if setup:
            setup()
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def timed_together(fns: list[Callable[[], object]], rounds: int) -> list[list[float]]:
    """Wall-clock seconds of each of `fns`, run in turn round after round: a neighbour
    that slows the shared machine for a while slows every side alike. Fifteen runs of
    ours, then fifteen of the reference, let a busy minute land on one side only (a
    warm `check` printed 1.67x a bare `runc run` so, where 25 runs alone took 131 ms)."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, samples, strict=True):
            out += timed(fn, 1)
    return samples


def fmt(samples: list[float], unit: str = "ms") -> str:
    scale = 1000 if unit == "ms" else 1
    med = statistics.median(samples) * scale
    return f"{med:.1f} {unit} ({min(samples) * scale:.1f}-{max(samples) * scale:.1f})"


def ratio(ours: list[float], ref: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(ref):.2f}x"


def run(
    cmd: list[str], env: dict[str, str] | None = None, user: str | None = None, check: bool = True
) -> None:
    subprocess.run(
        cmd,
        env=env,
        check=check,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user,
        group=user,
        extra_groups=[] if user else None,
    )


def ensure_app(path: Path) -> Path:
    if not path.exists():
        print(f"building {path} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(ROOT / "build.py"), "--out", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def manifest_of(app: Path) -> dict:
    with zipfile.ZipFile(app) as zf:
        return json.loads(zf.read("bundle/bundle.json"))


def bench_users() -> list[str | None]:
    """Who the sandbox rows run as: root (None) when we are root, and the rootless user
    when it exists."""
    users: list[str | None] = [None] if os.geteuid() == 0 else []
    try:
        pwd.getpwnam(ROOTLESS_USER)
        users.append(ROOTLESS_USER)
    except KeyError:
        pass
    return users


def bench_arguments(doc: str | None) -> tuple[argparse.Namespace, int]:
    """The benchmarks' command line (--quick, --app) and the rounds it asks for."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--app", type=Path, default=ROOT / "dist" / "auto-review")
    args = parser.parse_args()
    return args, 3 if args.quick else 15
