"""`doctor` is truthful: "ready" only after a real sandbox started and passed `check`;
a runtime that cannot start a container, a read-only cache, a noexec cache and a
run dir it would pass over each say why, with the fix; --json for scripts. Real
single file and runc as root; the read-only and noexec filesystems are real mounts
the tests make."""

# ruff: noqa: F811 - the shared fixtures are imported from sandboxrun, then named as parameters
from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, needs_root
from sandboxrun import Runner, root_runner, shared_dir  # noqa: F401 - fixtures

pytestmark = needs_root

FAKE_RUNC = """#!/usr/bin/python3
import json, sys
if sys.argv[1:] == ['--version']:
    print('runc version 1.1.5'); sys.exit(0)
if '--log' in sys.argv:
    log = sys.argv[sys.argv.index('--log') + 1]
    msg = 'runc run failed: unable to start container process: exec: permission denied'
    open(log, 'a').write(json.dumps({'level': 'error', 'msg': msg}) + '\\n')
sys.exit(1)
"""


def doctor_json(runner: Runner, **env: str) -> tuple[int, dict]:
    result = runner.run("doctor", "--json", env=runner.env(**env))
    return result.returncode, json.loads(result.stdout)


def item(report: dict, name: str) -> dict:
    [found] = [i for i in report["items"] if i["name"] == name]
    return found


def assert_every_fail_has_a_fix(report: dict) -> None:
    for entry in report["items"]:
        if not entry["ok"]:
            assert entry["fix"], entry


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def test_ready_means_a_container_started(root_runner: Runner) -> None:
    result = root_runner.run("doctor")
    assert result.returncode == 0, result.stdout
    assert "ok   start        started a runc container: all " in result.stdout
    assert result.stdout.rstrip().endswith("ready: a sandbox started here and passed check")
    code, report = doctor_json(root_runner)
    assert code == 0 and report["ok"] is True
    assert "runc 1." in item(report, "runtime")["detail"]


def test_a_runtime_that_cannot_start_a_container(root_runner: Runner, shared_dir: Path) -> None:
    fake = shared_dir / "runc-broken"
    fake.write_text(FAKE_RUNC)
    fake.chmod(0o755)
    code, report = doctor_json(root_runner, AUTO_REVIEW_RUNTIME=str(fake))
    assert code == 71 and report["ok"] is False
    assert item(report, "runtime")["ok"]  # it answers --version: only starting shows it
    start = item(report, "start")
    assert not start["ok"] and "exec: permission denied" in start["detail"]
    assert "noexec" in start["fix"]
    assert_every_fail_has_a_fix(report)
    text = root_runner.run("doctor", env=root_runner.env(AUTO_REVIEW_RUNTIME=str(fake))).stdout
    assert "ready" not in text and "FAIL start" in text


def test_a_read_only_cache(root_runner: Runner, mount_point: Path) -> None:
    cache = mount_point.parent / "ro-source"
    assert root_runner.run("cache", "prepare", env=root_runner.env(
        AUTO_REVIEW_CACHE_DIR=str(cache))).returncode == 0  # fmt: skip
    subprocess.run(["mount", "--bind", str(cache), str(mount_point)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(mount_point)], check=True)
    code, report = doctor_json(root_runner, AUTO_REVIEW_CACHE_DIR=str(mount_point))
    assert code == 73 and report["ok"] is False
    assert "Read-only file system" in item(report, "cache")["detail"]
    start = item(report, "start")
    assert not start["ok"] and "Read-only file system" in start["detail"]
    assert "AUTO_REVIEW_CACHE_DIR" in start["fix"]
    assert_every_fail_has_a_fix(report)
    assert root_runner.run("check", env=root_runner.env(
        AUTO_REVIEW_CACHE_DIR=str(mount_point))).returncode == 73  # fmt: skip


def test_a_noexec_cache(root_runner: Runner, mount_point: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,size=256m", "tmpfs", str(mount_point)],
                   check=True)  # fmt: skip
    cache = mount_point / "cache"
    code, report = doctor_json(root_runner, AUTO_REVIEW_CACHE_DIR=str(cache))
    assert code != 0 and report["ok"] is False
    assert not item(report, "cache-exec")["ok"]
    start = item(report, "start")
    assert not start["ok"] and "noexec" in start["detail"]
    assert "without noexec" in start["fix"]
    assert_every_fail_has_a_fix(report)
    check = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_CACHE_DIR=str(cache)))
    assert check.returncode == 71 and "Traceback" not in check.stderr  # launcher.cache.zstd
    assert "noexec" in check.stderr
    assert len(check.stderr.strip().splitlines()) == 1


def test_a_runtime_dir_that_is_not_private_is_named(root_runner: Runner, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o755)
    xdg.chmod(0o755)
    code, report = doctor_json(root_runner, XDG_RUNTIME_DIR=str(xdg))
    entry = item(report, "runtime-dir")
    assert not entry["ok"] and "0755" in entry["detail"] and "in the cache" in entry["detail"]
    assert entry["fix"] == f"chmod 0700 {xdg}"
    assert code == 0 and report["ok"] is True  # a warning: the cache takes the run state
    xdg.chmod(0o700)
    _code, report = doctor_json(root_runner, XDG_RUNTIME_DIR=str(xdg))
    assert item(report, "runtime-dir")["ok"]
    shutil.rmtree(xdg / "auto-review", ignore_errors=True)


def test_a_root_host_without_the_memory_controller_gets_rlimit_data(root_runner: Runner) -> None:
    """No memory cgroup controller (a tmpfs over /sys/fs/cgroup in a private mount
    namespace shows doctor exactly that): the bound in force is RLIMIT_DATA, per process,
    and doctor says so with the fix."""
    script = 'set -e; mount -t tmpfs tmpfs /sys/fs/cgroup; exec "$@"'
    env = [f"{k}={v}" for k, v in root_runner.env().items()]
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", "env", "-i",
         *env, HOST_PYTHON, str(root_runner.app), "doctor", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    limits = item(json.loads(result.stdout), "limits")
    assert not limits["ok"], limits
    assert "RLIMIT_DATA 2048 MiB per process only, no memory cgroup controller" in limits["detail"]
    assert "cgroup_enable=memory" in limits["fix"]


def test_the_start_check_runs_the_file_as_its_shebang_does(
    root_runner: Runner, tmp_path: Path
) -> None:
    """doctor's child `check` runs under the same flags as the file's first line
    (`python3 -I -S`): a .pth file of the interpreter's site-packages runs in neither."""
    venv = tmp_path / "venv"
    subprocess.run([HOST_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = venv.glob("lib/python3*/site-packages")
    ran = tmp_path / "ran"
    ran.mkdir()
    (site / "zz_hostile.pth").write_text(
        f"import os; open(os.path.join({str(ran)!r}, str(os.getpid())), 'w')\n"
    )
    python = venv / "bin" / "python3"
    result = subprocess.run(
        [str(python), "-I", "-S", str(root_runner.app), "doctor", "--json"],
        env=root_runner.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert item(json.loads(result.stdout), "start")["ok"], result.stdout
    assert list(ran.iterdir()) == []
    subprocess.run([str(python), "-c", "pass"], check=True)
    assert len(list(ran.iterdir())) == 1  # the .pth runs where site does: the check can fail
