"""The hostile repositories and servers of test_review_hostile.py through the single
file and real runc, root and rootless: ``review --repo`` fetches and diffs inside the
sandbox, as a service's jobs do.

Each run goes through a wrapper that reports the largest peak RSS of the process tree
it waited for (the launcher, the runtime, the gateway and every git it reaped): that
is the number the memory goal bounds. The issue measured on main, in the sandbox: the
newline bomb took ``git diff`` to the 2 GiB memory limit as root (exit 3, "no message
from git") and the gateway past 4 GB rootless; the endless pack grew index-pack to
1.7 GB (root) and 3.3 GB (rootless) until /tmp filled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, needs_root
from gitserver import GitHttpsServer, make_ca
from hostilegit import (
    HostileGitServer,
    endless_pack,
    hostile_repo,
    large_pack,
    newlines,
    stalled_pack,
    text_of,
)
from sandboxrun import (  # noqa: F401 - fixtures
    Runner,
    root_runner,
    rootless_runner,
    rootless_user,
    runner,
    shared_dir,
)

pytestmark = needs_root

MiB = 1024 * 1024
PEAK_GOAL_MIB = 256
MAX_FETCH_OBJECTS = 5_000_000  # budgets.py's; the gateway is not importable from here
SMALL = {"small.py": b"<<<<<<< HEAD\n"}

PEAK = r"""
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
sys.stderr.write("\nPEAK %d\n" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def world(shared_dir: Path) -> Iterator[dict]:  # noqa: F811
    """The hostile repositories and a CA, readable by the rootless user."""
    certs = make_ca(shared_dir / "hostile-certs")
    for path in certs.ca_cert.parent.iterdir():
        path.chmod(0o644)
    repos = shared_dir / "hostile-repos"
    hostile_repo(repos / "big.git", {"big.txt": text_of(200 * MiB), **SMALL})
    hostile_repo(repos / "bomb.git", {"bomb.txt": newlines(64 * MiB), **SMALL})
    subprocess.run(["chmod", "-R", "a+rX", str(repos)], check=True)
    with GitHttpsServer(repos, certs) as server:
        yield {"repos": repos, "certs": certs, "server": server}
    shutil.rmtree(repos, ignore_errors=True)


def review(runner: Runner, world: dict, url: str) -> tuple[int, str, str, int]:  # noqa: F811
    """``review --repo url`` through the single file: (exit status, stdout, stderr, the
    largest peak RSS of the tree, in MiB)."""
    env = runner.env(AUTO_REVIEW_CA_FILE=str(world["certs"].ca_cert), AUTO_REVIEW_NETWORK="host")
    proc = subprocess.run(
        [HOST_PYTHON, "-c", PEAK, HOST_PYTHON, str(runner.app), "review", "--repo", url,
         "--base", "main", "--head", "topic", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        user=runner.user, group=runner.user, extra_groups=[] if runner.user else None,
    )  # fmt: skip
    stderr, _, peak = proc.stderr.rpartition("\nPEAK ")
    return proc.returncode, proc.stdout, stderr.strip(), int(peak)


def one_line(stderr: str) -> str:
    """The one error line (after the launcher's warning about AUTO_REVIEW_NETWORK=host)."""
    lines = [line for line in stderr.splitlines() if "AUTO_REVIEW_NETWORK=host" not in line]
    assert len(lines) == 1 and lines[0].startswith("auto-review: error: "), stderr
    return lines[0]


@pytest.mark.parametrize(("name", "path", "size"), [
    ("big", "big.txt", 200 * MiB), ("bomb", "bomb.txt", 64 * MiB),
])  # fmt: skip
def test_a_big_blob_or_a_newline_bomb_is_listed_too_large(
    runner: Runner,  # noqa: F811
    world: dict,
    name: str,
    path: str,
    size: int,
) -> None:
    code, out, err, peak = review(runner, world, world["server"].repo_url(name))
    assert code == 0, err
    report = json.loads(out)
    assert report["too_large"] == [{"path": path, "size": size}]
    assert ("small.py", 1, "conflict-marker") in {
        (f["path"], f["line"], f["rule"]) for f in report["findings"]
    }
    assert peak <= PEAK_GOAL_MIB, peak


def test_an_endless_pack_ends_in_one_line(runner: Runner, world: dict) -> None:  # noqa: F811
    with HostileGitServer(world["repos"], world["certs"], pack=endless_pack()) as server:
        code, _out, err, peak = review(runner, world, server.repo_url("big"))
    assert code == 3
    assert one_line(err).endswith("git ran out of memory: the 1024 MiB memory cap of a git process")
    assert peak <= PEAK_GOAL_MIB, peak


def test_a_pack_over_the_object_cap_ends_in_one_line(
    runner: Runner,  # noqa: F811
    world: dict,
) -> None:
    claimed = MAX_FETCH_OBJECTS + 1
    with HostileGitServer(world["repos"], world["certs"], pack=stalled_pack(claimed)) as server:
        code, _out, err, peak = review(runner, world, server.repo_url("big"))
    assert code == 3
    assert f"the pack announces {claimed} objects, over the cap" in one_line(err)
    assert peak <= 1024, peak


def test_a_pack_over_the_size_cap_ends_in_one_line(
    runner: Runner,  # noqa: F811
    world: dict,
) -> None:
    """The pack lands in the sandbox's /tmp (a 512 MiB tmpfs): it stops at 256 MiB."""
    with HostileGitServer(world["repos"], world["certs"], pack=large_pack()) as server:
        code, _out, err, peak = review(runner, world, server.repo_url("big"))
    assert code == 3
    assert one_line(err).endswith("the pack outgrew the 256 MiB cap of a fetch")
    assert peak <= PEAK_GOAL_MIB, peak
