"""Findings of the sandbox security review, for real (runc, the built single file): the
gateway's memory is closed to its own uid, AUTO_REVIEW_STATE_DIR takes over no dir
of someone else's, planted entries in the runs dir are removed without following
them, AUTO_REVIEW_CA_FILE is read bounded, and a path in AUTO_REVIEW_RUNTIME must be
an OCI runtime."""

# ruff: noqa: F811 - the shared fixtures are imported from sandboxrun, then named as parameters
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import needs_root
from sandboxrun import (  # noqa: F401 - fixtures
    Runner,
    root_runner,
    rootless_runner,
    rootless_user,
    runner,
    shared_dir,
)
from test_sandbox_boundary import container_pid, free_port, runs_dir, wait_for_run, wait_line

pytestmark = needs_root
SANDBOX_UID = 10001  # the manifest's process.user, seen from the host as root

READ_MEM = """
import sys
try:
    open(f"/proc/{sys.argv[1]}/mem", "rb").close()
except PermissionError:
    print("denied")
else:
    print("opened")
"""


BARE_WARNING = "running WITHOUT the sandbox"


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.strip().splitlines() if BARE_WARNING not in x]
    assert len(lines) == 1, result.stderr
    return lines[0]


def as_uid(uid: int, *argv: str) -> str:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip


def test_the_gateway_memory_is_closed_to_its_own_uid(root_runner: Runner) -> None:
    # As root the gateway is uid 10001 on the host, as any other process of that uid.
    # (Rootless, the host user owns the gateway's user namespace and so may read it
    # anyway: it is the user who gave the secrets; inside, check's item covers it.)
    runner, uid = root_runner, SANDBOX_UID
    env = runner.env(AR_GATEWAY_BIND=f"127.0.0.1:{free_port()}",
                     FORGEJO_BASE_URL="https://forge.invalid",
                     WEBHOOK_SECRET="whsec-memory-4c1e", AR_FORGEJO_TOKEN="tok-memory-77",
                     LLM_API_KEY="sk-memory-19")  # fmt: skip
    proc = runner.popen("serve", env=env)
    try:
        wait_line(proc, "serving on")
        pid = container_pid(runner, wait_for_run(runner, proc).name)
        # The same reader can open the memory of a dumpable process of that uid.
        helper = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "60"]
        )
        try:
            assert as_uid(uid, "/usr/bin/python3", "-c", READ_MEM, str(helper.pid)) == "opened"
        finally:
            helper.kill()
            helper.wait()
        assert as_uid(uid, "/usr/bin/python3", "-c", READ_MEM, str(pid)) == "denied"
    finally:
        proc.kill()
        proc.wait()


def test_check_reports_the_gateway_not_dumpable(runner: Runner) -> None:
    result = runner.run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   not-dumpable" in result.stdout
    assert "ok   pid1-environ" in result.stdout
