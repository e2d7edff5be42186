"""Findings of the sandbox security review, for real (runc, the built single file): the
gateway's memory is closed to its own uid, AUTO_REVIEW_STATE_DIR takes over no dir
of someone else's, planted entries in the runs dir are removed without following
them, AUTO_REVIEW_CA_FILE and GITHUB_APP_PRIVATE_KEY_FILE are read bounded, and a path
in AUTO_REVIEW_RUNTIME must be an OCI runtime."""

# ruff: noqa: F811 - the shared fixtures are imported from sandboxrun, then named as parameters
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import needs_root
from hostile import fifo_and_oversized
from sandboxrun import (  # noqa: F401 - fixtures
    Runner,
    root_runner,
    rootless_runner,
    rootless_user,
    run_dir_of,
    runner,
    shared_dir,
)
from test_sandbox_boundary import container_pid, free_port, runs_dir, wait_line

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
FORCE_BARE = {"AUTO_REVIEW_BARE": "force"}  # bare on a host that may be no container


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
        pid = container_pid(runner, run_dir_of(runner, proc).name)
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


def test_state_dir_takes_over_no_root_directory(root_runner: Runner, tmp_path: Path) -> None:
    victim = tmp_path / "etc-like"
    victim.mkdir(mode=0o755)
    result = root_runner.run("probe", "exit", "0",
                             env=root_runner.env(AUTO_REVIEW_STATE_DIR=str(victim)))  # fmt: skip
    line = one_line_error(result, 73)
    assert "not created by auto-review" in line and "AUTO_REVIEW_STATE_DIR" in line
    st = victim.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o755)


def test_state_dir_created_or_marked_is_given_to_the_sandbox_user(
    root_runner: Runner, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh" / "state"
    env = root_runner.env(AUTO_REVIEW_STATE_DIR=str(fresh))
    assert root_runner.run("probe", "exit", "0", env=env).returncode == 0
    assert fresh.stat().st_uid == SANDBOX_UID
    # Bare (root's own) and back: our marker lets each mode take it over.
    bare = root_runner.run("--bare", "probe", "exit", "0", env={**env, **FORCE_BARE})
    assert bare.returncode == 0, bare.stderr
    assert fresh.stat().st_uid == 0
    assert root_runner.run("probe", "exit", "0", env=env).returncode == 0
    assert fresh.stat().st_uid == SANDBOX_UID


def test_rootless_state_dir_of_another_uid_is_one_line(
    rootless_runner: Runner, shared_dir: Path
) -> None:
    other = shared_dir / "state-of-10001"
    other.mkdir(mode=0o700)
    os.chown(other, SANDBOX_UID, SANDBOX_UID)
    env = rootless_runner.env(AUTO_REVIEW_STATE_DIR=str(other))
    line = one_line_error(rootless_runner.run("probe", "exit", "0", env=env), 73)
    assert str(other) in line


def test_planted_run_entries_are_removed_without_following(root_runner: Runner) -> None:
    assert root_runner.run("probe", "exit", "0").returncode == 0  # the runs dir exists
    runs = runs_dir(root_runner)
    outside = root_runner.home / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    (runs / "auto-review-999999").symlink_to(outside)
    planted = runs / "auto-review-999998"
    (planted / "sub").mkdir(parents=True)
    (planted / "sub" / "file").write_text("x")
    result = root_runner.run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert (outside / "precious").read_text() == "keep"
    assert not os.path.lexists(runs / "auto-review-999999") and not planted.exists()


@pytest.mark.parametrize("bare", [False, True], ids=["sandbox", "bare"])
def test_ca_file_is_read_bounded(root_runner: Runner, tmp_path: Path, bare: bool) -> None:
    fifo, big = fifo_and_oversized(tmp_path, b"-----BEGIN CERTIFICATE-----\n", 17 << 20)
    link = tmp_path / "link.pem"
    link.symlink_to("/dev/zero")
    args = ["--bare", "probe", "exit", "0"] if bare else ["check"]
    for path in ("/dev/zero", fifo, big, link):
        env = root_runner.env(AUTO_REVIEW_CA_FILE=str(path), **(FORCE_BARE if bare else {}))
        line = one_line_error(root_runner.run(*args, env=env, timeout=60), 78)
        assert f"AUTO_REVIEW_CA_FILE={path}" in line


KEY_BODY = "a2V5LWJvZHktaGFyZGVuaW5nLTNmOWE="  # stands in for a private key's base64


@pytest.mark.parametrize("bare", [False, True], ids=["sandbox", "bare"])
def test_app_key_file_is_read_bounded_and_never_shown(
    root_runner: Runner, tmp_path: Path, bare: bool
) -> None:
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\n"
    fifo, big = fifo_and_oversized(tmp_path, pem.encode(), 17 << 10)
    cut = tmp_path / "cut.pem"  # a copy that lost its END line
    cut.write_text(f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n")
    args = ["--bare", "probe", "exit", "0"] if bare else ["probe", "exit", "0"]
    runs = root_runner.cache / "v1" / "run" / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    for path in (fifo, "/dev/zero", big, cut):
        env = root_runner.env(GITHUB_APP_PRIVATE_KEY_FILE=str(path), **(FORCE_BARE if bare else {}))
        result = root_runner.run(*args, env=env, timeout=60)
        line = one_line_error(result, 78)
        assert f"GITHUB_APP_PRIVATE_KEY_FILE={path}" in line
        assert KEY_BODY not in result.stdout + result.stderr
    assert (set(runs.iterdir()) if runs.is_dir() else set()) == before  # no run dir left


def test_a_runtime_path_must_be_an_oci_runtime(root_runner: Runner) -> None:
    result = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_RUNTIME="/bin/true"))
    line = one_line_error(result, 78)
    assert "AUTO_REVIEW_RUNTIME=/bin/true" in line and "runc" in line
    assert result.stdout == ""
