"""Smoke test of bench/run.py: `--quick` completes and prints the table (no timing asserts)."""

# ruff: noqa: F811 - the shared fixtures are imported from sandboxrun, then named as parameters
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_root
from sandboxrun import rootless_user, shared_dir  # noqa: F401 - fixtures

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


def boxes(app: Path, shared_dir: Path, user: str) -> list:
    """A bench Sandbox as root and one as the rootless user (who must own its work dir)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import pwd
    import shutil

    from sandbox import Sandbox

    out = []
    for who in (None, user):
        work = shared_dir / f"bench-{who or 'root'}"
        work.mkdir(mode=0o755)
        target = app
        if who:
            target = work / "auto-review"
            shutil.copy(app, target)
            target.chmod(0o755)
            entry = pwd.getpwnam(who)
            os.chown(work, entry.pw_uid, entry.pw_gid)
        out.append(Sandbox(target, work, who))
    return out


@needs_root
def test_a_reference_is_shown_to_work_and_a_failed_one_is_an_error(
    app: Path, shared_dir: Path, rootless_user: str
) -> None:
    """Each bare `runc run` reference does its work, root and rootless (the rootless one
    once failed at once, its gid mapped to the user's uid, and was reported as a time),
    and one that fails makes its row an error naming the cause."""
    sandboxes = boxes(app, shared_dir, rootless_user)  # puts bench/ on the path
    from cases_warm import warm_row
    from measure import ReferenceFailed

    for box in sandboxes:
        box.verified("probe", "exit", "0")
        box.bare_verified("check")  # every item passes but host-fds
        box.bare_verified("probe", "exit", "0")()
        with pytest.raises(ReferenceFailed, match=r"bare `probe exit 3` exited 3"):
            box.bare_verified("probe", "exit", "3")
        _case, ours, ref, ratio, _goal = warm_row(box, ("probe", "exit", "3"), 1, "c", "")
        assert (ours, ratio) == ("error", "error") and "exited 3" in ref
