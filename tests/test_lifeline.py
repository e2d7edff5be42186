"""The lifeline holds when the launcher's whole process group is killed (what
`timeout -s KILL`, an OOM kill of a group or a supervisor that signals the group does):
the gateway is gone within 2 s, every time, root and rootless, runc and crun.

It missed before in 5 to 31 of 50 runs (host network): the group kill takes the runtime
that relays the gateway's stderr with the launcher, so the gateway's "the launcher is
gone" line met EPIPE, which ended the watching thread before its exit.
"""

# ruff: noqa: F811 - the shared fixtures are imported, then named as parameters
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, needs_root
from sandboxrun import (  # noqa: F401 - fixtures
    Runner,
    gone,
    root_runner,
    rootless_runner,
    rootless_user,
    shared_dir,
)
from test_runtimes import IN_PRIVATE_NS, UNIFIED, empty_controllers  # noqa: F401 - fixture

pytestmark = needs_root

RUNS = {"host": 50, "isolated": 10}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children of each of its threads, recursively)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def gateway_of(launcher: int) -> int:
    """The sandboxed gateway below the launcher `launcher` (its cmdline names gateway.pyz)."""
    for pid in descendants(launcher):
        try:
            if b"gateway.pyz" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError(f"no gateway below {launcher}")


def start_sleeping(runner: Runner, env: dict[str, str], runtime: str, empty: Path):
    """`probe sleep` in a process group of its own. crun refuses this hybrid host while
    its unified hierarchy lists a controller: it runs in a private mount namespace where
    that list is empty (as tests/test_runtimes.py shows crun working)."""
    if runtime == "runc":
        return runner.popen("probe", "sleep", "600", env=env, start_new_session=True)
    variables = [f"{k}={v}" for k, v in env.items()]
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", IN_PRIVATE_NS, "sh",
           str(empty), UNIFIED, runner.user or "-", "env", "-i", *variables,
           HOST_PYTHON, str(runner.app), "probe", "sleep", "600"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def group_kill_leaves_nothing(
    runner: Runner, env: dict[str, str], runtime: str, empty: Path
) -> bool:
    """SIGKILL the launcher's whole process group once the gateway is ready; whether the
    gateway was gone within 2 s (waited on a pidfd, not a clock)."""
    proc = start_sleeping(runner, env, runtime, empty)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
        pid = gateway_of(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if gone(pid, timeout=2):
            return True
        os.kill(pid, signal.SIGKILL)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("network", sorted(RUNS))
@pytest.mark.parametrize("runtime", ["runc", "crun"])
@pytest.mark.parametrize("who", ["root", "rootless"])
def test_a_group_kill_takes_the_gateway_every_time(
    who: str, runtime: str, network: str, request: pytest.FixtureRequest, empty_controllers: Path
) -> None:
    runner: Runner = request.getfixturevalue(f"{who}_runner")
    env = runner.env(AUTO_REVIEW_RUNTIME=runtime, AUTO_REVIEW_NETWORK=network)
    survived = [
        i
        for i in range(RUNS[network])
        if not group_kill_leaves_nothing(runner, env, runtime, empty_controllers)
    ]
    assert survived == [], f"the gateway outlived a group kill in {len(survived)} runs"
