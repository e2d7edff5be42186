"""The sandbox for real: runc as root and rootless (an unprivileged user this test
creates), signals, crash recovery, and the errors a user meets when the host cannot
run it. The network is in test_sandbox_network.py, the boundary (use lock, lifeline,
secrets, seccomp) in test_sandbox_boundary.py."""

# ruff: noqa: F811 - the shared fixtures are imported from sandboxrun, then named as parameters
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

from conftest import HOST_PYTHON, needs_root
from sandboxrun import (  # noqa: F401 - fixtures
    Runner,
    gone,
    root_runner,
    rootless_runner,
    rootless_user,
    runner,
    shared_dir,
)

pytestmark = needs_root


def test_check_passes(runner: Runner) -> None:
    result = runner.run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 21 items hold" in result.stdout
    if runner.user:
        assert "uid=0 gid=0 in a user namespace" in result.stdout
    else:
        assert "uid=10001 gid=10001" in result.stdout


def test_check_json_reports_every_item(root_runner: Runner) -> None:
    result = root_runner.run("check", "--json")
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {i["name"] for i in report["items"]} >= {"no-shell", "unshare", "capabilities"}


def test_exit_code_passes_through(runner: Runner) -> None:
    assert runner.run("probe", "exit", "7").returncode == 7
    assert runner.run("probe", "exit", "0").returncode == 0


def test_rootfs_and_etc_are_read_only(runner: Runner) -> None:
    for path in ("/usr/bin/evil", "/etc/passwd", "/evil"):
        result = runner.run("probe", "write", path)
        assert result.returncode == 1
        assert result.stdout.strip() == "EROFS", path
    ok = runner.run("probe", "write", "/var/lib/auto-review/note")
    assert ok.returncode == 0
    assert (runner.state / "note").read_text() == "probe\n"


def test_only_allowlisted_variables_reach_the_gateway(root_runner: Runner) -> None:
    env = root_runner.env(WEBHOOK_SECRET="s3cr3t-value", UNRELATED_SECRET="nope")
    result = root_runner.run("probe", "env", env=env)
    names = result.stdout.split()
    assert "WEBHOOK_SECRET" in names
    assert "UNRELATED_SECRET" not in names and "AUTO_REVIEW_CACHE_DIR" not in names
    assert "s3cr3t-value" not in result.stdout + result.stderr
    assert "AUTO_REVIEW_ISOLATION" in names


def wait_ready(proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return
        if not line and proc.poll() is not None:
            raise AssertionError(
                f"gateway exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
    raise AssertionError("gateway never said ready")


def test_sigterm_stops_the_gateway_within_5s(runner: Runner) -> None:
    proc = runner.popen("probe", "sleep", "60")
    wait_ready(proc)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 143
    assert time.monotonic() - started < 5
    assert "terminated" in proc.stdout.read()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def container_state(runner: Runner, launcher_pid: int) -> tuple[Path, dict]:
    """(runc state root, `runc state` of this launcher's container)."""
    state_root = runner.cache / "v1" / "run" / "runc"
    cid = f"auto-review-{launcher_pid}"
    out = subprocess.run(["runc", "--root", str(state_root), "state", cid],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return state_root, json.loads(out.stdout)


def test_sigkill_of_the_runtime_kills_the_container(root_runner: Runner) -> None:
    proc = root_runner.popen("probe", "sleep", "60")
    wait_ready(proc)
    _root, state = container_state(root_runner, proc.pid)
    [runc_pid] = children(proc.pid)
    os.kill(runc_pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == 137
    assert gone(state["pid"]), "the gateway outlived its runtime"
    assert list((root_runner.cache / "v1" / "run" / "runs").iterdir()) == []


def test_a_killed_launcher_takes_the_gateway_and_the_next_launch_cleans_up(
    root_runner: Runner,
) -> None:
    proc = root_runner.popen("probe", "sleep", "60")
    wait_ready(proc)
    state_root, state = container_state(root_runner, proc.pid)
    proc.kill()  # the launcher dies; the lifeline closes
    proc.wait()
    assert gone(state["pid"], timeout=2), "the gateway outlived its launcher by 2 s"
    result = root_runner.run("probe", "exit", "0")
    assert result.returncode == 0, result.stderr
    listed = subprocess.run(["runc", "--root", str(state_root), "list", "-q"],
                            capture_output=True, text=True)  # fmt: skip
    assert f"auto-review-{proc.pid}" not in listed.stdout.split()
    assert list((root_runner.cache / "v1" / "run" / "runs").iterdir()) == []


def test_runtime_missing(root_runner: Runner) -> None:
    result = root_runner.run("check", env=root_runner.env(PATH="/nonexistent"))
    assert result.returncode == 69
    assert "no OCI runtime" in result.stderr and "apt-get install runc" in result.stderr
    result = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_RUNTIME="/no/such/runc"))
    assert result.returncode == 69
    assert "is not an executable file" in result.stderr


def test_bad_runtime_name_is_a_config_error(root_runner: Runner) -> None:
    result = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_RUNTIME="docker"))
    assert result.returncode == 78
    assert "runc, crun, youki" in result.stderr


def test_user_namespaces_switched_off(rootless_runner: Runner, shared_dir: Path) -> None:
    # /proc/sys is read-only on this CI kind, so the sysctl is shown as 0 through a
    # bind mount in a private mount namespace: what the launcher reads is what a host
    # with `sysctl user.max_user_namespaces=0` shows.
    zero = shared_dir / "zero"
    zero.write_text("0\n")
    env = rootless_runner.env()
    inner = " ".join(
        [
            f"mount --bind {zero} /proc/sys/user/max_user_namespaces &&",
            f"exec runuser -u {rootless_runner.user} -- env -i",
            *(f"{k}={v}" for k, v in env.items()),
            HOST_PYTHON,
            str(rootless_runner.app),
            "check",
        ]
    )
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 71, result.stderr
    assert "user namespaces are disabled" in result.stderr
    assert "sysctl -w user.max_user_namespaces=1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_runtime_that_cannot_start_the_sandbox(root_runner: Runner, shared_dir: Path) -> None:
    # Stands in for runc on a host where it cannot create the user namespace: it
    # writes runc's JSON error line to its --log file and fails, as runc does.
    fake = shared_dir / "runc-no-userns"
    fake.write_text(
        "#!/usr/bin/python3\n"
        "import json, sys\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    print('runc version 1.1.5'); sys.exit(0)\n"
        "log = sys.argv[sys.argv.index('--log') + 1]\n"
        "msg = 'runc run failed: unable to start container process: "
        "error during container init: user namespaces: operation not permitted'\n"
        "open(log, 'a').write(json.dumps({'level': 'error', 'msg': msg}) + '\\n')\n"
        "sys.exit(1)\n"
    )
    fake.chmod(0o755)
    result = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_RUNTIME=str(fake)))
    assert result.returncode == 71
    assert "the sandbox could not start" in result.stderr
    assert "unprivileged user namespaces" in result.stderr


def test_bad_ca_file(root_runner: Runner, tmp_path: Path) -> None:
    missing = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_CA_FILE="/no/ca.pem"))
    assert missing.returncode == 78
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    result = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_CA_FILE=str(not_pem)))
    assert result.returncode == 78
    assert "no PEM certificate" in result.stderr


def test_bare_mode_runs_without_the_sandbox_and_says_so(root_runner: Runner) -> None:
    # force: this host may be no container (test_bare shows the refusal)
    result = root_runner.run("probe", "whoami", env=root_runner.env(AUTO_REVIEW_BARE="force"))
    assert result.returncode == 0
    assert result.stdout.strip() == "uid=0 gid=0"  # the host's root: no user switch
    assert "WITHOUT the sandbox" in result.stderr
    flag = root_runner.run("--bare", "probe", "env", env=root_runner.env(AUTO_REVIEW_BARE="force"))
    assert "AUTO_REVIEW_ISOLATION" in flag.stdout


def test_state_dir_is_private_and_owned_by_the_sandbox_user(root_runner: Runner) -> None:
    root_runner.run("probe", "exit", "0")
    st = root_runner.state.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == 10001


def test_doctor(root_runner: Runner) -> None:
    ok = root_runner.run("doctor")
    assert ok.returncode == 0, ok.stdout
    assert "runc" in ok.stdout and "ready" in ok.stdout
    bad = root_runner.run("doctor", env=root_runner.env(AUTO_REVIEW_RUNTIME="/no/such/runc"))
    assert bad.returncode == 69
    assert "FAIL runtime" in bad.stdout


def test_help_lists_both_kinds_of_command(root_runner: Runner) -> None:
    result = root_runner.run("--help")
    assert result.returncode == 0
    for word in ("check", "review", "serve", "cache", "bundle", "doctor"):
        assert word in result.stdout


def test_a_fixed_container_id_replaces_a_killed_run(root_runner: Runner) -> None:
    env = root_runner.env(AUTO_REVIEW_CONTAINER_ID="ar-service")
    proc = root_runner.popen("probe", "sleep", "60", env=env)
    wait_ready(proc)
    state_root = root_runner.cache / "v1" / "run" / "runc"
    out = subprocess.run(["runc", "--root", str(state_root), "state", "ar-service"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    state = json.loads(out.stdout)
    proc.kill()  # the service's launcher dies; its container lives on under the fixed name
    proc.wait()
    result = root_runner.run("probe", "exit", "0", env=env)
    assert result.returncode == 0, result.stderr
    assert gone(state["pid"]), "the old container under the fixed name was not deleted"


def test_a_bad_fixed_container_id_is_a_config_error(root_runner: Runner) -> None:
    result = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_CONTAINER_ID="../x"))
    assert result.returncode == 78
    assert "AUTO_REVIEW_CONTAINER_ID" in result.stderr


def test_the_gateway_learns_the_bundle_digest(root_runner: Runner, app: Path) -> None:
    result = root_runner.run("probe", "env")
    assert "AUTO_REVIEW_BUNDLE_DIGEST" in result.stdout.split()


def test_review_path_must_be_a_directory(root_runner: Runner, tmp_path: Path) -> None:
    afile = tmp_path / "not-a-dir"
    afile.write_text("x")
    for value in (str(afile), str(tmp_path / "missing")):
        result = root_runner.run("review", "--path", value, "--base", "main")
        assert result.returncode == 2, result.stderr
        assert "is not a directory" in result.stderr
