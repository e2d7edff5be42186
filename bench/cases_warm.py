"""Warm starts: `check` and `probe exit 0` vs a bare `runc run` (root, and rootless
when the user `ar-rootless` exists), and the warm path vs `python3 -I -S -c pass`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import statistics
from pathlib import Path

from measure import (
    APP_PYTHON,
    PYTHON,
    ReferenceFailed,
    Row,
    bench_users,
    error_row,
    fmt,
    ratio,
    run,
    timed_together,
)
from sandbox import Sandbox


def warm_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    rows: list[Row] = []
    for user in bench_users():
        work = base / f"warm-{user or 'root'}"
        work.mkdir(mode=0o755)
        if user:
            shutil.copy(app, work / "auto-review")
            os.chmod(work / "auto-review", 0o755)
            os.chown(work, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            box = Sandbox(work / "auto-review", work, user)
        else:
            box = Sandbox(app, work, None)
        mode = "rootless" if user else "root"
        for args, goal in ((("check",), "<= 1.25x"), (("probe", "exit", "0"), "")):
            rows.append(warm_row(box, args, rounds, f"warm `{' '.join(args)}` ({mode})", goal))
    return rows


def warm_row(box: Sandbox, args: tuple[str, ...], rounds: int, case: str, goal: str) -> Row:
    """The launcher's `args` against a bare `runc run` of the same config, each shown
    first to do its work; an error row naming the cause when one does not."""
    try:
        ours, ref = timed_together([box.verified(*args), box.bare_verified(*args)], rounds)
    except ReferenceFailed as exc:
        return error_row(case, exc, goal)
    return (case, fmt(ours), f"bare `runc run`: {fmt(ref)}", ratio(ours, ref), goal)


def warm_path_row(app: Path, rounds: int, base: Path) -> Row:
    """A warm `cache prepare` run as the file's first lines run it (interpreter start,
    the launcher's imports from the file, the warm acquire: lock, marker), vs a bare
    interpreter."""
    work = base / "warm-path"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(work / "cache"))
    cmd = [*APP_PYTHON, str(app), "-q", "cache", "prepare"]
    run(cmd, env)
    bare = [PYTHON, "-I", "-S", "-c", "pass"]
    ours, ref = timed_together([lambda: run(cmd, env), lambda: run(bare)], rounds)
    extra = (statistics.median(ours) - statistics.median(ref)) * 1000
    return (
        "warm path (`cache prepare`: launcher imports + lock + marker)",
        fmt(ours),
        f"`python3 -I -S -c pass`: {fmt(ref)}",
        f"+{extra:.1f} ms",
        "<= +8 ms",
    )


def interpreter_row(app: Path, rounds: int) -> Row:
    """What `python3 FILE` costs over the way the file's first lines run it on this
    host: the site module, whatever .pth files the host's site-packages hold, and runpy."""
    plain, isolated = timed_together(
        [lambda: run([PYTHON, str(app), "--version"]),
         lambda: run([*APP_PYTHON, str(app), "--version"])],
        rounds,
    )  # fmt: skip
    extra = (statistics.median(plain) - statistics.median(isolated)) * 1000
    return (
        "`python3 auto-review --version`",
        fmt(plain),
        f"`./auto-review --version` (without the shell): {fmt(isolated)}",
        ratio(plain, isolated),
        f"context: `python3 auto-review` adds +{extra:.1f} ms to each row",
    )
