"""The sandbox boundary, for real (runc root and rootless): the cache use lock never
enters the container, the lifeline ends the gateway within 2 s of a SIGKILLed launcher,
secrets (the GitHub App key read from its host file too) reach the gateway by pipe and
are on no disk and not in PID 1's environment, and the seccomp allowlist in the
generated config is exactly the intended table."""

# ruff: noqa: F811 - the shared fixtures are imported from sandboxrun, then named as parameters
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, needs_root
from sandboxrun import (  # noqa: F401 - fixtures
    Runner,
    gone,
    root_runner,
    rootless_runner,
    rootless_user,
    run_dir_of,
    runner,
    shared_dir,
)

pytestmark = needs_root
SECRETS = {
    "WEBHOOK_SECRET": "whsec-6f1d2c9a-boundary",
    "AR_FORGEJO_TOKEN": "forgetok-83b0e7-boundary",
    "LLM_API_KEY": "sk-llmkey-51aa-boundary",
}


def runs_dir(runner: Runner) -> Path:
    return runner.cache / "v1" / "run" / "runs"


def wait_line(proc: subprocess.Popen, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.stderr.read() if proc.stderr else ''}")
    raise AssertionError(f"never printed {text!r}")


def container_pid(runner: Runner, container_id: str) -> int:
    out = subprocess.run(
        ["runc", "--root", str(runner.cache / "v1" / "run" / "runc"), "state", container_id],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)["pid"]


def fd_targets(pid: int) -> dict[int, str]:
    base = Path(f"/proc/{pid}/fd")
    return {int(p.name): os.readlink(p) for p in base.iterdir()}


def use_lock(runner: Runner) -> Path:
    [lock] = (runner.cache / "v1" / "bundles").glob("*.use.lock")
    return lock


def test_the_use_lock_stays_on_the_host_side(runner: Runner) -> None:
    proc = runner.popen("probe", "sleep", "60")
    try:
        wait_line(proc, "ready")
        pid = container_pid(runner, f"auto-review-{proc.pid}")
        inside = fd_targets(pid)
        assert not any(t.endswith(".use.lock") for t in inside.values()), inside
        assert inside[3].startswith("pipe:"), inside  # the lifeline
        assert set(inside) == {0, 1, 2, 3}, inside
        assert any(t.endswith(".use.lock") for t in fd_targets(proc.pid).values())
        lock = use_lock(runner)
        fd = os.open(lock, os.O_RDONLY)
        try:  # held shared by the launcher: exclusive (what GC takes) is refused
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        cleared = runner.run("cache", "clear")
        assert cleared.returncode == 75, cleared.stdout + cleared.stderr
        assert any((runner.cache / "v1" / "bundles").glob("sha256-*/rootfs"))
        # the sandbox's attempts on every fd it has change nothing of the host's lock
        attempt = runner.run("probe", "flock", "3")
        assert attempt.returncode == 0, attempt.stderr
        assert runner.run("cache", "clear").returncode == 75
        st = lock.stat()
        assert st.st_size == 0 and st.st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def every_file(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            out += [Path(dirpath) / f for f in files]
    return out


def holding_secret(*roots: Path, secrets: dict[str, str] = SECRETS) -> list[str]:
    found = []
    for path in every_file(*roots):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        found += [f"{path}: {k}" for k, v in secrets.items() if v.encode() in data]
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_of_the_launcher_ends_the_gateway_and_leaves_no_secret(runner: Runner) -> None:
    env = runner.env(AR_GATEWAY_BIND=f"127.0.0.1:{free_port()}",
                     FORGEJO_BASE_URL="https://forge.invalid", **SECRETS)  # fmt: skip
    proc = runner.popen("serve", env=env)
    try:
        wait_line(proc, "serving on")
        run = run_dir_of(runner, proc)
        pid = container_pid(runner, run.name)
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert not [k for k, v in SECRETS.items() if v.encode() in environ]
        assert not [k for k in SECRETS if k.encode() + b"=" in environ]
        assert holding_secret(runner.cache, runner.state) == []  # config.json, runc state
        helpers = [c for c in children(proc.pid) if c != pid]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert gone(pid, timeout=2), "the gateway outlived its launcher by 2 s"
        assert all(gone(h, timeout=2) for h in helpers), "slirp4netns outlived the launcher"
        assert holding_secret(runner.cache, runner.state) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = runner.run("probe", "exit", "0")  # the next start cleans up what is left
    assert after.returncode == 0, after.stderr
    assert list(runs_dir(runner).iterdir()) == []


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_the_secrets_reach_the_gateway_by_pipe(runner: Runner) -> None:
    result = runner.run("probe", "env", env=runner.env(**SECRETS))
    names = result.stdout.split()
    assert set(SECRETS) <= set(names)
    assert "AUTO_REVIEW_SECRETS_FD" not in names  # read, closed and forgotten
    assert not [v for v in SECRETS.values() if v in result.stdout + result.stderr]


KEY_BODY = "YXBwLWtleS1ib3VuZGFyeS03YzQxZTI="  # stands in for a private key's base64


def test_the_app_key_file_reaches_the_gateway_by_pipe_only(runner: Runner) -> None:
    key = runner.home / "github-app.pem"  # on the host, outside the state dir
    key.write_text(f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\n")
    key.chmod(0o600)
    if runner.user:
        shutil.chown(key, runner.user, runner.user)
    env = runner.env(GITHUB_APP_ID="42", GITHUB_APP_PRIVATE_KEY_FILE=str(key))
    result = runner.run("probe", "env", env=env)
    names = result.stdout.split()
    assert "GITHUB_APP_PRIVATE_KEY" in names and "GITHUB_APP_ID" in names
    assert "GITHUB_APP_PRIVATE_KEY_FILE" not in names  # the host path stays out
    assert KEY_BODY not in result.stdout + result.stderr
    proc = runner.popen("probe", "sleep", "60", env=env)
    try:
        wait_line(proc, "ready")
        run = run_dir_of(runner, proc)
        config = (run / "config.json").read_text()
        assert KEY_BODY not in config and str(key) not in config
        environ = Path(f"/proc/{container_pid(runner, run.name)}/environ").read_bytes()
        assert KEY_BODY.encode() not in environ and b"GITHUB_APP_PRIVATE_KEY" not in environ
        assert holding_secret(runner.cache, runner.state, secrets={"key": KEY_BODY}) == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_seccomp_table_is_what_the_config_gets(runner: Runner) -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from launcher.sandbox import seccomp

    proc = runner.popen("probe", "sleep", "60")
    try:
        wait_line(proc, "ready")
        config = json.loads((run_dir_of(runner, proc) / "config.json").read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    profile = config["linux"]["seccomp"]
    assert profile == seccomp.profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64"]  # CI's arch: no 32-bit, no x32
    rules = profile["syscalls"]
    unconditional = {n for r in rules if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r
                     for n in r["names"]}  # fmt: skip
    expected = (set(seccomp.MOBY_ALLOWED) - seccomp.DENIED) | {"arch_prctl", "modify_ldt"}
    assert unconditional == expected
    assert len(seccomp.MOBY_ALLOWED) == 349  # moby 00f3d189e4's unconditional list
    for name in (
        "ptrace",
        "io_uring_setup",
        "userfaultfd",
        "process_vm_readv",
        "keyctl",
        "name_to_handle_at",
        "add_key",
        "request_key",
        "bpf",
        "unshare",
        "setns",
    ):
        assert name not in unconditional, name  # fmt: skip
    conditional = {}
    for r in rules:
        if "args" in r:
            conditional.setdefault(r["names"][0], []).append(r["args"])
    assert sorted(a[0]["value"] for a in conditional["socket"]) == [1, 2, 10, 16]
    assert sorted(a[0]["value"] for a in conditional["personality"]) == [
        0, 8, 0x20000, 0x20008, 0xFFFFFFFF]  # fmt: skip
    [clone] = conditional["clone"]
    assert clone[0]["op"] == "SCMP_CMP_MASKED_EQ" and clone[0]["valueTwo"] == 0
    assert clone[0]["value"] == 0x7E020080  # every CLONE_NEW* flag, CLONE_NEWTIME included
    [clone3] = [r for r in rules if r["names"] == ["clone3"]]
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38


def test_other_abis_are_killed(runner: Runner) -> None:
    # outside the sandbox the same probe runs getpid through i386 (see test_gateway_check)
    result = runner.run("probe", "abi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["i386=killed:SIGSYS", "x32=killed:SIGSYS"]


def test_the_number_of_processes_is_capped(runner: Runner) -> None:
    # root: the cgroup pids limit; rootless: RLIMIT_NPROC, counted per user namespace
    result = runner.run("probe", "forks", "1500")
    assert result.returncode == 0, result.stderr
    assert 900 < int(result.stdout) < 1024


def test_memory_is_capped_rootless_per_process(rootless_runner: Runner) -> None:
    """Rootless runs get no cgroup: RLIMIT_DATA (2 GiB) refuses an allocation past it, in
    the gateway and in any process it starts (rlimits are inherited)."""
    assert rootless_runner.run("probe", "alloc", "64").stdout.strip() == "allocated"
    result = rootless_runner.run("probe", "alloc", "3072")
    assert (result.returncode, result.stdout.strip()) == (3, "refused"), result.stderr
    doctor = rootless_runner.run("doctor", "--json")
    [limits] = [i for i in json.loads(doctor.stdout)["items"] if i["name"] == "limits"]
    assert limits["ok"] and "RLIMIT_DATA 2048 MiB per process" in limits["detail"]


def test_memory_is_capped_as_root(root_runner: Runner) -> None:
    assert root_runner.run("probe", "alloc", "64").stdout.strip() == "allocated"
    result = root_runner.run("probe", "alloc", "3072")  # over the 2 GiB memory+swap limit
    assert result.returncode == 137, result.stdout + result.stderr
    doctor = root_runner.run("doctor", "--json")
    [limits] = [i for i in json.loads(doctor.stdout)["items"] if i["name"] == "limits"]
    assert limits["ok"] and "memory 2048 MiB (memory+swap of the whole sandbox)" in limits["detail"]
